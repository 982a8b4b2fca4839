package bench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// gate is a reverse proxy in front of Azurite's queue service that lets
// the first `after` enqueue requests (POST .../messages) through and holds
// every later one until it is opened or its client goes away. Put between
// the dispatcher and the queue, it stops a run exactly mid-enqueue, so the
// dispatcher can be killed there deterministically. A held request that
// loses its client is never forwarded: its message is not enqueued.
type gate struct {
	after  int64
	passed atomic.Int64
	// dropped counts held requests whose client went away (never forwarded).
	dropped atomic.Int64
	proxy   *httputil.ReverseProxy
	srv     *http.Server
	url     string

	heldOnce sync.Once
	held     chan struct{} // closed when the first request is held
	openOnce sync.Once
	open     chan struct{} // closed by Open
}

// startGate proxies target (http://127.0.0.1:port) on a free port.
func startGate(target string, after int) (*gate, error) {
	u, err := url.Parse(target)
	if err != nil {
		return nil, fmt.Errorf("bench: gate: %w", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("bench: gate: %w", err)
	}
	g := &gate{after: int64(after), proxy: httputil.NewSingleHostReverseProxy(u),
		held: make(chan struct{}), open: make(chan struct{}), url: "http://" + ln.Addr().String()}
	// The shared-key signature covers the path and x-ms-* headers, not the
	// host, so requests stay valid through the proxy.
	// A held request whose client died ends in a proxy error: expected here.
	g.proxy.ErrorLog = log.New(io.Discard, "", 0)
	g.srv = &http.Server{Handler: g, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = g.srv.Serve(ln) }()
	return g, nil
}

func (g *gate) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method == http.MethodPost && strings.HasSuffix(r.URL.Path, "/messages") && g.passed.Add(1) > g.after {
		// Read the (small) body first: only then does the server watch the
		// connection and cancel the request's context when its client dies.
		body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
		g.heldOnce.Do(func() { close(g.held) })
		select {
		case <-g.open:
		case <-r.Context().Done():
			g.dropped.Add(1)
			return
		}
	}
	g.proxy.ServeHTTP(w, r)
}

// Held is closed once the gate holds its first request.
func (g *gate) Held() <-chan struct{} { return g.held }

// Open lets every held and later request through.
func (g *gate) Open() { g.openOnce.Do(func() { close(g.open) }) }

// Close opens the gate and stops the proxy.
func (g *gate) Close() error {
	g.Open()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := g.srv.Shutdown(ctx); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("bench: gate: %w", err)
	}
	return nil
}
