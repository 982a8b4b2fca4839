package main

import (
	"context"
	"errors"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/cpvrefresh/cpvrefresh/internal/config"
	"github.com/cpvrefresh/cpvrefresh/internal/worker"
)

// runDaemon runs the worker until SIGTERM or SIGINT: the first signal stops
// receiving and gives the refreshes in flight the shutdown grace (less a
// reserve for releasing what is left), a second one stops at once.
func runDaemon(ctx context.Context, e *env) int {
	cfg := &e.cfg
	log, err := newLogger(e)
	if err != nil {
		e.fail(err)
		return exitConfig
	}
	log.Info("worker starting", config.Redacted(cfg)...)

	m, err := loadManifest(cfg.ManifestFile)
	if err != nil {
		log.Error("manifest not loaded", "error", err)
		return exitConfig
	}
	engine, err := newEngine(cfg, m, log)
	if err != nil {
		log.Error("engine not built", "error", err)
		return exitConfig
	}
	q, err := openQueue(cfg)
	if err != nil {
		log.Error("queue not opened", "error", err)
		return exitConfig
	}
	defer func() {
		if err := closeQueue(q); err != nil {
			log.Warn("queue not closed", "error", err)
		}
	}()

	startCtx, cancelStart := context.WithTimeout(ctx, time.Minute)
	defer cancelStart()
	if err := q.Ensure(startCtx); err != nil {
		log.Error("queue not reachable", "queue", cfg.Queue, "error", err)
		return exitFailure
	}
	st, err := openStore(startCtx, cfg)
	if err != nil {
		log.Error("store not reachable", "error", err)
		return exitFailure
	}

	reg := prometheus.NewRegistry()
	if err := reg.Register(collectors.NewGoCollector()); err != nil {
		log.Error("metrics not registered", "error", err)
		return exitFailure
	}
	if err := reg.Register(collectors.NewProcessCollector(collectors.ProcessCollectorOpts{})); err != nil {
		log.Error("metrics not registered", "error", err)
		return exitFailure
	}
	metrics, err := worker.NewMetrics(reg)
	if err != nil {
		log.Error("metrics not registered", "error", err)
		return exitFailure
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
		ManifestVersion: m.Version(),
		Logger:          log,
		Metrics:         metrics,
	}, q, engine, st)
	if err != nil {
		log.Error("worker not built", "error", err)
		return exitConfig
	}

	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		log.Error("listen failed", "address", cfg.Listen, "error", err)
		return exitFailure
	}
	srv := &http.Server{Handler: w.Handler(reg), ReadHeaderTimeout: 5 * time.Second}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("health and metrics server stopped", "error", err)
		}
	}()
	log.Info("health and metrics listening", "address", ln.Addr().String())

	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	defer signal.Stop(sigs)
	runCtx, cancelRun := context.WithCancel(ctx)
	defer cancelRun()
	done := make(chan error, 1)
	go func() { done <- w.Run(runCtx) }()

	var runErr error
	select {
	case runErr = <-done:
	case sig := <-sigs:
		grace := workGrace(cfg.ShutdownGrace)
		log.Info("signal received: stopping", "signal", sig.String(), "grace", grace)
		stopped := make(chan struct{})
		go func() {
			select {
			case sig := <-sigs:
				log.Warn("second signal: stopping now", "signal", sig.String())
				cancelRun()
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
		log.Error("worker failed", "error", runErr)
		return exitFailure
	}
	return exitOK
}

// workGrace is the part of the shutdown grace the refreshes in flight may
// use; the rest is kept for releasing their messages and writing the last
// heartbeat, so the process exits within the grace.
func workGrace(grace time.Duration) time.Duration {
	reserve := min(grace/5, 5*time.Second)
	return grace - reserve
}
