package deploy

import (
	"strings"

	"github.com/cpvrefresh/cpvrefresh/internal/config"
)

// ConfigurationReference renders docs/configuration.md: every setting of
// both daemons, its flag, type, default and meaning, taken from the config
// structs' tags by config.Markdown.
func ConfigurationReference() string {
	var b strings.Builder
	b.WriteString(referenceIntro)
	b.WriteString("\n## Both daemons\n\n")
	b.WriteString(config.Markdown(&config.Common{}))
	b.WriteString("\n## Worker only\n\nRead by `worker` (the daemon and its subcommands).\n\n")
	b.WriteString(withoutCommon(config.Markdown(&config.Worker{})))
	b.WriteString("\n## Dispatcher only\n\nRead by `dispatcher`.\n\n")
	b.WriteString(withoutCommon(config.Markdown(&config.Dispatcher{})))
	return b.String()
}

// withoutCommon drops the rows of the settings both daemons share from a
// config.Markdown table; the header rows stay.
func withoutCommon(table string) string {
	common := map[string]bool{}
	for _, f := range config.Reference(&config.Common{}) {
		common["| `"+f.Env+"` |"] = true
	}
	var b strings.Builder
	for _, line := range strings.SplitAfter(table, "\n") {
		if k := strings.Index(line, "` |"); k > 0 && common[line[:k+3]] {
			continue
		}
		b.WriteString(line)
	}
	return b.String()
}

const referenceIntro = `<!-- Generated from internal/config by "go generate ./deploy"; do not edit by hand. -->
# Configuration reference

Both daemons read their settings from environment variables, or from
command-line flags of the same names: ` + "`CPV_QUEUE`" + ` is ` + "`-queue`" + `,
` + "`CPV_SHUTDOWN_GRACE`" + ` is ` + "`-shutdown-grace`" + `. A flag wins over the
environment, which wins over the default.

- **An empty variable counts as unset**: the default applies. To clear a
  setting that has a default, pass its flag with an empty value. The one that
  matters in production is the storage connection string, whose default is
  the local Azurite: to authenticate to Azure Storage with a managed or
  workload identity, set ` + "`CPV_QUEUE_SERVICE_URL`" + ` and ` + "`CPV_TABLE_SERVICE_URL`" + `
  and start the daemon with ` + "`-storage-connection-string=`" + ` (the Kubernetes
  manifests and the Container Apps template in ` + "`deploy/`" + ` do).
- Every bad value is reported at start, one line per setting, and the daemon
  exits with status 2 without doing anything.
- Settings marked secret are never logged: the start-up line shows them as
  ` + "`set`" + ` or ` + "`unset`" + `. Give them through a secret store (a Kubernetes
  Secret, Key Vault references in Container Apps), not in a ConfigMap.
- The defaults point at the local stack (Azurite and the Microsoft 365
  simulator), so a developer needs no configuration. In production set at
  least the partner tenant, the app's client id and credential, the storage
  endpoints and the three Microsoft endpoints (` + "`CPV_AUTHORITY_HOST`" + `,
  ` + "`CPV_GRAPH_URL`" + `, ` + "`CPV_PARTNER_CENTER_URL`" + `); see
  [operations.md](operations.md).
- Durations are Go durations (` + "`90s`" + `, ` + "`5m`" + `, ` + "`1h30m`" + `); lists are
  comma-separated.

Besides these, the daemons honour the Azure SDK's own variables where they
authenticate to Azure Storage or Service Bus with an identity (for example
` + "`AZURE_CLIENT_ID`" + ` to pick a user-assigned managed identity, and the
variables the Azure Workload Identity webhook injects), and Go's
` + "`SSL_CERT_FILE`" + ` (used to trust the simulator's certificate authority).
`
