package testenv

import "sync"

// Strings collects strings from concurrent callers, e.g. the refresh tokens a
// credential hands to its OnRefreshToken callback.
type Strings struct {
	mu   sync.Mutex
	list []string
}

// Add records s.
func (r *Strings) Add(s string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.list = append(r.list, s)
}

// All returns a copy of what was recorded, in order.
func (r *Strings) All() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.list...)
}
