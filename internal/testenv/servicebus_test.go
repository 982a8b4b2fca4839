package testenv

import (
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestServiceBusPeerStarts(t *testing.T) {
	p := ServiceBus(t)
	if again := ServiceBus(t); again != p {
		t.Fatal("a second call started another peer")
	}
	name := Name("sbenv")
	p.ConfigureQueue(t, name, 7*time.Second, 3)
	resp, err := http.Get(p.Control + "/queues/" + name)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	type queueState struct {
		Active, Scheduled, DeadLetter    int
		LockDurationMs, MaxDeliveryCount int64
	}
	var got queueState
	if err := json.NewDecoder(resp.Body).Decode(&got); err != nil {
		t.Fatal(err)
	}
	want := queueState{LockDurationMs: 7000, MaxDeliveryCount: 3}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("queue on the peer (-want +got):\n%s", diff)
	}
}
