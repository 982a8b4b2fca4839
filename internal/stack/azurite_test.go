package stack

import (
	"net/http"
	"testing"
)

// TestAzuriteRestart starts Azurite on disk, restarts it and checks that
// it answers on the same ports.
func TestAzuriteRestart(t *testing.T) {
	t.Parallel()
	a, err := StartAzurite(t.Context(), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = a.Stop() })
	queue, table, cs := a.QueuePort, a.TablePort, a.ConnectionString
	if queue == 0 || table == 0 {
		t.Fatalf("ports %d and %d, want both chosen", queue, table)
	}
	answers(t, a.QueueURL())
	if err := a.Restart(t.Context()); err != nil {
		t.Fatal(err)
	}
	if a.QueuePort != queue || a.TablePort != table || a.ConnectionString != cs {
		t.Fatalf("after a restart: ports %d and %d, want %d and %d", a.QueuePort, a.TablePort, queue, table)
	}
	answers(t, a.QueueURL())
	if a.PeakRSS() == 0 {
		t.Error("no peak RSS recorded")
	}
	if a.CPUTime() <= 0 {
		t.Error("no CPU time read for a Node.js process that started and answered")
	}
	if err := a.Stop(); err != nil {
		t.Fatal(err)
	}
	if a.Pid() != 0 {
		t.Error("stopped Azurite still has a pid")
	}
	if a.CPUTime() != 0 {
		t.Error("a stopped Azurite reports CPU time")
	}
}

// answers checks that Azurite's queue service answers (an unsigned request
// is refused: what matters is that it answered).
func answers(t *testing.T, queueURL string) {
	t.Helper()
	resp, err := http.Get(queueURL + "/devstoreaccount1?comp=list")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Fatalf("queue service answered %d, want 403 for an unsigned request", resp.StatusCode)
	}
}
