package notify

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"
)

// Condition is something that is either wrong (Red) or fine: a check, the
// credential's expiry, the webhook registration. A digest tells when one
// turns red and when it turns green again, not while it stays either.
type Condition struct {
	// Key names the condition, stable between reads and unique across
	// sources (e.g. "credential-expiry", "check-gdap-roles").
	Key string
	Red bool
	// Text says what is wrong (or, green, what is fine).
	Text string
	// Advice says what to do about a red condition.
	Advice string
}

// Source reads conditions for a Notifier. The conditions Read returns are
// compared with the states last notified; a condition a source stops
// returning is left as it was, and so are all of a source whose Read
// fails (a source that cannot be read changes nothing).
type Source struct {
	// Name names the source in logs.
	Name string
	// Every is the least time between two reads; between them the last
	// conditions read are used (every sweep reads when 0).
	Every time.Duration
	Read  func(ctx context.Context) ([]Condition, error)
}

// sourceState is a Source with its last read.
type sourceState struct {
	Source
	read  time.Time
	conds []Condition
	ok    bool // conds are from a successful read
}

// conditionPrefix starts a condition's subject among the notified states.
const conditionPrefix = "cond-"

// Condition states, as stored.
const (
	stateRed   = "red"
	stateGreen = "green"
)

// conditionSubject is c's key in the notified states, with the characters
// the Table service refuses in keys replaced.
func conditionSubject(key string) string {
	return conditionPrefix + strings.Map(func(r rune) rune {
		if r == '/' || r == '\\' || r == '#' || r == '?' || r < 0x20 || (r >= 0x7f && r <= 0x9f) {
			return '_'
		}
		return r
	}, key)
}

// conditions reads the sources that are due and returns every condition
// known, sorted by key; a failed read is logged and keeps the source's
// previous conditions (none after a first failure).
func (n *Notifier) conditions(ctx context.Context) []Condition {
	n.mu.Lock()
	sources := slices.Clone(n.sources)
	n.mu.Unlock()
	var out []Condition
	now := n.cfg.Now()
	for _, s := range sources {
		if !s.ok || s.Every == 0 || now.Sub(s.read) >= s.Every {
			conds, err := s.Read(ctx)
			if err != nil {
				n.log.WarnContext(ctx, "notification source not read", "source", s.Name, "error", err)
			} else {
				s.read, s.conds, s.ok = now, conds, true
			}
		}
		out = append(out, s.conds...)
	}
	for _, c := range out {
		v := 0.0
		if c.Red {
			v = 1
		}
		n.red.WithLabelValues(c.Key).Set(v)
	}
	slices.SortStableFunc(out, func(a, b Condition) int { return strings.Compare(a.Key, b.Key) })
	return out
}

// AddSource adds a source of conditions; call it before Run.
func (n *Notifier) AddSource(s Source) error {
	if s.Name == "" || s.Read == nil || s.Every < 0 {
		return fmt.Errorf("notify: source %q: a name, a Read function and a non-negative Every are required", s.Name)
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	n.sources = append(n.sources, &sourceState{Source: s})
	return nil
}
