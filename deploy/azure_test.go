package deploy

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/cpvrefresh/cpvrefresh/internal/config"
	"github.com/cpvrefresh/cpvrefresh/internal/queue"
	"github.com/cpvrefresh/cpvrefresh/internal/store"
	"github.com/cpvrefresh/cpvrefresh/internal/testenv"
)

// The Bicep compiler is not installable here (no registry this project uses
// ships it), so these tests read azure/main.bicep as text: its structure
// (balanced brackets, resource declarations with known API versions), and
// its agreement with the daemons' configuration, evaluated per auth mode.

const bicepFile = "azure/main.bicep"

func readBicep(t *testing.T) string {
	t.Helper()
	data, err := os.ReadFile(bicepFile)
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

// stripComments blanks // comments outside strings, keeping offsets.
func stripComments(src string) string {
	b := []byte(src)
	inString := false
	for i := 0; i < len(b); i++ {
		switch {
		case inString && b[i] == '\\':
			i++
		case b[i] == '\'':
			inString = !inString
		case !inString && b[i] == '/' && i+1 < len(b) && b[i+1] == '/':
			for ; i < len(b) && b[i] != '\n'; i++ {
				b[i] = ' '
			}
		}
	}
	return string(b)
}

// block returns the bracketed text that starts at the first occurrence of
// opener (which ends with '[', '{' or '('), brackets included.
func block(t *testing.T, src, opener string) string {
	t.Helper()
	start := strings.Index(src, opener)
	if start < 0 {
		t.Fatalf("main.bicep: %q not found", opener)
	}
	open := start + len(opener) - 1
	depth, inString := 0, false
	for i := open; i < len(src); i++ {
		c := src[i]
		switch {
		case inString && c == '\\':
			i++
		case c == '\'':
			inString = !inString
		case inString:
		case c == '[' || c == '{' || c == '(':
			depth++
		case c == ']' || c == '}' || c == ')':
			depth--
			if depth == 0 {
				return src[open : i+1]
			}
		}
	}
	t.Fatalf("main.bicep: %q is not closed", opener)
	return ""
}

var keyedArray = regexp.MustCompile(`(?m)^  '?([\w-]+)'?: \[`)

// keyed splits an object of arrays ("{ secret: [...] certificate: [...] }")
// by key.
func keyed(t *testing.T, obj string) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, m := range keyedArray.FindAllStringSubmatchIndex(obj, -1) {
		key := obj[m[2]:m[3]]
		out[key] = block(t, obj[m[0]:], obj[m[0]:m[1]])
	}
	return out
}

type bicepEnv struct {
	name, kind, expr string // kind is value or secretRef
}

var envEntry = regexp.MustCompile(`name: '([A-Za-z0-9_]+)'\s+(value|secretRef): ([^\n]+)`)

func envEntries(text string) []bicepEnv {
	var out []bicepEnv
	for _, m := range envEntry.FindAllStringSubmatch(text, -1) {
		out = append(out, bicepEnv{m[1], m[2], strings.TrimSpace(m[3])})
	}
	return out
}

var (
	paramDecl = regexp.MustCompile(`(?m)^param (\w+) (\w+)(?: = (.+))?$`)
	varDecl   = regexp.MustCompile(`(?m)^var (\w+) = (.+)$`)
	quoted    = regexp.MustCompile(`^'([^']*)'$`)
	// interpolation is a ${name} in a Bicep string.
	interpolation = regexp.MustCompile(`\$\{\w+\}`)
	nameOnly      = regexp.MustCompile(`name: '([^']+)'`)
)

type bicepParam struct {
	typ, def string
	hasDef   bool
}

func bicepParams(src string) map[string]bicepParam {
	out := map[string]bicepParam{}
	for _, m := range paramDecl.FindAllStringSubmatch(src, -1) {
		out[m[1]] = bicepParam{typ: m[2], def: strings.TrimSpace(m[3]), hasDef: m[3] != ""}
	}
	return out
}

func bicepVars(src string) map[string]string {
	out := map[string]string{}
	for _, m := range varDecl.FindAllStringSubmatch(src, -1) {
		out[m[1]] = strings.TrimSpace(m[2])
	}
	return out
}

// parametersFile is the deployment parameters example, decoded strictly.
type parametersFile struct {
	Schema         string                         `json:"$schema"`
	ContentVersion string                         `json:"contentVersion"`
	Parameters     map[string]struct{ Value any } `json:"parameters"`
}

func readParameters(t *testing.T) parametersFile {
	t.Helper()
	data, err := os.ReadFile("azure/main.parameters.json")
	if err != nil {
		t.Fatal(err)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var p parametersFile
	if err := dec.Decode(&p); err != nil {
		t.Fatalf("main.parameters.json: %v", err)
	}
	return p
}

// TestBicepStructure checks what a compiler would catch first: balanced
// brackets and strings, resource declarations with API versions that exist
// (each checked against Azure's published resource types), and a parameters
// example that names only declared parameters and every required one.
func TestBicepStructure(t *testing.T) {
	t.Parallel()
	src := readBicep(t)
	code := stripComments(src)
	depth := map[byte]int{}
	inString := false
	for i := 0; i < len(code); i++ {
		c := code[i]
		switch {
		case inString && c == '\\':
			i++
		case c == '\'':
			inString = !inString
		case inString:
		case strings.IndexByte("[{(", c) >= 0:
			depth[c]++
		case c == ']':
			depth['[']--
		case c == '}':
			depth['{']--
		case c == ')':
			depth['(']--
		}
		for k, v := range depth {
			if v < 0 {
				t.Fatalf("main.bicep: unbalanced %q near byte %d", k, i)
			}
		}
	}
	if inString {
		t.Error("main.bicep: unterminated string")
	}
	for k, v := range depth {
		if v != 0 {
			t.Errorf("main.bicep: %d unclosed %q", v, k)
		}
	}

	apiVersions := map[string]string{
		"Microsoft.OperationalInsights/workspaces":               "2023-09-01",
		"Microsoft.Storage/storageAccounts":                      "2023-05-01",
		"Microsoft.Storage/storageAccounts/queueServices":        "2023-05-01",
		"Microsoft.Storage/storageAccounts/queueServices/queues": "2023-05-01",
		"Microsoft.Storage/storageAccounts/tableServices":        "2023-05-01",
		"Microsoft.Storage/storageAccounts/tableServices/tables": "2023-05-01",
		"Microsoft.KeyVault/vaults":                              "2023-07-01",
		"Microsoft.ManagedIdentity/userAssignedIdentities":       "2023-01-31",
		"Microsoft.Authorization/roleAssignments":                "2022-04-01",
		"Microsoft.ContainerRegistry/registries":                 "2023-07-01",
		"Microsoft.App/managedEnvironments":                      "2025-01-01",
		"Microsoft.App/containerApps":                            "2025-01-01",
	}
	resourceDecl := regexp.MustCompile(`(?m)^resource (\w+) '([\w./]+)@([\w-]+)'( existing)? = (if \(.+\) )?[{\[]`)
	decls := resourceDecl.FindAllStringSubmatch(code, -1)
	if n := strings.Count(code, "\nresource "); n != len(decls) {
		t.Errorf("%d resource declarations, %d of them well-formed", n, len(decls))
	}
	symbols := map[string]bool{}
	for _, m := range decls {
		if symbols[m[1]] {
			t.Errorf("resource symbol %s declared twice", m[1])
		}
		symbols[m[1]] = true
		if want, ok := apiVersions[m[2]]; !ok || m[3] != want {
			t.Errorf("resource %s: %s@%s, want one of the checked API versions (%s@%s)", m[1], m[2], m[3], m[2], want)
		}
	}
	// A symbol named like a function hides it (environment() is used).
	for _, fn := range []string{"environment", "resourceGroup", "subscription", "tenant"} {
		if symbols[fn] {
			t.Errorf("resource symbol %s hides the %s() function", fn, fn)
		}
	}

	params := bicepParams(code)
	p := readParameters(t)
	if p.ContentVersion == "" || !strings.Contains(p.Schema, "deploymentParameters.json") {
		t.Errorf("main.parameters.json: not a deployment parameters file (schema %q)", p.Schema)
	}
	for name := range p.Parameters {
		if _, ok := params[name]; !ok {
			t.Errorf("main.parameters.json sets %s, which main.bicep does not declare", name)
		}
	}
	for name, prm := range params {
		if _, ok := p.Parameters[name]; !prm.hasDef && !ok {
			t.Errorf("main.parameters.json lacks the required parameter %s", name)
		}
	}
}

// TestBicepAgreesWithTheCode evaluates each container app's environment for
// every auth mode and API authentication and checks it like the Kubernetes
// manifests: known variables, secrets from Key Vault references that exist,
// the daemons' validation passes, probes and ingress on the listeners, the
// grace period, and a scale rule on the queue the workers read.
func TestBicepAgreesWithTheCode(t *testing.T) {
	t.Parallel()
	code := stripComments(readBicep(t))
	params := bicepParams(code)
	vars := bicepVars(code)
	example := readParameters(t).Parameters

	credEnv := keyed(t, block(t, code, "var credentialEnvByMode = {"))
	credSecrets := keyed(t, block(t, code, "var credentialSecretsByMode = {"))
	apiEnv := keyed(t, block(t, code, "var apiAuthEnvByKind = {"))
	apiSecrets := keyed(t, block(t, code, "var apiAuthSecretsByKind = {"))
	common := envEntries(block(t, code, "var commonEnv = ["))
	appEnv := map[string][]bicepEnv{
		"worker":     envEntries(block(t, code, "var workerEnv = [")),
		"dispatcher": envEntries(block(t, code, "var dispatcherEnv = [")),
	}
	var args []string
	for _, m := range regexp.MustCompile(`'([^']*)'`).FindAllStringSubmatch(block(t, code, "var daemonArgs = ["), -1) {
		args = append(args, m[1])
	}
	modes := regexp.MustCompile(`'([\w-]+)'`).FindAllStringSubmatch(block(t, code, "@allowed(["), -1)
	if len(modes) != 3 {
		t.Fatalf("authMode allows %d modes, want secret, certificate and refresh-token", len(modes))
	}

	// eval gives an expression the value it has at deployment; references
	// to resources get a plausible sample for the variable they fill.
	var eval func(envName, expr string, over map[string]string) string
	eval = func(envName, expr string, over map[string]string) string {
		t.Helper()
		if m := quoted.FindStringSubmatch(expr); m != nil {
			return m[1]
		}
		if inner, ok := strings.CutPrefix(expr, "string("); ok {
			expr = strings.TrimSuffix(inner, ")")
		}
		if v, ok := over[expr]; ok {
			return v
		}
		if prm, ok := params[expr]; ok {
			if m := quoted.FindStringSubmatch(prm.def); m != nil {
				return m[1]
			}
			if _, err := strconv.Atoi(prm.def); err == nil {
				return prm.def
			}
			if v, ok := example[expr]; ok {
				return strings.Trim(jsonString(t, v.Value), `"`)
			}
		}
		if v, ok := vars[expr]; ok {
			if m := quoted.FindStringSubmatch(v); m != nil {
				// Interpolations (${queueName}) take their value too.
				return interpolation.ReplaceAllStringFunc(m[1], func(ref string) string {
					return eval("", strings.TrimSuffix(strings.TrimPrefix(ref, "${"), "}"), over)
				})
			}
		}
		// Bicep's integer division, as in 45 / workerMaxReplicas.
		if num, den, ok := strings.Cut(expr, " / "); ok {
			a, err1 := strconv.Atoi(num)
			b, err2 := strconv.Atoi(eval(envName, den, over))
			if err1 == nil && err2 == nil && b > 0 {
				return strconv.Itoa(a / b)
			}
		}
		samples := map[string]string{
			"CPV_QUEUE_SERVICE_URL": "https://cpvexample.queue.core.windows.net/",
			"CPV_TABLE_SERVICE_URL": "https://cpvexample.table.core.windows.net/",
			"CPV_PARTNER_TENANT_ID": "11111111-2222-4333-8444-555555555555",
			"CPV_AUTHORITY_HOST":    "https://login.microsoftonline.com/",
			"CPV_KEY_VAULT_URL":     "https://cpvexample-kv.vault.azure.net/",
			"AZURE_CLIENT_ID":       "aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee",
		}
		if v, ok := samples[envName]; ok {
			return v
		}
		t.Errorf("%s = %s: no value known for this expression; add a sample", envName, expr)
		return ""
	}

	for _, m := range modes {
		mode := m[1]
		for _, kind := range []string{"keys", "entra"} {
			for name, d := range daemons {
				if name == "worker" && kind == "entra" {
					continue // the worker has no API
				}
				t.Run(name+"/"+mode+"/"+kind, func(t *testing.T) {
					over := map[string]string{"authMode": mode, "authIssuer": "", "authAudience": ""}
					if kind == "entra" {
						over["authIssuer"] = "https://login.microsoftonline.com/11111111-2222-4333-8444-555555555555/v2.0"
						over["authAudience"] = "api://cpvrefresh"
					}
					entries := slices.Concat(common, envEntries(credEnv[mode]), appEnv[name])
					secretNames := nameOnly.FindAllStringSubmatch(credSecrets[mode], -1)
					if name == "dispatcher" {
						entries = slices.Concat(entries, envEntries(apiEnv[kind]))
						secretNames = append(secretNames, nameOnly.FindAllStringSubmatch(apiSecrets[kind], -1)...)
					}
					secrets := map[string]bool{}
					for _, s := range secretNames {
						secrets[s[1]] = true
					}
					fields := referenceOf(d.newConfig())
					env := map[string]string{}
					for _, e := range entries {
						if _, dup := env[e.name]; dup {
							t.Errorf("%s is set twice", e.name)
						}
						f, known := fields[e.name]
						switch {
						case e.name == "AZURE_CLIENT_ID":
						case !known:
							t.Errorf("%s is not a setting of the %s (typo?)", e.name, name)
						case f.Secret && e.kind != "secretRef":
							t.Errorf("secret %s must come from a Key Vault reference (secretRef)", e.name)
						}
						if e.kind == "secretRef" {
							ref := strings.Trim(e.expr, "'")
							if !secrets[ref] {
								t.Errorf("%s: secretRef %q is not among the app's secrets %v", e.name, ref, secrets)
							}
							env[e.name] = secretPlaceholder
							continue
						}
						env[e.name] = eval(e.name, e.expr, over)
					}
					cfg := d.newConfig()
					if err := config.Load(cfg, args, func(k string) string { return env[k] }, name); err != nil {
						t.Fatalf("config.Load refuses the app's settings: %v", err)
					}
					if err := cfg.(validator).Validate(); err != nil {
						t.Errorf("the daemon would refuse to start:\n%v", err)
					}
					var c *config.Common
					switch v := cfg.(type) {
					case *config.Worker:
						c = &v.Common
					case *config.Dispatcher:
						c = &v.Common
					}
					if c.StorageConnectionString != "" {
						t.Error("the storage connection string (default: Azurite) is not cleared; the managed identity would not be used")
					}
					// The credential comes from the Key Vault, read by the daemon.
					if c.KeyVaultURL == "" {
						t.Error("CPV_KEY_VAULT_URL is not set: the daemon would not read its credential from the Key Vault")
					}
				})
			}
		}
	}

	// Probes, ingress and the grace period, per app.
	for name, d := range daemons {
		app := block(t, code, "resource "+name+" 'Microsoft.App/containerApps@2025-01-01' = if (deployApps) {")
		port := listenPort(t, defaultOf(t, d.newConfig(), d.listenEnv))
		for _, p := range []struct{ kind, path string }{{"Liveness", "/healthz"}, {"Readiness", "/readyz"}} {
			m := regexp.MustCompile(`type: '` + p.kind + `'\s+httpGet: \{\s+path: '([^']+)'\s+port: (\w+)`).FindStringSubmatch(app)
			if m == nil {
				t.Errorf("%s: no %s probe", name, p.kind)
				continue
			}
			if m[1] != p.path {
				t.Errorf("%s: %s probe path %q, want %q", name, p.kind, m[1], p.path)
			}
			if got := vars[m[2]]; got != strconv.Itoa(int(port)) {
				t.Errorf("%s: %s probe port %s = %s, want %d", name, p.kind, m[2], got, port)
			}
		}
		if !strings.Contains(app, "command: [\n            '"+d.binary+"'") {
			t.Errorf("%s: command is not %s", name, d.binary)
		}
		if !strings.Contains(app, "args: daemonArgs") {
			t.Errorf("%s: does not pass daemonArgs", name)
		}
		if !strings.Contains(app, "terminationGracePeriodSeconds: terminationGracePeriodSeconds") {
			t.Errorf("%s: no terminationGracePeriodSeconds", name)
		}
		if name == "dispatcher" {
			ingress := block(t, app, "ingress: {")
			for _, want := range []string{"external: true", "targetPort: dispatcherPort", "allowInsecure: false"} {
				if !strings.Contains(ingress, want) {
					t.Errorf("dispatcher ingress lacks %q", want)
				}
			}
			if vars["dispatcherPort"] != strconv.Itoa(int(port)) {
				t.Errorf("dispatcherPort %s, want %d", vars["dispatcherPort"], port)
			}
			if !strings.Contains(block(t, app, "scale: {"), "minReplicas: 1") {
				t.Error("dispatcher: want minReplicas 1 (the schedule and webhooks need a running replica)")
			}
		}
	}
	grace, err := time.ParseDuration(strings.Trim(vars["shutdownGrace"], "'"))
	if err != nil {
		t.Fatalf("shutdownGrace: %v", err)
	}
	kill, err := strconv.Atoi(vars["terminationGracePeriodSeconds"])
	if err != nil {
		t.Fatalf("terminationGracePeriodSeconds: %v", err)
	}
	if time.Duration(kill)*time.Second <= grace {
		t.Errorf("terminationGracePeriodSeconds %d must exceed CPV_SHUTDOWN_GRACE %s", kill, grace)
	}
	if !slices.Contains(appEnv["worker"], bicepEnv{"CPV_SHUTDOWN_GRACE", "value", "shutdownGrace"}) {
		t.Error("the worker's CPV_SHUTDOWN_GRACE is not the shutdownGrace the termination grace period is checked against")
	}

	// The worker scales from zero on the queue it reads, per CPV_CONCURRENCY.
	worker := block(t, code, "resource worker 'Microsoft.App/containerApps@2025-01-01' = if (deployApps) {")
	scale := block(t, worker, "scale: {")
	rule := block(t, scale, "azureQueue: {")
	for _, want := range []string{"minReplicas: 0", "maxReplicas: workerMaxReplicas"} {
		if !strings.Contains(scale, want) {
			t.Errorf("worker scale lacks %q", want)
		}
	}
	for _, want := range []string{"accountName: storage.name", "queueName: queueName", "queueLength: workerConcurrency", "identity: identity.id"} {
		if !strings.Contains(rule, want) {
			t.Errorf("worker scale rule lacks %q", want)
		}
	}
	if strings.Contains(rule, "auth:") {
		t.Error("the scale rule must authenticate with the managed identity, not a secret")
	}
	if !slices.Contains(common, bicepEnv{"CPV_QUEUE", "value", "queueName"}) {
		t.Error("CPV_QUEUE is not the queueName the scale rule watches")
	}
	// And on the interactive queue, so a manual refresh wakes a worker.
	at := strings.Index(scale, "name: 'interactive-queue'")
	if at < 0 {
		t.Fatal("worker scale has no rule named interactive-queue")
	}
	hi := block(t, scale[at:], "azureQueue: {")
	for _, want := range []string{"accountName: storage.name", "queueName: interactiveQueueName", "queueLength: workerConcurrency", "identity: identity.id"} {
		if !strings.Contains(hi, want) {
			t.Errorf("worker interactive scale rule lacks %q", want)
		}
	}
	if !slices.Contains(common, bicepEnv{"CPV_INTERACTIVE_QUEUE", "value", "interactiveQueueName"}) {
		t.Error("CPV_INTERACTIVE_QUEUE is not the interactiveQueueName the scale rule watches")
	}
	if !slices.Contains(appEnv["worker"], bicepEnv{"CPV_CONCURRENCY", "value", "string(workerConcurrency)"}) {
		t.Error("CPV_CONCURRENCY is not the workerConcurrency the scale rule divides by")
	}
	if !slices.Contains(appEnv["worker"], bicepEnv{"CPV_PARTNER_CENTER_RATE", "value", "string(45 / workerMaxReplicas)"}) {
		t.Error("CPV_PARTNER_CENTER_RATE is not 45 / workerMaxReplicas: the replicas together could exceed Partner Center's 50 requests/s")
	}
	for _, src := range []map[string]string{
		{"workerConcurrency": params["workerConcurrency"].def, "workerMaxReplicas": params["workerMaxReplicas"].def},
		{"workerConcurrency": jsonString(t, example["workerConcurrency"].Value), "workerMaxReplicas": jsonString(t, example["workerMaxReplicas"].Value)},
	} {
		c, err1 := strconv.Atoi(src["workerConcurrency"])
		r, err2 := strconv.Atoi(src["workerMaxReplicas"])
		if err1 != nil || err2 != nil {
			t.Fatalf("concurrency/replicas not numbers: %v", src)
		}
		if c*r > maxInFlight {
			t.Errorf("workerMaxReplicas %d x workerConcurrency %d = %d refreshes in flight, over Partner Center's %d/s", r, c, c*r, maxInFlight)
		}
	}
}

func jsonString(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestBicepRoles checks the managed identity's data-plane roles: the real
// built-in role definition ids, each assigned to the identity on the right
// resource.
func TestBicepRoles(t *testing.T) {
	t.Parallel()
	code := stripComments(readBicep(t))
	roles := block(t, code, "var roles = {")
	for _, r := range []struct{ key, id, scope string }{
		{"storageQueueDataContributor", "974c5e8b-45b9-4653-ba55-5f855dd0fb88", "storage"},
		{"storageTableDataContributor", "0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3", "storage"},
		{"keyVaultSecretsOfficer", "b86a8fe4-44ce-4948-aee5-eccb2c155cd7", "vault"},
		{"acrPull", "7f951dda-4ed3-4680-a7ca-43fe172d538d", "registry"},
	} {
		if !strings.Contains(roles, r.key+": '"+r.id+"'") {
			t.Errorf("roles.%s is not the built-in role %s", r.key, r.id)
		}
		found := false
		for _, m := range regexp.MustCompile(`(?m)^resource \w+ 'Microsoft.Authorization/roleAssignments@2022-04-01' = (?:if \(.+\) )?\{`).FindAllStringIndex(code, -1) {
			ra := block(t, code[m[0]:], code[m[0]:m[1]])
			if strings.Contains(ra, "roles."+r.key+")") && strings.Contains(ra, "principalId: identity.properties.principalId") &&
				strings.Contains(ra, "scope: "+r.scope+"\n") {
				found = true
			}
		}
		if !found {
			t.Errorf("no role assignment gives the identity %s on %s", r.key, r.scope)
		}
	}
}

// TestBicepCreatesTheStoresTables compares the tables main.bicep creates
// with the ones internal/store opens, on Azurite.
func TestBicepCreatesTheStoresTables(t *testing.T) {
	t.Parallel()
	code := stripComments(readBicep(t))
	var bases []string
	for _, m := range regexp.MustCompile(`'(\w+)'`).FindAllStringSubmatch(block(t, code, "var tableBaseNames = ["), -1) {
		bases = append(bases, m[1])
	}
	if !strings.Contains(code, "name: '${tablePrefix}${base}'") {
		t.Error("the tables are not named <tablePrefix><base>")
	}
	if !strings.Contains(code, "var interactiveQueueName = '${queueName}"+queue.InteractiveSuffix+"'") {
		t.Errorf("the interactive queue is not named <queueName>%s", queue.InteractiveSuffix)
	}
	for _, q := range []string{"name: queueName", "name: '${queueName}-poison'", "name: interactiveQueueName", "name: '${interactiveQueueName}-poison'"} {
		if !strings.Contains(code, q) {
			t.Errorf("main.bicep does not create the queue %q", q)
		}
	}

	az := testenv.Azurite(t)
	prefix := "t" + testenv.Name("bicep")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	s, err := store.New(ctx, store.Config{ConnectionString: az.ConnectionString, TablePrefix: prefix})
	if err != nil {
		t.Fatal(err)
	}
	var opened []string
	for _, name := range s.Tables() {
		opened = append(opened, strings.TrimPrefix(name, prefix))
	}
	slices.Sort(opened)
	slices.Sort(bases)
	if diff := cmp.Diff(opened, bases); diff != "" {
		t.Errorf("tables (-store opens +main.bicep creates):\n%s", diff)
	}
}
