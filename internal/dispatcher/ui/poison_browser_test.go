package ui_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/cpvrefresh/cpvrefresh/internal/cpvtype"
	"github.com/cpvrefresh/cpvrefresh/internal/m365sim"
	"github.com/cpvrefresh/cpvrefresh/internal/queue"
	"github.com/cpvrefresh/cpvrefresh/internal/testenv"
)

// TestBrowserPoison parks a tenant's refresh while the workers are paused,
// finds it on the Poison page, re-drives it from there and sees the
// poison queue empty and the tenant's refresh succeed.
func TestBrowserPoison(t *testing.T) {
	s := newStack(t)
	b := newBrowser(t)
	ctx := context.Background()
	b.signIn(s.srv.URL, len(s.sim.Fleet()))
	tn := s.fleetTenant(t, m365sim.KindCorrect)

	if err := s.store.SetPaused(ctx, cpvtype.ComponentWorkers, true); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 30*time.Second, "the worker to see the pause switch", func() error {
		if !s.workerPaused(t) {
			return errors.New("the worker's /readyz says it is not paused")
		}
		return nil
	})
	const reqID = "poison-browser-1"
	if err := s.queue.Send(ctx, queue.Message{V: queue.Version, TenantID: tn.ID, Op: cpvtype.OpRefresh, Reason: queue.ReasonManual,
		RequestID: reqID, RequestedAt: time.Now().UTC()}, 0); err != nil {
		t.Fatal(err)
	}
	ds, err := s.queue.Receive(ctx, 1)
	if err != nil || len(ds) != 1 {
		t.Fatalf("receive: %d, %v", len(ds), err)
	}
	if err := s.queue.Poison(ctx, ds[0], "retries exhausted: HTTP 503"); err != nil {
		t.Fatal(err)
	}
	if err := s.store.SetPaused(ctx, cpvtype.ComponentWorkers, false); err != nil {
		t.Fatal(err)
	}

	b.click(`a[data-nav="poison"]`)
	row := fmt.Sprintf(`#poison-table tr[data-tenant=%q]`, tn.ID)
	b.until("the parked message", `document.querySelector('`+row+`')?.textContent.includes('retries exhausted: HTTP 503')`, 20*time.Second)
	b.click(row + ` button[data-action="redrive"]`)
	b.confirm("Re-drive the message of "+tn.ID+"?", "confirm-ok")
	b.until("no parked messages", `!document.querySelector('#poison-table') && document.querySelector('#poison-region').textContent.includes('No parked messages')`, 20*time.Second)
	if _, poison, err := s.queue.Depth(ctx); err != nil || poison != 0 {
		t.Errorf("poison queue depth %d, %v; want 0", poison, err)
	}
	testenv.Eventually(t, 60*time.Second, "the re-driven refresh to succeed", func() error {
		st, err := s.store.GetStatus(ctx, tn.ID)
		if err != nil {
			return err
		}
		if st.RequestID != reqID || st.State != cpvtype.StatusSucceeded {
			return fmt.Errorf("status %s of request %s", st.State, st.RequestID)
		}
		return nil
	})
}
