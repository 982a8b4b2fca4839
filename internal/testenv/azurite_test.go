package testenv

import (
	"net/http"
	"testing"
)

func TestAzuriteStarts(t *testing.T) {
	s := Azurite(t)
	if s.QueueURL == "" && s.ConnectionString == "" {
		t.Fatal("no endpoints")
	}
	if s.QueueURL == "" {
		return // an external Azurite named by TESTENV_AZURITE
	}
	resp, err := http.Get(s.QueueURL + "/devstoreaccount1?comp=list")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	// An unsigned request is refused: what matters is that Azurite answered.
	if resp.StatusCode != http.StatusForbidden {
		t.Fatalf("queue service answered %d, want 403 for an unsigned request", resp.StatusCode)
	}
}
