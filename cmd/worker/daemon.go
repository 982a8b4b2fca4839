package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/cpvrefresh/cpvrefresh/internal/cli"
	"github.com/cpvrefresh/cpvrefresh/internal/config"
	"github.com/cpvrefresh/cpvrefresh/internal/storage"
	"github.com/cpvrefresh/cpvrefresh/internal/worker"
)

// runDaemon runs the worker until SIGTERM or SIGINT: the first signal (ctx
// done) stops receiving and gives the refreshes in flight the shutdown
// grace (less a reserve for releasing what is left), a second one
// (cli.HardStop) stops at once.
func runDaemon(ctx context.Context, e *env) error {
	cfg := &e.cfg
	log, err := newLogger(e)
	if err != nil {
		return cli.Invalid(err)
	}
	log.Info("worker starting", config.Redacted(cfg)...)

	m, err := loadManifest(cfg.ManifestFile)
	if err != nil {
		return cli.Invalid(err)
	}
	build, partner, kv, err := newEngineBuilder(ctx, cfg, log)
	if err != nil {
		return cli.Invalid(fmt.Errorf("engine not built: %w", err))
	}
	defer runVault(ctx, kv)()
	backend, err := newBackend(cfg)
	if err != nil {
		return cli.Invalid(err)
	}
	q, err := backend.OpenQueue()
	if err != nil {
		return cli.Invalid(fmt.Errorf("queue not opened: %w", err))
	}
	defer func() {
		if err := storage.CloseQueue(q); err != nil {
			log.Warn("queue not closed", "error", err)
		}
	}()

	startCtx, cancelStart := context.WithTimeout(ctx, time.Minute)
	defer cancelStart()
	if err := q.Ensure(startCtx); err != nil {
		return fmt.Errorf("queue %s not reachable: %w", cfg.Queue, err)
	}
	st, err := backend.OpenStore(startCtx)
	if err != nil {
		return fmt.Errorf("store not reachable: %w", err)
	}

	engine, err := newEffectiveEngine(startCtx, &effectiveEngine{base: m, build: build, partner: partner, extras: st, profiles: st,
		followApp: cfg.FollowApp, appID: cfg.ClientID, log: log})
	if err != nil {
		return cli.Invalid(fmt.Errorf("engine not built: %w", err))
	}
	if cfg.ManifestReload > 0 {
		rctx, stopReload := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() {
			defer close(done)
			engine.reloadEvery(rctx, cfg.ManifestReload)
		}()
		defer func() { stopReload(); <-done }()
	}

	reg := prometheus.NewRegistry()
	if err := reg.Register(collectors.NewGoCollector()); err != nil {
		return fmt.Errorf("metrics not registered: %w", err)
	}
	if err := reg.Register(collectors.NewProcessCollector(collectors.ProcessCollectorOpts{})); err != nil {
		return fmt.Errorf("metrics not registered: %w", err)
	}
	metrics, err := worker.NewMetrics(reg)
	if err != nil {
		return fmt.Errorf("metrics not registered: %w", err)
	}
	host, _ := os.Hostname()
	w, err := worker.New(worker.Config{
		Concurrency:     cfg.Concurrency,
		ReceiveBatch:    cfg.ReceiveBatch,
		Visibility:      cfg.Visibility,
		MessageTimeout:  cfg.MessageTimeout,
		MaxAttempts:     cfg.MaxAttempts,
		RetryBase:       cfg.RetryBase,
		RetryMax:        cfg.RetryMax,
		PollMax:         cfg.PollMax,
		WorkerID:        cfg.WorkerID,
		Host:            host,
		ManifestVersion: engine.Version(),
		Logger:          log,
		Metrics:         metrics,
	}, q, engine, st)
	if err != nil {
		return cli.Invalid(fmt.Errorf("worker not built: %w", err))
	}

	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", cfg.Listen, err)
	}
	srv := &http.Server{Handler: w.Handler(reg), ReadHeaderTimeout: 5 * time.Second}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("health and metrics server stopped", "error", err)
		}
	}()
	log.Info("health and metrics listening", "address", ln.Addr().String())

	// The refreshes run under HardStop: the first signal leaves them their
	// grace, the second cancels them.
	hard := cli.HardStop(ctx)
	runCtx, cancelRun := context.WithCancel(hard)
	defer cancelRun()
	done := make(chan error, 1)
	go func() { done <- w.Run(runCtx) }()

	var runErr error
	select {
	case runErr = <-done:
	case <-ctx.Done():
		grace := workGrace(cfg.ShutdownGrace)
		log.Info("stopping", "cause", context.Cause(ctx).Error(), "grace", grace)
		stopped := make(chan struct{})
		go func() {
			select {
			case <-hard.Done():
				log.Warn("stopping now", "cause", context.Cause(hard).Error())
			case <-stopped:
			}
		}()
		w.Shutdown(grace)
		runErr = <-done
		close(stopped)
	}

	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
	defer cancel()
	_ = srv.Shutdown(sctx)
	if runErr != nil {
		return fmt.Errorf("worker failed: %w", runErr)
	}
	return nil
}

// workGrace is the part of the shutdown grace the refreshes in flight may
// use; the rest is kept for releasing their messages and writing the last
// heartbeat, so the process exits within the grace.
func workGrace(grace time.Duration) time.Duration {
	reserve := min(grace/5, 5*time.Second)
	return grace - reserve
}
