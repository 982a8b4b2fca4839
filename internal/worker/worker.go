package worker

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cpvrefresh/cpvrefresh/internal/cpv"
	"github.com/cpvrefresh/cpvrefresh/internal/cpvtype"
	"github.com/cpvrefresh/cpvrefresh/internal/queue"
	"github.com/cpvrefresh/cpvrefresh/internal/retry"
	"github.com/cpvrefresh/cpvrefresh/internal/store"
)

// Source is where refresh requests come from: a queue with at-least-once
// delivery that the worker settles one Delivery at a time. It is transport
// neutral: *queue.StorageQueue and *queue.ServiceBusQueue are both Sources
// (queue.Open returns either). A transport counts its own round trips
// (queue.WithTrips) and declares what each settlement costs (Features).
type Source interface {
	// Features says what the transport's operations cost on the wire.
	Features() queue.Features
	// Receive takes up to max messages without waiting; an empty slice
	// means the queue is empty.
	Receive(ctx context.Context, max int) ([]*queue.Delivery, error)
	// Extend keeps d invisible to other workers for visibility from now.
	Extend(ctx context.Context, d *queue.Delivery, visibility time.Duration) error
	// Complete deletes d: the work is done.
	Complete(ctx context.Context, d *queue.Delivery) error
	// Retry makes d visible again after delay, counting an attempt.
	Retry(ctx context.Context, d *queue.Delivery, delay time.Duration) error
	// Snooze makes d visible again after delay without counting an attempt.
	Snooze(ctx context.Context, d *queue.Delivery, delay time.Duration) error
	// Poison moves d to the poison (dead-letter) queue with reason.
	Poison(ctx context.Context, d *queue.Delivery, reason string) error
}

// Refresher reconciles one tenant with the manifest (*cpv.Engine).
type Refresher interface {
	Refresh(ctx context.Context, tenant string, opts cpv.Options) (cpv.Result, error)
}

// Results is where outcomes go (*store.Store): the tenant's status row, its
// history, the worker's heartbeats and the pause switch.
type Results interface {
	GetStatus(ctx context.Context, tenantID string) (store.Status, error)
	MarkRunningIf(ctx context.Context, tenantID, runID, requestID, worker string, at time.Time, etag string) (string, error)
	ClaimStatus(ctx context.Context, tenantID string, c store.Claim, etag string) (string, error)
	PutStatus(ctx context.Context, st store.Status) error
	// PutResultIf writes the status row and, when h is not nil, the
	// history row, in one request.
	PutResultIf(ctx context.Context, st store.Status, h *store.HistoryEntry) error
	RestoreStatus(ctx context.Context, st store.Status) error
	Heartbeat(ctx context.Context, w store.Worker) error
	Paused(ctx context.Context, component cpvtype.Component) (bool, error)
}

// Defaults for the zero values of Config.
const (
	DefaultConcurrency      = 16
	DefaultVisibility       = 60 * time.Second
	DefaultMessageTimeout   = 5 * time.Minute
	DefaultMaxAttempts      = 5
	DefaultRetryBase        = 15 * time.Second
	DefaultRetryMax         = 15 * time.Minute
	DefaultPollMax          = 5 * time.Second
	DefaultPauseCheck       = 5 * time.Second
	DefaultHeartbeat        = 15 * time.Second
	DefaultSettleTimeout    = 15 * time.Second
	DefaultMarkRunningAfter = 5 * time.Second
	// pollMin is the first wait after an empty receive; it doubles up to PollMax.
	pollMin = 200 * time.Millisecond
)

// Config tunes a Worker. Zero values take the defaults above.
type Config struct {
	// Concurrency is how many refreshes run at once.
	Concurrency int
	// ReceiveBatch is the most messages asked for per receive (at most
	// 32; default min(Concurrency, 32)). The worker never asks for more
	// than it has free slots, so it holds no message it cannot start.
	ReceiveBatch int
	// Visibility is the queue's visibility timeout (or lock duration). A
	// message at work is extended every Visibility/2.
	Visibility time.Duration
	// MessageTimeout bounds one refresh; a refresh that outlives it is a
	// retryable failure.
	MessageTimeout time.Duration
	// MaxAttempts is the delivery on which a retryable failure poisons the
	// message instead of retrying it.
	MaxAttempts int
	// RetryBase and RetryMax shape the backoff after a retryable failure:
	// a random delay under RetryBase * 2^(attempt-1), capped at RetryMax
	// (full jitter, package retry).
	RetryBase, RetryMax time.Duration
	// PollMax is the longest wait between receives while the queue is empty
	// or failing.
	PollMax time.Duration
	// PauseCheck is how often the pause switch is read.
	PauseCheck time.Duration
	// HeartbeatEvery is how often the worker records a heartbeat.
	HeartbeatEvery time.Duration
	// SettleTimeout bounds the writes that follow a refresh (status,
	// history, settling the message), which run even when shutdown has
	// cancelled the refresh's context.
	SettleTimeout time.Duration
	// MarkRunningAfter is how long a refresh runs before its status row is
	// marked "running" (default 5s; negative: at once). A refresh that
	// writes is marked by its lease claim at its first write anyway; this
	// mark is for one still reading. The UI polls every 1.5–3 s and the
	// dispatcher's listing lags the store by up to 2 s, so a shorter mark
	// is seldom seen, while each costs a table write: a refresh of an
	// already-correct tenant ends sooner and costs one status write, not
	// two (see the package documentation).
	MarkRunningAfter time.Duration
	// WorkerID names this replica in status rows and heartbeats (default Host).
	WorkerID string
	// Host is the machine's name in heartbeats (default os.Hostname).
	Host string
	// ManifestVersion is the version of the manifest the Refresher applies
	// (cpv.Manifest.Version); coalescing compares it. Required.
	ManifestVersion string
	Logger          *slog.Logger
	// Metrics are the Prometheus collectors (NewMetrics); unserved ones when nil.
	Metrics *Metrics
	// Now is the clock (time.Now when nil).
	Now func() time.Time
}

func (c *Config) defaults() error {
	if c.Concurrency == 0 {
		c.Concurrency = DefaultConcurrency
	}
	if c.ReceiveBatch == 0 {
		c.ReceiveBatch = min(c.Concurrency, queue.MaxReceive)
	}
	if c.Visibility == 0 {
		c.Visibility = DefaultVisibility
	}
	if c.MessageTimeout == 0 {
		c.MessageTimeout = DefaultMessageTimeout
	}
	if c.MaxAttempts == 0 {
		c.MaxAttempts = DefaultMaxAttempts
	}
	if c.RetryBase == 0 {
		c.RetryBase = DefaultRetryBase
	}
	if c.RetryMax == 0 {
		c.RetryMax = max(DefaultRetryMax, c.RetryBase)
	}
	if c.PollMax == 0 {
		c.PollMax = DefaultPollMax
	}
	if c.PauseCheck == 0 {
		c.PauseCheck = DefaultPauseCheck
	}
	if c.HeartbeatEvery == 0 {
		c.HeartbeatEvery = DefaultHeartbeat
	}
	if c.SettleTimeout == 0 {
		c.SettleTimeout = DefaultSettleTimeout
	}
	if c.MarkRunningAfter == 0 {
		c.MarkRunningAfter = DefaultMarkRunningAfter
	}
	if c.Host == "" {
		c.Host, _ = os.Hostname()
		if c.Host == "" {
			c.Host = "worker"
		}
	}
	if c.WorkerID == "" {
		c.WorkerID = c.Host
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Metrics == nil {
		c.Metrics = newUnregisteredMetrics()
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	var errs []error
	if c.Concurrency < 1 {
		errs = append(errs, fmt.Errorf("concurrency %d: want at least 1", c.Concurrency))
	}
	if c.ReceiveBatch < 1 || c.ReceiveBatch > queue.MaxReceive {
		errs = append(errs, fmt.Errorf("receive batch %d: want 1..%d", c.ReceiveBatch, queue.MaxReceive))
	}
	if c.Visibility < 2*time.Second {
		errs = append(errs, fmt.Errorf("visibility %s: want at least 2s", c.Visibility))
	}
	if c.MessageTimeout < 0 || c.RetryBase < 0 || c.RetryMax < c.RetryBase || c.PollMax < 0 ||
		c.PauseCheck < 0 || c.HeartbeatEvery < 0 || c.SettleTimeout < 0 {
		errs = append(errs, errors.New("durations must be positive, and RetryMax at least RetryBase"))
	}
	if c.MaxAttempts < 1 {
		errs = append(errs, fmt.Errorf("max attempts %d: want at least 1", c.MaxAttempts))
	}
	if c.ManifestVersion == "" {
		errs = append(errs, errors.New("manifest version is required (coalescing compares it)"))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("worker: config: %w", err)
	}
	return nil
}

// Worker consumes refresh requests: it receives messages, runs up to
// Concurrency refreshes at once, writes each result to the store and then
// settles the message. See the package documentation for the life of a
// message and the failure story.
type Worker struct {
	cfg     Config
	src     Source    // counted (countedSource)
	refresh Refresher // counted (countedRefresher)
	results Results   // counted (countedResults)
	plans   Plans     // the Results, when it keeps plans (plan messages)
	costs   queue.Costs
	log     *slog.Logger
	met     *Metrics

	stop     chan struct{} // closed by Shutdown: receive no more
	stopOnce sync.Once
	done     chan struct{} // closed when Run returns
	started  atomic.Bool

	mu         sync.Mutex
	cancelWork context.CancelCauseFunc // cancels in-flight refreshes (set by Run)

	// owner names this worker instance in tenant leases (WorkerID and a
	// random suffix: two replicas with one WorkerID are still two owners).
	owner   string
	tenants tenantLocks

	startedAt time.Time
	inFlight  atomic.Int64
	processed atomic.Int64
	paused    atomic.Bool
	queueOK   probe
	storeOK   probe
}

// errShutdown is the cause of the in-flight refreshes' cancellation when
// the grace period of a shutdown has run out.
var errShutdown = errors.New("worker: shutdown grace period over")

// New returns a Worker reading from src, refreshing with refresh and
// writing to results.
func New(cfg Config, src Source, refresh Refresher, results Results) (*Worker, error) {
	if src == nil || refresh == nil || results == nil {
		return nil, errors.New("worker: a source, a refresher and a results store are required")
	}
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	w := &Worker{
		cfg:   cfg,
		costs: src.Features().Costs,
		log:   cfg.Logger.With("worker", cfg.WorkerID),
		met:   cfg.Metrics,
		stop:  make(chan struct{}),
		done:  make(chan struct{}),
		owner: cfg.WorkerID + "/" + rand.Text()[:8],
	}
	w.plans, _ = results.(Plans)
	w.src = countedSource{src: src, met: cfg.Metrics, probe: w.queueCall}
	w.results = countedResults{res: results, met: cfg.Metrics, probe: w.storeCall}
	w.refresh = countedRefresher{r: refresh, met: cfg.Metrics}
	return w, nil
}

// Run receives and processes messages until ctx is done or Shutdown is
// called, then waits for the messages in flight to settle. When ctx is
// done the refreshes in flight are cancelled at once and their messages
// released; Shutdown gives them a grace period first. Run returns nil on
// either kind of stop.
func (w *Worker) Run(ctx context.Context) error {
	if !w.started.CompareAndSwap(false, true) {
		return errors.New("worker: Run called twice")
	}
	defer close(w.done)
	workCtx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	w.mu.Lock()
	w.cancelWork = cancel
	w.mu.Unlock()
	w.startedAt = w.cfg.Now()

	w.log.InfoContext(ctx, "worker started", "concurrency", w.cfg.Concurrency, "receive_batch", w.cfg.ReceiveBatch,
		"visibility", w.cfg.Visibility, "max_attempts", w.cfg.MaxAttempts, "manifest_version", w.cfg.ManifestVersion)

	hbCtx, stopHeartbeats := context.WithCancel(workCtx)
	var background sync.WaitGroup
	background.Go(func() { w.heartbeats(hbCtx) })

	var handlers sync.WaitGroup
	w.receive(ctx, workCtx, &handlers)
	handlers.Wait()
	stopHeartbeats()
	background.Wait()

	// A last heartbeat shows the replica idle on the backend page.
	hctx, hcancel := w.settleContext(ctx)
	w.heartbeat(hctx)
	hcancel()
	w.log.InfoContext(ctx, "worker stopped", "processed", w.processed.Load())
	return nil
}

// Shutdown stops receiving, gives the refreshes in flight grace to finish,
// then cancels them (their messages are released to another replica) and
// returns when Run has returned. Calling it before or without Run only
// stops a later Run from receiving.
func (w *Worker) Shutdown(grace time.Duration) {
	w.stopOnce.Do(func() { close(w.stop) })
	if !w.started.Load() {
		return
	}
	w.log.Info("worker stopping", "grace", grace, "in_flight", w.inFlight.Load())
	t := time.NewTimer(grace)
	defer t.Stop()
	select {
	case <-w.done:
		return
	case <-t.C:
	}
	w.mu.Lock()
	cancel := w.cancelWork
	w.mu.Unlock()
	if cancel != nil {
		w.log.Warn("grace period over: releasing messages in flight", "in_flight", w.inFlight.Load())
		cancel(errShutdown)
	}
	<-w.done
}

// stopping reports whether the worker should receive no more.
func (w *Worker) stopping(ctx context.Context) bool {
	select {
	case <-w.stop:
		return true
	case <-ctx.Done():
		return true
	default:
		return false
	}
}

// wait sleeps for d, or less if the worker stops; false if it stopped.
func (w *Worker) wait(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-w.stop:
		return false
	case <-ctx.Done():
		return false
	}
}

// receive is the receive loop: it asks for as many messages as it has free
// slots, hands each to a handler goroutine, and backs off while the queue is
// empty, failing or paused. Which queue a message comes from is the
// source's choice: queue.Prioritized gives interactive work first.
func (w *Worker) receive(ctx, workCtx context.Context, handlers *sync.WaitGroup) {
	slots := make(chan struct{}, w.cfg.Concurrency)
	var poll time.Duration
	var lastPauseCheck time.Time
	for !w.stopping(ctx) {
		if now := w.cfg.Now(); lastPauseCheck.IsZero() || now.Sub(lastPauseCheck) >= w.cfg.PauseCheck {
			lastPauseCheck = now
			w.checkPause(ctx)
		}
		if w.paused.Load() {
			if !w.wait(ctx, w.cfg.PauseCheck) {
				return
			}
			continue
		}
		// Wait for one free slot, then take every other free one (up to a batch).
		select {
		case slots <- struct{}{}:
		case <-w.stop:
			return
		case <-ctx.Done():
			return
		}
		n := 1
	fill:
		for n < w.cfg.ReceiveBatch {
			select {
			case slots <- struct{}{}:
				n++
			default:
				break fill
			}
		}
		ds, err := w.src.Receive(ctx, n)
		for range n - len(ds) {
			<-slots
		}
		if err != nil && len(ds) > 0 {
			// One queue of two failed (queue.Prioritized): the other's
			// messages are worked all the same.
			w.log.WarnContext(ctx, "receive failed in part", "error", err, "received", len(ds))
		} else if err != nil {
			if ctx.Err() != nil {
				return
			}
			poll = nextPoll(poll, w.cfg.PollMax)
			w.log.WarnContext(ctx, "receive failed", "error", err, "retry_in", poll)
			if !w.wait(ctx, poll) {
				return
			}
			continue
		}
		if w.stopping(ctx) && len(ds) > 0 {
			// Received while stopping: hand them straight back.
			for _, d := range ds {
				handlers.Go(func() {
					defer func() { <-slots }()
					w.releaseUnstarted(workCtx, d)
				})
			}
			return
		}
		for _, d := range ds {
			handlers.Go(func() {
				defer func() { <-slots }()
				w.handle(workCtx, d)
			})
		}
		if len(ds) > 0 {
			poll = 0
			continue
		}
		poll = nextPoll(poll, w.cfg.PollMax)
		if !w.wait(ctx, poll) {
			return
		}
	}
}

// nextPoll doubles the wait between empty receives, from pollMin up to max.
func nextPoll(cur, limit time.Duration) time.Duration {
	next := max(cur*2, pollMin)
	return min(next, limit)
}

// checkPause reads the pause switch. A failed read keeps the last answer.
func (w *Worker) checkPause(ctx context.Context) {
	p, err := w.results.Paused(ctx, cpvtype.ComponentWorkers)
	if err != nil {
		if ctx.Err() == nil {
			w.log.WarnContext(ctx, "pause switch unreadable", "error", err)
		}
		return
	}
	if was := w.paused.Swap(p); was != p {
		if p {
			w.log.InfoContext(ctx, "workers paused: receiving stopped", "in_flight", w.inFlight.Load())
		} else {
			w.log.InfoContext(ctx, "workers resumed")
		}
	}
}

// heartbeats records the replica's heartbeat at once and then every
// HeartbeatEvery until ctx is done.
func (w *Worker) heartbeats(ctx context.Context) {
	w.heartbeat(ctx)
	t := time.NewTicker(w.cfg.HeartbeatEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			w.heartbeat(ctx)
		}
	}
}

func (w *Worker) heartbeat(ctx context.Context) {
	err := w.results.Heartbeat(ctx, store.Worker{
		ID:        w.cfg.WorkerID,
		Host:      w.cfg.Host,
		Started:   w.startedAt,
		Seen:      w.cfg.Now(),
		InFlight:  int(w.inFlight.Load()),
		Processed: int(w.processed.Load()),
	})
	if err != nil && ctx.Err() == nil {
		w.log.WarnContext(ctx, "heartbeat failed", "error", err)
	}
}

// settleContext is for the writes after a refresh: not cancelled with the
// work (a finished result is always recorded), but bounded.
func (w *Worker) settleContext(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), w.cfg.SettleTimeout)
}

// backoff is the delay after a retryable failure on the given attempt
// (attempts count from 1): retry.Backoff's full jitter under RetryBase *
// 2^(attempt-1), capped at RetryMax.
func (w *Worker) backoff(attempt int) time.Duration {
	return retry.Backoff{Base: w.cfg.RetryBase, Max: w.cfg.RetryMax}.Delay(max(attempt, 1))
}
