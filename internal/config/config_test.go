package config

import (
	"maps"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func env(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

func TestLoadPrecedence(t *testing.T) {
	t.Parallel()
	var w Worker
	err := Load(&w, []string{"-concurrency", "7"}, env(map[string]string{
		"CPV_CONCURRENCY": "3", "CPV_VISIBILITY": "2m",
	}), "worker")
	if err != nil {
		t.Fatal(err)
	}
	if w.Concurrency != 7 {
		t.Errorf("flag should win over env: concurrency = %d", w.Concurrency)
	}
	if w.Visibility != 2*time.Minute {
		t.Errorf("env should win over default: visibility = %s", w.Visibility)
	}
	if w.MaxAttempts != 5 || w.Queue != "cpv-refresh" {
		t.Errorf("defaults not applied: attempts %d queue %q", w.MaxAttempts, w.Queue)
	}
	var d Dispatcher
	if err := Load(&d, nil, env(map[string]string{"CPV_WEBHOOK_CERT_HOSTS": "a.example, b.example"}), "dispatcher"); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"a.example", "b.example"}, d.WebhookCertHosts); diff != "" {
		t.Errorf("list (-want +got):\n%s", diff)
	}
}

func TestLoadReportsEveryBadField(t *testing.T) {
	t.Parallel()
	var w Worker
	err := Load(&w, []string{"-no-such-flag"}, env(map[string]string{"CPV_CONCURRENCY": "many", "CPV_VISIBILITY": "soon", "CPV_EXACT": "perhaps"}), "worker")
	if err == nil {
		t.Fatal("want an error")
	}
	for _, want := range []string{"CPV_CONCURRENCY", "CPV_VISIBILITY", "CPV_EXACT", "no-such-flag"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error does not name %s: %v", want, err)
		}
	}
}

func TestValidate(t *testing.T) {
	t.Parallel()
	var w Worker
	if err := Load(&w, nil, env(nil), "worker"); err != nil {
		t.Fatal(err)
	}
	err := w.Validate()
	if err == nil {
		t.Fatal("missing client id, tenant and secret must fail")
	}
	for _, want := range []string{"CPV_CLIENT_SECRET", "CPV_PARTNER_TENANT_ID", "CPV_CLIENT_ID"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error does not name %s: %v", want, err)
		}
	}
	w.ClientSecret = "s3cret-value"
	w.PartnerTenantID = "11111111-2222-3333-4444-555555555555"
	w.ClientID = "66666666-7777-8888-9999-000000000000"
	if err := w.Validate(); err != nil {
		t.Fatalf("valid config refused: %v", err)
	}
	w.GraphURL = "http://graph.example/v1.0"
	if err := w.Validate(); err == nil || !strings.Contains(err.Error(), "CPV_GRAPH_URL") {
		t.Fatalf("plain http Graph URL must be refused, got %v", err)
	}

	var d Dispatcher
	if err := Load(&d, nil, env(map[string]string{
		"CPV_CLIENT_SECRET": "x", "CPV_PARTNER_TENANT_ID": w.PartnerTenantID, "CPV_CLIENT_ID": w.ClientID,
	}), "dispatcher"); err != nil {
		t.Fatal(err)
	}
	if err := d.Validate(); err == nil || !strings.Contains(err.Error(), "API is closed") {
		t.Fatalf("a dispatcher with no API authentication must be refused, got %v", err)
	}
	d.APIKeys = []string{"0123456789abcdef0123"}
	if err := d.Validate(); err != nil {
		t.Fatalf("valid dispatcher config refused: %v", err)
	}
	if err := Load(&d, []string{"-metrics-listen", ":9090"}, env(nil), "dispatcher"); err != nil || d.MetricsListen != ":9090" {
		t.Fatalf("-metrics-listen: %q %v", d.MetricsListen, err)
	}
	d.MetricsListen = d.Listen
	if err := d.Validate(); err == nil || !strings.Contains(err.Error(), "CPV_METRICS_LISTEN") {
		t.Fatalf("metrics on the main listener's own address must be refused, got %v", err)
	}
	d.MetricsListen = ""

	// Notification URLs are separated by spaces, so one may contain commas.
	if err := Load(&d, nil, env(map[string]string{
		"CPV_NOTIFY_URLS": " teams://a@b/c smtp://u:p@host:25/?from=a@x&to=b@x,c@x ",
	}), "dispatcher"); err != nil {
		t.Fatal(err)
	}
	if got := d.NotifyURLList(); len(got) != 2 || got[1] != "smtp://u:p@host:25/?from=a@x&to=b@x,c@x" {
		t.Errorf("NotifyURLList() = %q", got)
	}
	if d.NotifyInterval != time.Minute || d.NotifyMaxLines != 100 || d.NotifyExpiry != 14*24*time.Hour {
		t.Errorf("notification defaults: interval %s, max lines %d, expiry %s", d.NotifyInterval, d.NotifyMaxLines, d.NotifyExpiry)
	}
	d.NotifyInterval, d.NotifyMaxLines, d.NotifyExpiry = 0, 0, time.Minute
	err = d.Validate()
	for _, want := range []string{"CPV_NOTIFY_INTERVAL", "CPV_NOTIFY_MAX_LINES", "CPV_NOTIFY_EXPIRY"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error does not name %s: %v", want, err)
		}
	}
	d.NotifyURLs, d.NotifyInterval, d.NotifyMaxLines, d.NotifyExpiry = "", time.Minute, 100, 14*24*time.Hour
	if d.Retention != 8784*time.Hour {
		t.Errorf("retention default %s, want 8784h", d.Retention)
	}
	d.Retention = time.Hour
	if err := d.Validate(); err == nil || !strings.Contains(err.Error(), "CPV_RETENTION") {
		t.Errorf("a retention under a day must be refused, got %v", err)
	}
	d.Retention = 0
	if err := d.Validate(); err != nil {
		t.Errorf("retention 0 (keep for ever) refused: %v", err)
	}
	d.PublicURL = "cpv.example.com"
	if err := d.Validate(); err == nil || !strings.Contains(err.Error(), "CPV_PUBLIC_URL") {
		t.Errorf("a public URL without a scheme must be refused, got %v", err)
	}
	d.PublicURL = ""

	// Sign-in needs the public URL; the session key is 32 bytes of base64 and never quoted.
	d.SignInClientID = w.ClientID
	if err := d.Validate(); err == nil || !strings.Contains(err.Error(), "CPV_PUBLIC_URL") {
		t.Fatalf("sign-in without CPV_PUBLIC_URL must be refused, got %v", err)
	}
	d.PublicURL = "https://cpv.example.com"
	d.SessionKey = "c2hvcnQta2V5LXZhbHVl"
	if err := d.Validate(); err == nil || !strings.Contains(err.Error(), "CPV_SESSION_KEY") || strings.Contains(err.Error(), d.SessionKey) {
		t.Fatalf("a short session key must be refused without quoting it, got %v", err)
	}
	d.SessionKey = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="
	if err := d.Validate(); err != nil {
		t.Fatalf("valid sign-in config refused: %v", err)
	}
	if k, _ := d.SessionKeyBytes(); len(k) != 32 {
		t.Errorf("session key: %d bytes, want 32", len(k))
	}
	if got, want := d.SignInIssuerURL(), "https://127.0.0.1:8443/"+w.PartnerTenantID+"/v2.0"; got != want {
		t.Errorf("SignInIssuerURL() = %q, want %q", got, want)
	}
	if d.WebhookMaxAge != 6*time.Hour || d.WebhookCertPath != "/cert/*.cer" {
		t.Errorf("webhook defaults: max age %s, certificate path %q", d.WebhookMaxAge, d.WebhookCertPath)
	}
	d.WebhookMaxAge, d.WebhookCertPath = 0, "cert/[.cer"
	err = d.Validate()
	for _, want := range []string{"CPV_WEBHOOK_MAX_AGE", "CPV_WEBHOOK_CERT_PATH"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error does not name %s: %v", want, err)
		}
	}
}

func TestRedactedHidesSecrets(t *testing.T) {
	t.Parallel()
	var w Worker
	if err := Load(&w, nil, env(map[string]string{"CPV_CLIENT_SECRET": "very-secret-value"}), "worker"); err != nil {
		t.Fatal(err)
	}
	for _, v := range Redacted(&w) {
		if s, ok := v.(string); ok && (strings.Contains(s, "very-secret-value") || strings.Contains(s, "Eby8vdM02")) {
			t.Fatalf("secret leaked in %q", s)
		}
	}
}

func TestDefaultStorageIsdevStorage(t *testing.T) {
	t.Parallel()
	var w Worker
	if err := Load(&w, nil, env(nil), "worker"); err != nil {
		t.Fatal(err)
	}
	if w.StorageConnectionString != devStorage {
		t.Fatalf("default storage = %q, want devStorage", w.StorageConnectionString)
	}
}

func TestFallbackVariable(t *testing.T) {
	t.Parallel()
	var w Worker
	if err := Load(&w, nil, env(map[string]string{"AZURE_FEDERATED_TOKEN_FILE": "/var/run/secrets/azure/tokens/azure-identity-token"}), "worker"); err != nil {
		t.Fatal(err)
	}
	if w.TokenFile != "/var/run/secrets/azure/tokens/azure-identity-token" {
		t.Fatalf("token file = %q, want the workload identity webhook's variable", w.TokenFile)
	}
	if err := Load(&w, nil, env(map[string]string{"AZURE_FEDERATED_TOKEN_FILE": "/a", "CPV_FEDERATED_TOKEN_FILE": "/b"}), "worker"); err != nil {
		t.Fatal(err)
	}
	if w.TokenFile != "/b" {
		t.Fatalf("token file = %q, want CPV_FEDERATED_TOKEN_FILE to win", w.TokenFile)
	}
}

// devStorage is Azurite's explicit development connection string on its
// default ports (the Go SDKs refuse UseDevelopmentStorage=true). The account
// key is Azurite's public, documented development key.
const devStorage = "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;" +
	"AccountKey=Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==;" +
	"QueueEndpoint=http://127.0.0.1:10001/devstoreaccount1;TableEndpoint=http://127.0.0.1:10002/devstoreaccount1;"

func TestInteractiveQueue(t *testing.T) {
	t.Parallel()
	valid := map[string]string{"CPV_CLIENT_SECRET": "x", "CPV_PARTNER_TENANT_ID": "11111111-2222-3333-4444-555555555555",
		"CPV_CLIENT_ID": "66666666-7777-8888-9999-000000000000"}
	for _, tt := range []struct {
		queue, interactive, poll string
		want, wantErr            string
	}{
		{want: "cpv-refresh-interactive"},
		{queue: "nightly", want: "nightly-interactive"},
		{interactive: "none", want: ""},
		{interactive: "cpv-manual", want: "cpv-manual"},
		{interactive: "cpv-refresh", wantErr: "must differ from CPV_QUEUE"},
		{interactive: "Manual_Queue", wantErr: "CPV_INTERACTIVE_QUEUE"},
		{queue: strings.Repeat("q", 50), wantErr: "CPV_INTERACTIVE_QUEUE"}, // no room for -interactive-poison
		{poll: "2m", wantErr: "CPV_INTERACTIVE_POLL"},
	} {
		e := maps.Clone(valid)
		for k, v := range map[string]string{"CPV_QUEUE": tt.queue, "CPV_INTERACTIVE_QUEUE": tt.interactive, "CPV_INTERACTIVE_POLL": tt.poll} {
			if v != "" {
				e[k] = v
			}
		}
		var w Worker
		if err := Load(&w, nil, env(e), "worker"); err != nil {
			t.Fatal(err)
		}
		err := w.Validate()
		switch {
		case tt.wantErr != "":
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("%+v: error %v, want one naming %q", tt, err, tt.wantErr)
			}
		case err != nil:
			t.Errorf("%+v: %v", tt, err)
		case w.Interactive() != tt.want:
			t.Errorf("%+v: Interactive() = %q, want %q", tt, w.Interactive(), tt.want)
		}
	}
}
