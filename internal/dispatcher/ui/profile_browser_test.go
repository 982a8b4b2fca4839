package ui_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/cpvrefresh/cpvrefresh/internal/cpv"
	"github.com/cpvrefresh/cpvrefresh/internal/cpvtype"
	"github.com/cpvrefresh/cpvrefresh/internal/m365sim"
	"github.com/cpvrefresh/cpvrefresh/internal/testenv"
)

// startWorkerProcess builds cmd/worker and runs it against the stack (its
// simulator, queue and tables) until the test ends: profiles are the
// daemon's business (cmd/worker reads them and refreshes a tenant with its
// profile's engine), so this is what a partner runs. env adds settings.
func (s *stack) startWorkerProcess(t *testing.T, env ...string) {
	t.Helper()
	root, err := testenv.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "worker")
	build := exec.Command("go", "build", "-o", bin, "./cmd/worker")
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/worker: %v\n%s", err, out)
	}
	ca := filepath.Join(dir, "sim-ca.pem")
	if err := s.sim.WriteCA(ca); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin)
	cmd.Env = append([]string{
		"PATH=" + os.Getenv("PATH"),
		"HOME=" + os.Getenv("HOME"),
		"SSL_CERT_FILE=" + ca,
		"CPV_STORAGE_CONNECTION_STRING=" + s.conn,
		"CPV_TABLE_PREFIX=" + s.prefix,
		"CPV_TRANSPORT=storagequeue",
		"CPV_QUEUE=" + s.qname,
		"CPV_AUTH_MODE=secret",
		"CPV_PARTNER_TENANT_ID=" + s.sim.PartnerTenantID(),
		"CPV_CLIENT_ID=" + s.sim.AppID(),
		"CPV_CLIENT_SECRET=" + s.sim.AppSecret(),
		"CPV_AUTHORITY_HOST=" + s.sim.AuthorityHost(),
		"CPV_GRAPH_URL=" + s.sim.GraphURL(),
		"CPV_PARTNER_CENTER_URL=" + s.sim.PartnerCenterURL(),
		"CPV_WORKER_LISTEN=127.0.0.1:0",
		"CPV_WORKER_ID=ui-profile-worker",
		"CPV_CONCURRENCY=4",
		"CPV_VISIBILITY=5s",
		"CPV_POLL_MAX=300ms",
		"CPV_LOG_FORMAT=json",
		"CPV_LOG_LEVEL=info",
	}, env...)
	out := &testenv.Buffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait() // stopped by the test; its output says the rest
		close(exited)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(20 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
		if t.Failed() {
			t.Logf("worker process output:\n%s", out.String())
		}
	})
}

// TestBrowserProfiles: an Admin creates a least-privilege profile on the
// Permissions page from the full set's lines, assigns a new tenant to it on
// the tenant's page, and the tenants list shows and filters by it; the
// worker daemon (exact mode) then leaves that tenant holding exactly the
// profile's set in the simulator, while another tenant holds the full set
// (the assertions of cmd/worker's TestProfiles, through the UI).
func TestBrowserProfiles(t *testing.T) {
	// The workers read the assignments every 3 s; the dispatcher, told so,
	// delays the assignment's refresh until they have (without the delay
	// the refresh ran first and gave the tenant the full set).
	s := newStack(t, stackOptions{noWorker: true, workerReload: 3 * time.Second})
	s.startWorkerProcess(t, "CPV_EXACT=true", "CPV_MANIFEST_RELOAD=3s")
	b := newBrowser(t)
	ctx := context.Background()
	b.signIn(s.srv.URL, len(s.sim.Fleet()))
	var fresh []m365sim.FleetTenant
	for _, f := range s.sim.Fleet() {
		if f.Kind == m365sim.KindNew {
			fresh = append(fresh, f)
		}
	}
	if len(fresh) < 2 {
		t.Fatalf("the fleet has %d new tenants, want 2", len(fresh))
	}
	least, full := fresh[0], fresh[1]

	// The Admin picks Graph's Policy.Read.All (application) and Domain.Read.All (delegated).
	b.click(`a[data-nav="permissions"]`)
	b.until("the profile form", `document.querySelectorAll('#profile-form input[type=checkbox]').length > 100`, 30*time.Second)
	b.do("name the profile", chromedp.SendKeys(chromedp.CSS("#profile-name"), "least-privilege"))
	for _, sel := range []string{
		`#profile-form input[data-resource="` + cpv.GraphAppID + `"][data-type="Role"][data-perm="Policy.Read.All"]`,
		`#profile-form input[data-resource="` + cpv.GraphAppID + `"][data-type="Scope"][data-perm="Domain.Read.All"]`,
	} {
		eval[chromedp.Void](b, `(() => { const b = document.querySelector(`+js(sel)+`); b.closest('details').open = true; })()`)
		b.click(sel)
	}
	b.click("#profile-save")
	b.until("the saved profile", `document.querySelector('#profiles-table tr[data-profile="least-privilege"]') && document.querySelector('#profile-result')?.textContent.includes('1 application permission, 1 delegated permission')`, 20*time.Second)
	ps, err := s.store.Profiles(ctx)
	if err != nil || len(ps) != 1 || ps[0].UpdatedBy != "apikey:1" {
		t.Fatalf("profiles stored: %+v, %v", ps, err)
	}

	// Assign it on the tenant's page; the assignment refreshes the tenant.
	b.do("open the tenant", chromedp.Navigate(s.srv.URL+"/#/tenants/"+least.ID))
	b.until("the profile choice", `document.querySelector('#tenant-profile-select option[value="least-privilege"]')`, 20*time.Second)
	eval[chromedp.Void](b, `(() => { const s = document.querySelector('#tenant-profile-select'); s.value = 'least-privilege'; s.dispatchEvent(new Event('change')); })()`)
	b.click("#tenant-profile-assign")
	b.until("the assignment", `document.querySelector('#tenant-profile code')?.textContent === 'least-privilege'`, 20*time.Second)
	b.until("the assignment's refresh", `document.querySelector('`+requestItem(least.ID)+` .badge')?.textContent === 'succeeded'`, 90*time.Second)

	// The other tenant is refreshed with the full set.
	b.do("open the other tenant", chromedp.Navigate(s.srv.URL+"/#/tenants/"+full.ID))
	b.until("its page", `document.querySelector('#tenant-refresh') && document.querySelector('#main h1').textContent === `+js(full.DisplayName), 20*time.Second)
	b.click("#tenant-refresh")
	b.confirm("Refresh the CPV permissions of "+full.DisplayName+"?", "confirm-ok")
	b.until("its refresh", `document.querySelector('`+requestItem(full.ID)+` .badge')?.textContent === 'succeeded'`, 90*time.Second)

	want := &m365sim.Permissions{Resources: []m365sim.Resource{{AppID: cpv.GraphAppID, Roles: []string{"246dd0d5-5bd0-4def-940b-0421030a5b68"}, Scopes: []string{"Domain.Read.All"}}}}
	if d := s.sim.Conforms(least.ID, want); len(d) != 0 {
		t.Errorf("the profile's tenant does not hold the profile's set: %v", d)
	}
	st, _ := s.sim.Tenant(least.ID)
	if len(st.AppRoleAssignments) != 1 || len(st.Grants) != 1 || st.Grants[0].Scope != "Domain.Read.All" {
		t.Errorf("the profile's tenant holds more than the profile: %d assignments, grants %+v", len(st.AppRoleAssignments), st.Grants)
	}
	if d := s.sim.Conforms(full.ID, s.want); len(d) != 0 {
		t.Errorf("the other tenant does not hold the full set: %v", d)
	}

	// The tenants list shows the profile, and filters by it.
	b.click(`a[data-nav="tenants"]`)
	b.until("the profile column", `document.querySelector('#tenants-table tr[data-tenant="`+least.ID+`"] td[data-profile="least-privilege"]')`, 20*time.Second)
	eval[chromedp.Void](b, `(() => { const s = document.querySelector('#profile-filter'); s.value = 'least-privilege'; s.dispatchEvent(new Event('change')); })()`)
	b.until("the filtered list", `document.querySelectorAll('#tenants-table tbody tr').length === 1 && document.querySelector('#tenants-table tbody tr').dataset.tenant === `+js(least.ID), 20*time.Second)
	if got, err := s.store.GetStatus(ctx, least.ID); err != nil || got.State != cpvtype.StatusSucceeded || !strings.EqualFold(got.TenantID, least.ID) {
		t.Errorf("status of the profile's tenant: %+v, %v", got, err)
	}
	b.screenshot("profiles.png")
}
