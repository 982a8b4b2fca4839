package worker

import (
	"context"
	"strings"
	"sync"
)

// tenantLocks serialises the messages of one tenant within a worker: a
// keyed mutex whose entries live only while a message holds or waits for
// them. Across replicas the tenant's status row carries a lease instead
// (see claim).
type tenantLocks struct {
	mu sync.Mutex
	m  map[string]*tenantLock
}

type tenantLock struct {
	held chan struct{} // one slot: full while held
	refs int           // holders and waiters
}

// lock waits until tenant is free in this worker, or ctx is done. The
// returned function unlocks it; waited reports whether another message of
// the tenant held or waited for it first.
func (l *tenantLocks) lock(ctx context.Context, tenant string) (unlock func(), waited bool, err error) {
	key := strings.ToLower(tenant)
	l.mu.Lock()
	if l.m == nil {
		l.m = map[string]*tenantLock{}
	}
	e := l.m[key]
	if e == nil {
		e = &tenantLock{held: make(chan struct{}, 1)}
		l.m[key] = e
	}
	e.refs++
	waited = e.refs > 1
	l.mu.Unlock()
	select {
	case e.held <- struct{}{}:
		var once sync.Once
		return func() {
			once.Do(func() {
				<-e.held
				l.drop(key, e)
			})
		}, waited, nil
	case <-ctx.Done():
		l.drop(key, e)
		return nil, waited, ctx.Err()
	}
}

func (l *tenantLocks) drop(key string, e *tenantLock) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if e.refs--; e.refs == 0 {
		delete(l.m, key)
	}
}
