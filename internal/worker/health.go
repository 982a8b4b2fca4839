package worker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// probe remembers how the latest calls to one dependency went.
type probe struct {
	mu      sync.Mutex
	lastOK  time.Time
	lastErr string // of the latest call; empty when it succeeded
}

func (p *probe) record(now time.Time, err error) {
	if errors.Is(err, context.Canceled) {
		return // our own cancellation says nothing about the dependency
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if err != nil {
		p.lastErr = err.Error()
		return
	}
	p.lastOK, p.lastErr = now, ""
}

// check says why the dependency is not ready: its latest call failed, or no
// call succeeded within window.
func (p *probe) check(now time.Time, window time.Duration) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	switch {
	case p.lastErr != "":
		return errors.New(p.lastErr)
	case p.lastOK.IsZero():
		return errors.New("not reached yet")
	case now.Sub(p.lastOK) > window:
		return fmt.Errorf("not reached since %s", p.lastOK.UTC().Format(time.RFC3339))
	}
	return nil
}

func (w *Worker) queueCall(err error) { w.queueOK.record(w.cfg.Now(), err) }
func (w *Worker) storeCall(err error) { w.storeOK.record(w.cfg.Now(), err) }

// readyWindow is how recent a successful call must be: several receive
// polls, pause checks and heartbeats.
func (w *Worker) readyWindow() time.Duration {
	return max(30*time.Second, 3*max(w.cfg.PollMax, w.cfg.PauseCheck, w.cfg.HeartbeatEvery))
}

// Ready reports whether the worker has reached the store and the queue
// recently and their latest calls succeeded. While paused the worker does
// not receive, so only the store counts.
func (w *Worker) Ready() error {
	now, window := w.cfg.Now(), w.readyWindow()
	var errs []error
	if err := w.storeOK.check(now, window); err != nil {
		errs = append(errs, fmt.Errorf("store: %w", err))
	}
	if !w.paused.Load() {
		if err := w.queueOK.check(now, window); err != nil {
			errs = append(errs, fmt.Errorf("queue: %w", err))
		}
	}
	return errors.Join(errs...)
}

// Handler serves /healthz (the process is alive), /readyz (the store and
// the queue were reachable recently: 200 or 503 with the reasons) and
// /metrics (the Prometheus registry g).
func (w *Worker) Handler(g prometheus.Gatherer) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(rw http.ResponseWriter, _ *http.Request) {
		rw.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = rw.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", func(rw http.ResponseWriter, _ *http.Request) {
		body := struct {
			Ready    bool   `json:"ready"`
			Paused   bool   `json:"paused"`
			InFlight int64  `json:"inFlight"`
			Error    string `json:"error,omitempty"`
		}{Ready: true, Paused: w.paused.Load(), InFlight: w.inFlight.Load()}
		code := http.StatusOK
		if err := w.Ready(); err != nil {
			body.Ready, body.Error, code = false, err.Error(), http.StatusServiceUnavailable
		}
		rw.Header().Set("Content-Type", "application/json")
		rw.WriteHeader(code)
		_ = json.NewEncoder(rw).Encode(body)
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(g, promhttp.HandlerOpts{}))
	return mux
}
