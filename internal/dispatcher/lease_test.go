package dispatcher

import (
	"testing"
	"testing/synctest"
	"time"

	"github.com/google/go-cmp/cmp"
)

// A run's lease is fresh for half its TTL after a renewal. A renewal that
// comes after the lease could have expired is a gap, which a checkpoint
// must rule out (fence) before the run sends again.
func TestRunLeaseFreshnessAndGaps(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		l := &runLease{ttl: time.Minute}
		l.renewed()
		if !l.fresh() || l.gap() != 0 {
			t.Fatalf("just taken: fresh %v, gap %d; want fresh, no gap", l.fresh(), l.gap())
		}
		time.Sleep(31 * time.Second)
		if l.fresh() {
			t.Error("fresh 31s after a renewal with a 1m TTL")
		}
		l.renewed()
		if !l.fresh() || l.gap() != 0 {
			t.Errorf("renewed within the TTL: fresh %v, gap %d; want fresh, no gap", l.fresh(), l.gap())
		}
		time.Sleep(time.Minute)
		l.renewed()
		g := l.gap()
		if g == 0 {
			t.Fatal("renewed a TTL after the last renewal: no gap")
		}
		l.fence(g)
		if l.gap() != 0 {
			t.Errorf("gap %d after the fence, want none", l.gap())
		}
		time.Sleep(2 * time.Minute)
		l.renewed()
		if l.gap() == 0 {
			t.Error("a second gap went unseen")
		}
	})
}

// The cursor moves over the head of the pass that has been sent, and no
// further; what was sent beyond it stays ahead.
func TestProgressAdvance(t *testing.T) {
	t.Parallel()
	p := &progress{ahead: map[string]bool{"b": true, "c": true, "e": true}, order: []string{"b", "c", "d", "e"}}
	p.advance()
	if p.run.Cursor != "c" || !cmp.Equal(p.order, []string{"d", "e"}) || !cmp.Equal(p.ahead, map[string]bool{"e": true}) {
		t.Fatalf("after b and c: cursor %q, order %v, ahead %v; want c, [d e], {e}", p.run.Cursor, p.order, p.ahead)
	}
	p.ahead["d"] = true
	p.advance()
	if p.run.Cursor != "e" || len(p.order) != 0 || len(p.ahead) != 0 {
		t.Errorf("after d: cursor %q, order %v, ahead %v; want e, nothing left", p.run.Cursor, p.order, p.ahead)
	}
}
