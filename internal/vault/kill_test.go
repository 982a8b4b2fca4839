package vault_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cpvrefresh/cpvrefresh/internal/entra"
	"github.com/cpvrefresh/cpvrefresh/internal/m365sim"
	"github.com/cpvrefresh/cpvrefresh/internal/testenv"
	"github.com/cpvrefresh/cpvrefresh/internal/vault"
)

// The rotating process of TestRotationKilledAtEachStep is this test binary
// run again with these variables (test builds only: TestMain reads them).
const (
	childEnv = "TESTENV_VAULT_CHILD" // the credential mode; set: be the child
	// childStop names the step after which the child prints stopAt and
	// blocks until the test kills it.
	childStop = "TESTENV_VAULT_STOP"
	// childStart and childDue are the child's clock at its start and the
	// scheduled instant it rotates for (RFC 3339).
	childStart = "TESTENV_VAULT_START"
	childDue   = "TESTENV_VAULT_DUE"
	stopAt     = "stopped at "
)

// rotateChild is one rotating process: it reads the credential from the
// vault as the dispatcher does and runs one rotation (with the app's
// endpoints and the vault from the CPV_* variables the daemons read). It
// returns the exit code.
func rotateChild() int {
	fail := func(err error) int {
		fmt.Fprintln(os.Stderr, "rotation child:", err)
		return 1
	}
	mode := os.Getenv(childEnv)
	start, err := time.Parse(time.RFC3339Nano, os.Getenv(childStart))
	if err != nil {
		return fail(err)
	}
	due, err := time.Parse(time.RFC3339Nano, os.Getenv(childDue))
	if err != nil {
		return fail(err)
	}
	began := time.Now()
	now := func() time.Time { return start.Add(time.Since(began)) }
	hc := &http.Client{Transport: http.DefaultTransport} // trusts SSL_CERT_FILE, the simulator's CA
	id, err := entra.NewCredential(entra.Config{Mode: entra.ModeSecret, PartnerTenantID: os.Getenv("CPV_PARTNER_TENANT_ID"),
		ClientID: os.Getenv("CPV_KEY_VAULT_CLIENT_ID"), ClientSecret: os.Getenv("CPV_KEY_VAULT_CLIENT_SECRET"),
		AuthorityHost: os.Getenv("CPV_AUTHORITY_HOST"), HTTPClient: hc})
	if err != nil {
		return fail(err)
	}
	st, err := vault.New(vault.Config{URL: os.Getenv("CPV_KEY_VAULT_URL"), Credential: id, Transport: hc, Mode: mode})
	if err != nil {
		return fail(err)
	}
	ctx := context.Background()
	if err := st.Load(ctx); err != nil {
		return fail(err)
	}
	cred, err := entra.NewCredential(entra.Config{Mode: mode, PartnerTenantID: os.Getenv("CPV_PARTNER_TENANT_ID"),
		ClientID: os.Getenv("CPV_CLIENT_ID"), Source: st, AuthorityHost: os.Getenv("CPV_AUTHORITY_HOST"), HTTPClient: hc})
	if err != nil {
		return fail(err)
	}
	stop := vault.Step(os.Getenv(childStop))
	rot, err := vault.NewRotator(vault.RotatorConfig{
		Store: st, GraphURL: os.Getenv("CPV_GRAPH_URL"), ClientID: os.Getenv("CPV_CLIENT_ID"),
		PartnerTenantID: os.Getenv("CPV_PARTNER_TENANT_ID"), AuthorityHost: os.Getenv("CPV_AUTHORITY_HOST"),
		AppCredential: cred, HTTPClient: hc, Overlap: 24 * time.Hour, ProveTimeout: 2 * time.Second, Now: now,
		AfterStep: func(s vault.Step) bool {
			if s == stop {
				// Durable up to here: wait for SIGKILL, nothing deferred runs.
				fmt.Println(stopAt + string(s))
				select {}
			}
			return false
		},
	})
	if err != nil {
		return fail(err)
	}
	rep, err := rot.Rotate(ctx, due)
	b, _ := json.Marshal(rep)
	fmt.Println(string(b))
	if err != nil {
		return fail(err)
	}
	return 0
}

// killRig runs rotating processes against one simulator.
type killRig struct {
	t    *testing.T
	sim  *m365sim.Sim
	mode string
	env  []string
	due  time.Time
}

func newKillRig(t *testing.T, sim *m365sim.Sim, mode string, due time.Time) *killRig {
	t.Helper()
	ca := filepath.Join(t.TempDir(), "ca.pem")
	if err := sim.WriteCA(ca); err != nil {
		t.Fatal(err)
	}
	env := []string{
		childEnv + "=" + mode, "SSL_CERT_FILE=" + ca, "PATH=" + os.Getenv("PATH"),
		"CPV_KEY_VAULT_URL=" + sim.VaultURL(), "CPV_KEY_VAULT_CLIENT_ID=" + sim.IdentityClientID(),
		"CPV_KEY_VAULT_CLIENT_SECRET=" + sim.IdentitySecret(), "CPV_CLIENT_ID=" + sim.AppID(),
		"CPV_PARTNER_TENANT_ID=" + sim.PartnerTenantID(), "CPV_AUTHORITY_HOST=" + sim.AuthorityHost(), "CPV_GRAPH_URL=" + sim.GraphURL(),
		childDue + "=" + due.Format(time.RFC3339Nano),
	}
	return &killRig{t: t, sim: sim, mode: mode, env: env, due: due}
}

// run starts a rotating process whose clock reads at: with stop set, it
// waits for the process to reach stop and SIGKILLs it there; without, it
// waits for it to finish and fails the test if the rotation failed.
func (k *killRig) run(at time.Time, stop vault.Step) string {
	k.t.Helper()
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(slices.Clone(k.env), childStart+"="+at.Format(time.RFC3339Nano), childStop+"="+string(stop))
	var errOut testenv.Buffer
	cmd.Stderr = &errOut
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		k.t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		k.t.Fatal(err)
	}
	var out strings.Builder
	sc := bufio.NewScanner(stdout)
	killed := false
	for sc.Scan() {
		line := sc.Text()
		out.WriteString(line + "\n")
		if stop != "" && line == stopAt+string(stop) {
			if err := cmd.Process.Kill(); err != nil { // SIGKILL
				k.t.Fatal(err)
			}
			killed = true
			break
		}
	}
	_, _ = io.Copy(io.Discard, stdout)
	err = cmd.Wait()
	switch {
	case stop != "" && !killed:
		k.t.Fatalf("the rotating process ended before step %s: %v\n%s%s", stop, err, out.String(), errOut.String())
	case stop == "" && err != nil:
		k.t.Fatalf("the rotating process failed: %v\n%s%s", err, out.String(), errOut.String())
	}
	return out.String() + errOut.String()
}

// killMode is what TestRotationKilledAtEachStep does per credential mode.
type killMode struct {
	mode, secret string
	// setup stores the operator's credential and returns it (the old one).
	setup func(t *testing.T, sim *m365sim.Sim) string
	// addLost adds a credential a stopped rotation registered on the app
	// and never stored.
	addLost func(t *testing.T, sim *m365sim.Sim)
	// works reports whether Entra accepts a credential now.
	works func(t *testing.T, sim *m365sim.Sim, cred string) bool
	// current is the credential a daemon's store holds.
	current func(d daemon) string
	// onApp lists the key ids of the app's credentials.
	onApp func(sim *m365sim.Sim) []string
	// secrets are texts no output may hold, of a credential.
	secrets func(t *testing.T, cred string) []string
}

var killModes = []killMode{
	{
		mode: entra.ModeSecret, secret: "ApplicationSecret",
		setup: func(t *testing.T, sim *m365sim.Sim) string {
			sim.SetVaultSecret("ApplicationSecret", sim.AppSecret(), "", nil)
			return sim.AppSecret()
		},
		addLost: func(t *testing.T, sim *m365sim.Sim) {
			sim.AddAppPassword("cpvrefresh 2026-01-01T00:00:00Z", "lost-"+fmt.Sprint(time.Now().UnixNano()), time.Hour*24*30)
		},
		works:   secretWorks,
		current: func(d daemon) string { return d.store.Secret().ClientSecret },
		onApp: func(sim *m365sim.Sim) (ids []string) {
			for _, p := range sim.AppPasswords() {
				ids = append(ids, p.KeyID)
			}
			return ids
		},
		secrets: func(t *testing.T, cred string) []string { return []string{cred} },
	},
	{
		mode: entra.ModeCertificate, secret: "SAMCertificate",
		setup: func(t *testing.T, sim *m365sim.Sim) string {
			// It expires within the renewal window: the run renews it.
			pemText, cert := selfSignedPEM(t, 20*24*time.Hour)
			sim.AddAppCertificate("portal upload", cert)
			sim.SetVaultSecret("SAMCertificate", pemText, "application/x-pem-file", nil)
			return pemText
		},
		addLost: func(t *testing.T, sim *m365sim.Sim) {
			_, cert := selfSignedPEM(t, 300*24*time.Hour)
			sim.AddAppCertificate("cpvrefresh 2026-01-01T00:00:00Z", cert)
		},
		works:   certWorks,
		current: func(d daemon) string { return string(d.store.Secret().Certificate) },
		onApp: func(sim *m365sim.Sim) (ids []string) {
			for _, k := range sim.AppKeys() {
				ids = append(ids, k.KeyID)
			}
			return ids
		},
		secrets: func(t *testing.T, cred string) []string { return []string{keyLine(t, cred)} },
	},
}

// TestRotationKilledAtEachStep runs each rotation in its own process and
// SIGKILLs it after each step (a secret or certificate added to the app
// but not stored; stored unproven; proven but not marked; marked; one of
// two old ones removed), in secret and certificate mode: a daemon starting
// then gets a credential that works, and the next processes finish the
// rotation, leaving exactly one credential on the app, the one the
// vault's one proven version holds, and the old one dead.
func TestRotationKilledAtEachStep(t *testing.T) {
	t.Parallel()
	for m, km := range killModes {
		for i, step := range []vault.Step{vault.StepAdded, vault.StepStored, vault.StepProven, vault.StepMarked, vault.StepRemoved} {
			t.Run(km.mode+"/"+string(step), func(t *testing.T) {
				t.Parallel()
				sim := testenv.Sim(t, m365sim.Options{Seed: int64(120 + 10*m + i)})
				old := km.setup(t, sim)
				if step == vault.StepRemoved {
					// Two credentials a stopped rotation added and never
					// stored: the process dies between their removals.
					km.addLost(t, sim)
					km.addLost(t, sim)
				}
				due := time.Now().Add(time.Minute)
				k := newKillRig(t, sim, km.mode, due)
				var out logs
				log := out.logger()
				var texts []string
				texts = append(texts, k.run(due, step))

				d := openDaemon(t, sim, km.mode, log)
				if !km.works(t, sim, km.current(d)) {
					t.Fatalf("killed after %s: the vault's usable credential does not work", step)
				}

				texts = append(texts, k.run(due, ""))
				texts = append(texts, k.run(due.Add(25*time.Hour), ""))
				d = openDaemon(t, sim, km.mode, log)
				cur := km.current(d)
				ids := km.onApp(sim)
				if len(ids) != 1 || !km.works(t, sim, cur) || km.works(t, sim, old) {
					t.Fatalf("killed after %s, then finished: the app holds %v; the vault's credential works %v; the old one works %v",
						step, ids, km.works(t, sim, cur), km.works(t, sim, old))
				}
				_, tags, _ := sdkVersions(t, sim, km.secret)
				proven := 0
				for _, tg := range tags {
					if tg[vault.TagState] == vault.StateProven {
						proven++
						if tg[vault.TagKeyID] != ids[0] {
							t.Errorf("a proven version holds key %s, the app %s", tg[vault.TagKeyID], ids[0])
						}
					}
				}
				if proven != 1 {
					t.Errorf("versions %v: want exactly one proven version", tags)
				}
				noSecrets(t, append(km.secrets(t, old), km.secrets(t, cur)...), append(texts, out.String())...)
			})
		}
	}
}
