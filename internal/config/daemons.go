package config

import (
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"path"
	"strings"
	"time"

	"github.com/cpvrefresh/cpvrefresh/internal/cpvtype"
	"github.com/cpvrefresh/cpvrefresh/internal/entra"
	"github.com/cpvrefresh/cpvrefresh/internal/queue"
)

// Common holds the settings both daemons share: storage, queue transport,
// Microsoft endpoints and the partner app's credentials. The defaults point
// at the local stack (Azurite and the Microsoft 365 simulator).
type Common struct {
	StorageConnectionString string `env:"CPV_STORAGE_CONNECTION_STRING" default:"DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==;QueueEndpoint=http://127.0.0.1:10001/devstoreaccount1;TableEndpoint=http://127.0.0.1:10002/devstoreaccount1;" secret:"true" help:"Azure Storage connection string for queues and tables; leave empty and set the two service URLs to use a managed identity"`
	QueueServiceURL         string `env:"CPV_QUEUE_SERVICE_URL" help:"queue service URL (https://<account>.queue.core.windows.net) when authenticating with a managed identity"`
	TableServiceURL         string `env:"CPV_TABLE_SERVICE_URL" help:"table service URL (https://<account>.table.core.windows.net) when authenticating with a managed identity"`
	Transport               string `env:"CPV_TRANSPORT" default:"storagequeue" help:"queue transport: storagequeue or servicebus"`
	ServiceBusConnection    string `env:"CPV_SERVICEBUS_CONNECTION_STRING" secret:"true" help:"Service Bus connection string (transport servicebus)"`
	ServiceBusNamespace     string `env:"CPV_SERVICEBUS_NAMESPACE" help:"Service Bus fully qualified namespace (<name>.servicebus.windows.net) when authenticating with a managed identity"`
	Queue                   string `env:"CPV_QUEUE" default:"cpv-refresh" help:"work queue name; the poison queue is <name>-poison (Storage Queue) or the dead-letter queue (Service Bus)"`
	InteractiveQueue        string `env:"CPV_INTERACTIVE_QUEUE" help:"queue of refreshes of one tenant (manual, event, onboarding), which workers serve before the runs in CPV_QUEUE; empty: <CPV_QUEUE>-interactive; none: one queue for all"`
	TablePrefix             string `env:"CPV_TABLE_PREFIX" default:"cpv" help:"prefix of the result tables (<prefix>tenants, <prefix>status, ...)"`

	AuthMode        string `env:"CPV_AUTH_MODE" default:"secret" help:"how the partner app authenticates: secret, certificate, workload (Azure workload identity) or refresh-token (delegated GDAP, CIPP style)"`
	PartnerTenantID string `env:"CPV_PARTNER_TENANT_ID" help:"the partner's own Entra tenant id"`
	ClientID        string `env:"CPV_CLIENT_ID" help:"application (client) id of the partner's multi-tenant SAM app"`
	ClientSecret    string `env:"CPV_CLIENT_SECRET" secret:"true" help:"client secret of the SAM app (modes secret and refresh-token)"`
	CertificatePath string `env:"CPV_CERTIFICATE_PATH" help:"PEM or PFX file with the SAM app's certificate and key (mode certificate)"`
	CertificatePass string `env:"CPV_CERTIFICATE_PASSWORD" secret:"true" help:"password of the PFX file, if any"`
	TokenFile       string `env:"CPV_FEDERATED_TOKEN_FILE" fallback:"AZURE_FEDERATED_TOKEN_FILE" help:"federated token file (mode workload; AZURE_FEDERATED_TOKEN_FILE is used when empty)"`
	RefreshToken    string `env:"CPV_REFRESH_TOKEN" secret:"true" help:"the partner admin's GDAP refresh token (mode refresh-token)"`

	KeyVaultURL             string        `env:"CPV_KEY_VAULT_URL" help:"Key Vault holding the SAM app's credential (modes secret, certificate, refresh-token): read at start, reread every CPV_KEY_VAULT_POLL and when Entra refuses it; the credential variables are then not used"`
	KeyVaultClientID        string        `env:"CPV_KEY_VAULT_CLIENT_ID" help:"client id of the identity that reads the Key Vault (a user-assigned managed or workload identity; empty: the environment's default identity)"`
	KeyVaultClientSecret    string        `env:"CPV_KEY_VAULT_CLIENT_SECRET" secret:"true" help:"client secret of that identity, for a service principal outside Azure (and the local stack); empty: managed or workload identity"`
	KeyVaultVerifyChallenge bool          `env:"CPV_KEY_VAULT_VERIFY_CHALLENGE" default:"true" help:"require Key Vault's authentication challenge to name the vault's own domain (false only for the local simulator)"`
	KeyVaultPoll            time.Duration `env:"CPV_KEY_VAULT_POLL" default:"5m" help:"how often the Key Vault is read for a new version of the credential"`
	SecretNameAppID         string        `env:"CPV_SECRET_NAME_APPLICATION_ID" default:"ApplicationID" help:"Key Vault secret holding the app's client id (read when CPV_CLIENT_ID is empty)"`
	SecretNameAppSecret     string        `env:"CPV_SECRET_NAME_APPLICATION_SECRET" default:"ApplicationSecret" help:"Key Vault secret holding the app's client secret"`
	SecretNameRefreshToken  string        `env:"CPV_SECRET_NAME_REFRESH_TOKEN" default:"RefreshToken" help:"Key Vault secret holding the GDAP refresh token (every rotated one is written back)"`
	SecretNameCertificate   string        `env:"CPV_SECRET_NAME_CERTIFICATE" default:"SAMCertificate" help:"Key Vault secret holding the app's certificate and key (PEM, or a base64 PFX as a Key Vault certificate keeps it)"`
	SecretNameRotation      string        `env:"CPV_SECRET_NAME_ROTATION" default:"CPVRotation" help:"Key Vault secret the rotation keeps its last report in (no secret value)"`

	AuthorityHost    string        `env:"CPV_AUTHORITY_HOST" default:"https://127.0.0.1:8443/" help:"Entra ID authority host; https://login.microsoftonline.com/ in production"`
	GraphURL         string        `env:"CPV_GRAPH_URL" default:"https://127.0.0.1:8443/v1.0" help:"Microsoft Graph base URL; https://graph.microsoft.com/v1.0 in production"`
	PartnerCenterURL string        `env:"CPV_PARTNER_CENTER_URL" default:"https://127.0.0.1:8443" help:"Partner Center API base URL; https://api.partnercenter.microsoft.com in production"`
	ManifestFile     string        `env:"CPV_MANIFEST_FILE" help:"JSON permission manifest overriding the embedded default"`
	FollowApp        bool          `env:"CPV_FOLLOW_APP" default:"false" help:"add the permissions the partner's app registration declares (requiredResourceAccess) to the base manifest"`
	ManifestReload   time.Duration `env:"CPV_MANIFEST_RELOAD" default:"30s" help:"how often workers read the effective manifest (base, app registration, extra permissions), the profiles and the tenants' assignments again (0: never); the dispatcher delays the refresh a profile assignment enqueues by as long (and a few seconds), so that it runs with the profile"`

	LogFormat string `env:"CPV_LOG_FORMAT" default:"auto" help:"log format: auto (colour text on a terminal, JSON otherwise), text or json"`
	LogLevel  string `env:"CPV_LOG_LEVEL" default:"info" help:"log level: debug, info, warn or error"`
}

// Worker is cmd/worker's configuration.
type Worker struct {
	Common
	Listen            string        `env:"CPV_WORKER_LISTEN" default:":9091" help:"address of /healthz, /readyz and /metrics"`
	WorkerID          string        `env:"CPV_WORKER_ID" help:"name of this replica in status rows and heartbeats (default: host name)"`
	Concurrency       int           `env:"CPV_CONCURRENCY" default:"16" help:"refreshes run at once by this replica"`
	ReceiveBatch      int           `env:"CPV_RECEIVE_BATCH" default:"16" help:"messages received per call (Storage Queue allows up to 32)"`
	Visibility        time.Duration `env:"CPV_VISIBILITY" default:"60s" help:"how long a received message stays invisible (or locked) before it is extended"`
	MessageTimeout    time.Duration `env:"CPV_MESSAGE_TIMEOUT" default:"5m" help:"longest time one refresh may take"`
	MaxAttempts       int           `env:"CPV_MAX_ATTEMPTS" default:"5" help:"deliveries before a failing message is moved to the poison queue"`
	RetryBase         time.Duration `env:"CPV_RETRY_BASE" default:"15s" help:"first backoff after a retryable failure (doubles per attempt)"`
	RetryMax          time.Duration `env:"CPV_RETRY_MAX" default:"15m" help:"longest backoff after a retryable failure"`
	ShutdownGrace     time.Duration `env:"CPV_SHUTDOWN_GRACE" default:"25s" help:"on SIGTERM, how long in-flight refreshes may finish before they are released to another replica"`
	Exact             bool          `env:"CPV_EXACT" default:"false" help:"also remove application roles the manifest no longer lists"`
	PollMax           time.Duration `env:"CPV_POLL_MAX" default:"5s" help:"longest wait between receives while the queue is empty"`
	InteractivePoll   time.Duration `env:"CPV_INTERACTIVE_POLL" default:"1s" help:"while busy with a run, how long the worker goes without asking an interactive queue it found empty"`
	PartnerCenterRate float64       `env:"CPV_PARTNER_CENTER_RATE" default:"45" help:"most Partner Center consent requests per second this replica sends, spaced evenly; Partner Center allows 50 per application id across all replicas, so with N replicas set 45/N; 0: unpaced"`
}

// Dispatcher is cmd/dispatcher's configuration.
type Dispatcher struct {
	Common
	Listen              string        `env:"CPV_DISPATCHER_LISTEN" default:":8080" help:"address of the API, UI, webhooks, /healthz, /readyz and /metrics (unless CPV_METRICS_LISTEN is set)"`
	MetricsListen       string        `env:"CPV_METRICS_LISTEN" help:"address of /metrics alone, which CPV_DISPATCHER_LISTEN then no longer serves (empty: /metrics on CPV_DISPATCHER_LISTEN)"`
	DispatcherID        string        `env:"CPV_DISPATCHER_ID" help:"name of this replica in run records (default: host name)"`
	Schedule            string        `env:"CPV_SCHEDULE" default:"0 0 * * *" help:"cron schedule of the nightly refresh of all tenants"`
	TimeZone            string        `env:"CPV_TIME_ZONE" default:"UTC" help:"IANA time zone of the schedule"`
	CatchUp             time.Duration `env:"CPV_CATCH_UP" default:"24h" help:"a scheduled run missed within this window is run when the dispatcher starts"`
	PropagationDelay    time.Duration `env:"CPV_PROPAGATION_DELAY" default:"15m" help:"delay before refreshing a tenant whose GDAP relationship was just approved or activated"`
	Retention           time.Duration `env:"CPV_RETENTION" default:"8784h" help:"how long tenants' history, the activity log and finished runs are kept (8784h: a year); older rows are deleted once a day; 0: kept for ever"`
	WebhookCertHosts    []string      `env:"CPV_WEBHOOK_CERT_HOSTS" default:"3psostorageacct.blob.core.windows.net" help:"hosts a Partner Center webhook's X-MS-Certificate-Url may point at (comma-separated; Partner Center's is 3psostorageacct.blob.core.windows.net)"`
	WebhookCertPath     string        `env:"CPV_WEBHOOK_CERT_PATH" default:"/cert/*.cer" help:"path pattern (Go path.Match: * stays within one segment) an X-MS-Certificate-Url must match to be fetched; a URL with a query, fragment or escaped characters never is"`
	WebhookRequireMSOrg bool          `env:"CPV_WEBHOOK_REQUIRE_MICROSOFT_ORG" default:"true" help:"require O=Microsoft Corporation in the webhook signing certificate's subject"`
	WebhookMaxAge       time.Duration `env:"CPV_WEBHOOK_MAX_AGE" default:"6h" help:"oldest Partner Center event (by its ResourceChangeUtcDate) still handled: older deliveries are refused with 422, and each event is remembered this long so its repeated deliveries enqueue one refresh"`
	APIKeys             []string      `env:"CPV_API_KEYS" secret:"true" help:"API keys accepted as 'Authorization: Bearer <key>' or X-API-Key (comma-separated), each role:key with role reader, operator or admin, or a bare key (admin); at least 16 characters"`
	AuthIssuer          string        `env:"CPV_AUTH_ISSUER" help:"Entra ID issuer whose bearer tokens the API accepts (e.g. https://login.microsoftonline.com/<tenant>/v2.0)"`
	AuthAudience        string        `env:"CPV_AUTH_AUDIENCE" help:"audience the API's bearer tokens must carry"`
	AuthJWKSURL         string        `env:"CPV_AUTH_JWKS_URL" help:"JWKS URL of the issuer's signing keys (default: from the issuer's OpenID metadata)"`
	AuthRole            string        `env:"CPV_AUTH_ROLE" default:"CPV.Refresh" help:"an app role that grants Operator besides CPV.Operator (the former single write role); see docs/operations.md for CPV.Reader, CPV.Operator and CPV.Admin"`
	SignInClientID      string        `env:"CPV_SIGNIN_CLIENT_ID" help:"app registration users sign in to the UI with (OpenID Connect, authorization code with PKCE); empty: no sign-in with Microsoft"`
	SignInClientSecret  string        `env:"CPV_SIGNIN_CLIENT_SECRET" secret:"true" help:"client secret of the sign-in app (empty for a public client)"`
	SignInIssuer        string        `env:"CPV_SIGNIN_ISSUER" help:"issuer of the sign-in (default: CPV_AUTHORITY_HOST + CPV_PARTNER_TENANT_ID + /v2.0)"`
	PublicURL           string        `env:"CPV_PUBLIC_URL" help:"the dispatcher's address as browsers and Partner Center reach it (https://cpv.example.com); the sign-in redirect URI is <it>/auth/callback and the webhook registered from the Settings page <it>/webhooks/partnercenter"`
	SessionKey          string        `env:"CPV_SESSION_KEY" secret:"true" help:"32 bytes in base64 that seal session cookies (empty: made once and kept in the control table)"`
	SessionLifetime     time.Duration `env:"CPV_SESSION_LIFETIME" default:"8h" help:"how long a UI sign-in lasts"`
	MaxBody             int           `env:"CPV_MAX_BODY" default:"65536" help:"largest accepted request body in bytes"`
	RotationSchedule    string        `env:"CPV_ROTATION_SCHEDULE" default:"0 0 * * 0" help:"cron schedule (in CPV_TIME_ZONE) of the credential's rotation in Key Vault (modes secret and certificate with CPV_KEY_VAULT_URL); one replica rotates"`
	RotationOverlap     time.Duration `env:"CPV_ROTATION_OVERLAP" default:"24h" help:"how long a replaced client secret stays on the app after its successor was proven"`
	SecretLifetime      time.Duration `env:"CPV_SECRET_LIFETIME" default:"4320h" help:"validity of a client secret the rotation adds"`
	CertRenewBefore     time.Duration `env:"CPV_CERTIFICATE_RENEW_BEFORE" default:"720h" help:"the rotation renews the app's certificate when it expires within this (mode certificate with CPV_KEY_VAULT_URL; 30 days, as CIPP)"`
	CertLifetime        time.Duration `env:"CPV_CERTIFICATE_LIFETIME" default:"8760h" help:"validity of a certificate the rotation makes (self-signed, RSA 2048)"`
	PermissionsRun      bool          `env:"CPV_PERMISSIONS_RUN" default:"true" help:"enqueue a refresh of every tenant when a change of the extra permissions makes a new effective manifest"`
	CheckInterval       time.Duration `env:"CPV_CHECK_INTERVAL" default:"24h" help:"how often the access checks run (one replica runs them; also on demand from the Access page)"`
	CheckCredentialWarn int           `env:"CPV_CHECK_CREDENTIAL_WARN_DAYS" default:"30" help:"the credential check warns when the app's secret or certificate expires within this many days"`
	CheckCredentialFail int           `env:"CPV_CHECK_CREDENTIAL_FAIL_DAYS" default:"14" help:"the credential check fails when it expires within this many days (or has expired)"`
	CheckRelationWarn   int           `env:"CPV_CHECK_RELATIONSHIP_WARN_DAYS" default:"30" help:"the GDAP check warns when an active relationship that does not auto-extend ends within this many days"`
	CheckGDAPRoles      []string      `env:"CPV_CHECK_GDAP_ROLES" help:"role template ids every active GDAP relationship must grant (comma-separated; empty: the roles CIPP recommends)"`
	CheckGDAPGroup      string        `env:"CPV_CHECK_GDAP_GROUP" help:"object id of the partner security group the relationships' access assignments must give the roles to (empty: any group)"`
	NotifyURLs          string        `env:"CPV_NOTIFY_URLS" secret:"true" help:"shoutrrr URLs (teams://, slack://, smtp://, generic://, ...) told when tenants newly fail or recover, separated by spaces (a URL may contain commas); empty: no notifications"`
	NotifyInterval      time.Duration `env:"CPV_NOTIFY_INTERVAL" default:"1m" help:"how often the status rows are compared with what was last notified; all changes found at once go out as one digest"`
	NotifyMaxLines      int           `env:"CPV_NOTIFY_MAX_LINES" default:"100" help:"tenants listed in one digest; the rest are counted"`
	NotifyExpiry        time.Duration `env:"CPV_NOTIFY_EXPIRY" default:"336h" help:"notify when the partner app's credential expires within this long"`
}

// Interactive names the interactive queue CPV_INTERACTIVE_QUEUE asks for:
// "" when it is "none" (one queue for all).
func (c *Common) Interactive() string {
	switch c.InteractiveQueue {
	case "none":
		return ""
	case "":
		return c.Queue + queue.InteractiveSuffix
	}
	return c.InteractiveQueue
}

// NotifyURLList splits CPV_NOTIFY_URLS.
func (d *Dispatcher) NotifyURLList() []string { return strings.Fields(d.NotifyURLs) }

// Validate checks the shared settings, one message per bad field.
func (c *Common) Validate() error {
	var errs []error
	switch c.Transport {
	case queue.TransportStorageQueue:
		if c.StorageConnectionString == "" && c.QueueServiceURL == "" {
			errs = append(errs, errors.New("CPV_STORAGE_CONNECTION_STRING or CPV_QUEUE_SERVICE_URL is required"))
		}
	case queue.TransportServiceBus:
		if c.ServiceBusConnection == "" && c.ServiceBusNamespace == "" {
			errs = append(errs, errors.New("transport servicebus needs CPV_SERVICEBUS_CONNECTION_STRING or CPV_SERVICEBUS_NAMESPACE"))
		}
	default:
		errs = append(errs, fmt.Errorf("CPV_TRANSPORT %q: want %s or %s", c.Transport, queue.TransportStorageQueue, queue.TransportServiceBus))
	}
	if c.StorageConnectionString == "" && c.TableServiceURL == "" {
		errs = append(errs, errors.New("CPV_STORAGE_CONNECTION_STRING or CPV_TABLE_SERVICE_URL is required"))
	}
	if err := queue.CheckName(c.Transport, c.Queue); err != nil {
		errs = append(errs, fmt.Errorf("CPV_QUEUE: %w", err))
	}
	if hi := c.Interactive(); hi != "" {
		if err := queue.CheckName(c.Transport, hi); err != nil {
			errs = append(errs, fmt.Errorf("CPV_INTERACTIVE_QUEUE (%s): %w", hi, err))
		} else if hi == c.Queue {
			errs = append(errs, fmt.Errorf("CPV_INTERACTIVE_QUEUE %q: must differ from CPV_QUEUE", hi))
		}
	}
	vault := c.KeyVaultURL != ""
	if vault {
		if u, err := url.Parse(c.KeyVaultURL); err != nil || u.Scheme != "https" || u.Host == "" {
			errs = append(errs, fmt.Errorf("CPV_KEY_VAULT_URL %q: must be an https URL", c.KeyVaultURL))
		}
		if c.AuthMode == "workload" {
			errs = append(errs, errors.New("CPV_KEY_VAULT_URL: mode workload keeps no secret; leave it empty"))
		}
		if c.KeyVaultClientSecret != "" && !cpvtype.IsGUID(c.KeyVaultClientID) {
			errs = append(errs, errors.New("CPV_KEY_VAULT_CLIENT_SECRET needs CPV_KEY_VAULT_CLIENT_ID (a GUID)"))
		}
		if c.KeyVaultPoll < time.Second {
			errs = append(errs, fmt.Errorf("CPV_KEY_VAULT_POLL %s: want at least 1s", c.KeyVaultPoll))
		}
	}
	switch c.AuthMode {
	case "secret":
		if c.ClientSecret == "" && !vault {
			errs = append(errs, errors.New("CPV_CLIENT_SECRET is required with CPV_AUTH_MODE=secret"))
		}
	case "certificate":
		if c.CertificatePath == "" && !vault {
			errs = append(errs, errors.New("CPV_CERTIFICATE_PATH is required with CPV_AUTH_MODE=certificate"))
		}
	case "workload":
	case "refresh-token":
		if c.RefreshToken == "" && !vault {
			errs = append(errs, errors.New("CPV_REFRESH_TOKEN is required with CPV_AUTH_MODE=refresh-token"))
		}
	default:
		errs = append(errs, fmt.Errorf("CPV_AUTH_MODE %q: want secret, certificate, workload or refresh-token", c.AuthMode))
	}
	if !cpvtype.IsGUID(c.PartnerTenantID) {
		errs = append(errs, fmt.Errorf("CPV_PARTNER_TENANT_ID %q is not a GUID", c.PartnerTenantID))
	}
	if !cpvtype.IsGUID(c.ClientID) && !(vault && c.ClientID == "") {
		errs = append(errs, fmt.Errorf("CPV_CLIENT_ID %q is not a GUID", c.ClientID))
	}
	for _, u := range []struct{ env, val string }{
		{"CPV_AUTHORITY_HOST", c.AuthorityHost}, {"CPV_GRAPH_URL", c.GraphURL}, {"CPV_PARTNER_CENTER_URL", c.PartnerCenterURL},
	} {
		p, err := url.Parse(u.val)
		if err != nil || p.Scheme != "https" || p.Host == "" {
			errs = append(errs, fmt.Errorf("%s %q: must be an https URL", u.env, u.val))
		}
	}
	switch c.LogFormat {
	case "auto", "text", "json":
	default:
		errs = append(errs, fmt.Errorf("CPV_LOG_FORMAT %q: want auto, text or json", c.LogFormat))
	}
	switch strings.ToLower(c.LogLevel) {
	case "debug", "info", "warn", "error":
	default:
		errs = append(errs, fmt.Errorf("CPV_LOG_LEVEL %q: want debug, info, warn or error", c.LogLevel))
	}
	return errors.Join(errs...)
}

// Validate checks the worker's settings.
func (w *Worker) Validate() error {
	errs := []error{w.Common.Validate()}
	if w.Concurrency < 1 || w.Concurrency > 1024 {
		errs = append(errs, fmt.Errorf("CPV_CONCURRENCY %d: want 1..1024", w.Concurrency))
	}
	if w.ReceiveBatch < 1 || w.ReceiveBatch > 32 {
		errs = append(errs, fmt.Errorf("CPV_RECEIVE_BATCH %d: want 1..32", w.ReceiveBatch))
	}
	if w.Visibility < minWorkerVisibility {
		errs = append(errs, fmt.Errorf("CPV_VISIBILITY %s: want at least %s (the worker extends a message before it lapses)", w.Visibility, minWorkerVisibility))
	} else if err := queue.CheckVisibility(w.Transport, w.Visibility); err != nil {
		errs = append(errs, fmt.Errorf("CPV_VISIBILITY %w", err))
	}
	if w.MessageTimeout <= 0 {
		errs = append(errs, fmt.Errorf("CPV_MESSAGE_TIMEOUT %s: must be positive", w.MessageTimeout))
	}
	if w.MaxAttempts < 1 {
		errs = append(errs, fmt.Errorf("CPV_MAX_ATTEMPTS %d: want at least 1", w.MaxAttempts))
	}
	if w.RetryBase <= 0 || w.RetryMax < w.RetryBase {
		errs = append(errs, fmt.Errorf("CPV_RETRY_BASE %s / CPV_RETRY_MAX %s: want 0 < base <= max", w.RetryBase, w.RetryMax))
	}
	if w.ShutdownGrace < 0 {
		errs = append(errs, fmt.Errorf("CPV_SHUTDOWN_GRACE %s: must not be negative", w.ShutdownGrace))
	}
	if w.PollMax <= 0 {
		errs = append(errs, fmt.Errorf("CPV_POLL_MAX %s: must be positive", w.PollMax))
	}
	if w.InteractivePoll < 0 || w.InteractivePoll > time.Minute {
		errs = append(errs, fmt.Errorf("CPV_INTERACTIVE_POLL %s: want 0..1m", w.InteractivePoll))
	}
	if !(w.PartnerCenterRate >= 0 && w.PartnerCenterRate <= 1000) {
		errs = append(errs, fmt.Errorf("CPV_PARTNER_CENTER_RATE %v: want 0..1000 requests per second", w.PartnerCenterRate))
	}
	return errors.Join(errs...)
}

// Validate checks the dispatcher's settings. The schedule and time zone are
// parsed by the dispatcher itself (it owns the cron parser).
func (d *Dispatcher) Validate() error {
	errs := []error{d.Common.Validate()}
	if _, err := time.LoadLocation(d.TimeZone); err != nil {
		errs = append(errs, fmt.Errorf("CPV_TIME_ZONE %q: %v", d.TimeZone, err))
	}
	if d.PropagationDelay < 0 || d.PropagationDelay > 7*24*time.Hour {
		errs = append(errs, fmt.Errorf("CPV_PROPAGATION_DELAY %s: want 0..168h", d.PropagationDelay))
	}
	if d.Retention != 0 && d.Retention < 24*time.Hour {
		errs = append(errs, fmt.Errorf("CPV_RETENTION %s: want 0 (keep for ever) or at least 24h", d.Retention))
	}
	if d.WebhookMaxAge < time.Minute || d.WebhookMaxAge > 7*24*time.Hour {
		errs = append(errs, fmt.Errorf("CPV_WEBHOOK_MAX_AGE %s: want 1m..168h", d.WebhookMaxAge))
	}
	if _, err := path.Match(d.WebhookCertPath, "/"); err != nil || !strings.HasPrefix(d.WebhookCertPath, "/") {
		errs = append(errs, fmt.Errorf("CPV_WEBHOOK_CERT_PATH %q: want a path pattern starting with /, such as /cert/*.cer", d.WebhookCertPath))
	}
	if len(d.APIKeys) == 0 && d.AuthIssuer == "" && d.SignInClientID == "" {
		errs = append(errs, errors.New("the API is closed: set CPV_API_KEYS, CPV_AUTH_ISSUER (with CPV_AUTH_AUDIENCE) or CPV_SIGNIN_CLIENT_ID"))
	}
	if d.AuthIssuer != "" && d.AuthAudience == "" {
		errs = append(errs, errors.New("CPV_AUTH_AUDIENCE is required with CPV_AUTH_ISSUER"))
	}
	if u, err := url.Parse(d.PublicURL); d.PublicURL != "" && d.SignInClientID == "" && (err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "") {
		errs = append(errs, fmt.Errorf("CPV_PUBLIC_URL %q: want an http(s) URL", d.PublicURL))
	}
	if d.SignInClientID != "" {
		if u, err := url.Parse(d.PublicURL); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			errs = append(errs, fmt.Errorf("CPV_PUBLIC_URL %q: an http(s) URL is required with CPV_SIGNIN_CLIENT_ID", d.PublicURL))
		}
		if d.SessionLifetime < time.Minute || d.SessionLifetime > 7*24*time.Hour {
			errs = append(errs, fmt.Errorf("CPV_SESSION_LIFETIME %s: want 1m..168h", d.SessionLifetime))
		}
	}
	if _, err := d.SessionKeyBytes(); err != nil {
		errs = append(errs, err)
	}
	// Port 0 gives each listener a port of its own.
	if _, port, _ := net.SplitHostPort(d.MetricsListen); d.MetricsListen != "" && d.MetricsListen == d.Listen && port != "0" {
		errs = append(errs, fmt.Errorf("CPV_METRICS_LISTEN %q: must differ from CPV_DISPATCHER_LISTEN (leave it empty to serve /metrics there)", d.MetricsListen))
	}
	if d.RotationOverlap <= 0 || d.SecretLifetime <= d.RotationOverlap {
		errs = append(errs, fmt.Errorf("CPV_ROTATION_OVERLAP %s / CPV_SECRET_LIFETIME %s: want 0 < overlap < lifetime", d.RotationOverlap, d.SecretLifetime))
	}
	if d.CertRenewBefore <= 0 || d.CertLifetime <= d.CertRenewBefore || d.CertLifetime <= d.RotationOverlap {
		errs = append(errs, fmt.Errorf("CPV_CERTIFICATE_RENEW_BEFORE %s / CPV_CERTIFICATE_LIFETIME %s: want 0 < renew before < lifetime, and the lifetime above CPV_ROTATION_OVERLAP",
			d.CertRenewBefore, d.CertLifetime))
	}
	if d.NotifyInterval < time.Second || d.NotifyInterval > 24*time.Hour {
		errs = append(errs, fmt.Errorf("CPV_NOTIFY_INTERVAL %s: want 1s..24h", d.NotifyInterval))
	}
	if d.NotifyExpiry < time.Hour {
		errs = append(errs, fmt.Errorf("CPV_NOTIFY_EXPIRY %s: want 1h or more", d.NotifyExpiry))
	}
	if d.NotifyMaxLines < 1 || d.NotifyMaxLines > 1000 {
		errs = append(errs, fmt.Errorf("CPV_NOTIFY_MAX_LINES %d: want 1..1000", d.NotifyMaxLines))
	}
	if d.CheckInterval < time.Minute || d.CheckInterval > 30*24*time.Hour {
		errs = append(errs, fmt.Errorf("CPV_CHECK_INTERVAL %s: want 1m..720h", d.CheckInterval))
	}
	if d.CheckCredentialFail < 1 || d.CheckCredentialWarn < d.CheckCredentialFail || d.CheckCredentialWarn > 3650 {
		errs = append(errs, fmt.Errorf("CPV_CHECK_CREDENTIAL_WARN_DAYS %d / CPV_CHECK_CREDENTIAL_FAIL_DAYS %d: want 1 <= fail <= warn <= 3650", d.CheckCredentialWarn, d.CheckCredentialFail))
	}
	if d.CheckRelationWarn < 1 || d.CheckRelationWarn > 3650 {
		errs = append(errs, fmt.Errorf("CPV_CHECK_RELATIONSHIP_WARN_DAYS %d: want 1..3650", d.CheckRelationWarn))
	}
	for _, id := range d.CheckGDAPRoles {
		if !cpvtype.IsGUID(id) {
			errs = append(errs, fmt.Errorf("CPV_CHECK_GDAP_ROLES: %q is not a role template id (a GUID)", id))
		}
	}
	if d.CheckGDAPGroup != "" && !cpvtype.IsGUID(d.CheckGDAPGroup) {
		errs = append(errs, fmt.Errorf("CPV_CHECK_GDAP_GROUP %q: want the group's object id (a GUID)", d.CheckGDAPGroup))
	}
	if d.MaxBody < 1024 || d.MaxBody > 4<<20 {
		errs = append(errs, fmt.Errorf("CPV_MAX_BODY %d: want 1024..4194304", d.MaxBody))
	}
	return errors.Join(errs...)
}

// SessionKeyBytes decodes CPV_SESSION_KEY (nil when empty).
func (d *Dispatcher) SessionKeyBytes() ([]byte, error) {
	if d.SessionKey == "" {
		return nil, nil
	}
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		if k, err := enc.DecodeString(d.SessionKey); err == nil && len(k) == 32 {
			return k, nil
		}
	}
	// Never quote the key.
	return nil, errors.New("CPV_SESSION_KEY: want 32 bytes in base64 (openssl rand -base64 32)")
}

// SignInIssuerURL is the sign-in's issuer: CPV_SIGNIN_ISSUER, or the
// partner tenant's v2.0 issuer at the authority host.
func (d *Dispatcher) SignInIssuerURL() string {
	if d.SignInIssuer != "" {
		return d.SignInIssuer
	}
	return strings.TrimRight(d.AuthorityHost, "/") + "/" + d.PartnerTenantID + "/v2.0"
}

// Credential is the partner app's token source configuration for
// entra.NewCredential from the environment. onRotate receives the refresh
// tokens Entra rotates (refresh-token mode); AppCredential adds the Key
// Vault source and writes them back there.
func (c *Common) Credential(hc *http.Client, onRotate func(string)) entra.Config {
	return entra.Config{
		Mode:                c.AuthMode,
		PartnerTenantID:     c.PartnerTenantID,
		ClientID:            c.ClientID,
		ClientSecret:        c.ClientSecret,
		CertificatePath:     c.CertificatePath,
		CertificatePassword: c.CertificatePass,
		TokenFilePath:       c.TokenFile,
		RefreshToken:        c.RefreshToken,
		OnRefreshToken:      onRotate,
		AuthorityHost:       c.AuthorityHost,
		HTTPClient:          hc,
	}
}

// minWorkerVisibility is the shortest visibility a worker is configured
// with: it extends a message well before it lapses, and a shorter one would
// spend more round trips extending than refreshing. The transports accept
// down to queue.MinVisibility (tests use that).
const minWorkerVisibility = 5 * time.Second
