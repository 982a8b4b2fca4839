package dispatcher

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"path"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/cpvrefresh/cpvrefresh/internal/cpvtype"
)

// Readiness: checked with a short timeout, the answer kept for a while.
const (
	readyTimeout = 2 * time.Second
	readyTTL     = 5 * time.Second
)

// Handler serves the API, the webhooks, health, metrics (unless
// Config.SeparateMetrics) and the UI.
func (d *Dispatcher) Handler() http.Handler { return d.handler }

// MetricsHandler serves /metrics alone, for a listener of its own (see
// Config.SeparateMetrics).
func (d *Dispatcher) MetricsHandler() http.Handler { return d.mhandler }

// route is one method of an API path.
type route struct {
	method string
	role   Role // the least role allowed
	h      func(http.ResponseWriter, *http.Request, principal)
}

// get is a read: every role may.
func get(h func(http.ResponseWriter, *http.Request, principal)) route {
	return route{method: http.MethodGet, role: RoleReader, h: h}
}

// post is an operation (refresh, reset, pause): Operator and Admin may.
func post(h func(http.ResponseWriter, *http.Request, principal)) route {
	return route{method: http.MethodPost, role: RoleOperator, h: h}
}

// admin makes rt a settings route: only Admin may.
func admin(rt route) route {
	rt.role = RoleAdmin
	return rt
}

func (d *Dispatcher) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", d.methods(http.MethodGet, func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	}))
	mux.HandleFunc("/readyz", d.methods(http.MethodGet, d.handleReady))
	if d.cfg.SeparateMetrics {
		mux.HandleFunc("/metrics", func(w http.ResponseWriter, r *http.Request) {
			writeError(w, http.StatusNotFound, "notFound", "metrics are served on their own listener")
		})
	} else {
		mux.HandleFunc("/metrics", d.serveMetrics())
	}
	mux.HandleFunc("/webhooks/partnercenter", d.methods(http.MethodPost, d.handleWebhook))
	mux.HandleFunc("/auth/config", d.methods(http.MethodGet, d.handleAuthConfig))
	mux.HandleFunc("/auth/login", d.methods(http.MethodGet, d.handleLogin))
	mux.HandleFunc("/auth/callback", d.methods(http.MethodGet, d.handleCallback))
	mux.HandleFunc("/auth/logout", d.methods(http.MethodPost, d.handleLogout))

	d.api(mux, "/api/tenants", get(d.handleListTenants))
	d.api(mux, "/api/tenants/{id}", get(d.handleGetTenant))
	d.api(mux, "/api/tenants/{id}/refresh", post(d.handleTenantOp(false)))
	d.api(mux, "/api/tenants/{id}/reset", post(d.handleTenantOp(true)))
	d.api(mux, "/api/tenants/{id}/exclude", admin(post(d.handleExclusion(true))))
	d.api(mux, "/api/tenants/{id}/include", admin(post(d.handleExclusion(false))))
	d.api(mux, "/api/refresh", post(d.handleRefreshAll))
	d.api(mux, "/api/runs", get(d.handleListRuns))
	d.api(mux, "/api/runs/{id}", get(d.handleGetRun))
	d.api(mux, "/api/charts", get(d.handleCharts))
	d.api(mux, "/api/backend", get(d.handleBackend))
	d.api(mux, "/api/credential", get(d.handleCredential))
	d.api(mux, "/api/credential/rotate", admin(post(d.handleRotate)))
	d.api(mux, "/api/pause", post(d.handlePause))
	d.api(mux, "/api/events", post(d.handleEvents))
	d.api(mux, "/api/poison", get(d.handleListPoison))
	d.api(mux, "/api/poison/redrive", post(d.handleRedriveAll))
	d.api(mux, "/api/poison/{id}/redrive", post(d.handlePoisonAction(true)))
	d.api(mux, "/api/poison/{id}/delete", post(d.handlePoisonAction(false)))
	d.api(mux, "/api/activity", get(d.handleActivity))
	d.api(mux, "/api/me", get(d.handleMe))
	d.api(mux, "/api/settings", admin(get(d.handleSettings)))
	if d.cfg.Permissions.Extras != nil {
		d.api(mux, "/api/permissions", get(d.handleListPermissions), admin(post(d.handleAddPermission)))
		d.api(mux, "/api/permissions/reset", admin(post(d.handleResetPermissions)))
		d.api(mux, "/api/permissions/{key}", admin(del(d.handleRemovePermission)))
	}
	if d.cfg.Permissions.Profiles != nil && d.cfg.Permissions.Publisher != nil {
		d.api(mux, "/api/profiles", get(d.handleListProfiles))
		d.api(mux, "/api/profiles/{name}", admin(post(d.handlePutProfile)), admin(del(d.handleDeleteProfile)))
		d.api(mux, "/api/tenants/{id}/profile", admin(post(d.handleTenantProfile)))
	}
	if d.cfg.Permissions.Plans != nil {
		d.api(mux, "/api/tenants/{id}/plan", get(d.handleGetPlan), post(d.handleRequestPlan))
	}
	d.api(mux, "/api/webhook/registration", admin(get(d.handleGetRegistration)), admin(post(d.handleRegister)))
	d.api(mux, "/api/webhook/test", admin(post(d.handleWebhookTest)))
	d.notifyRoutes(mux)
	d.api(mux, "/api/checks", get(d.handleListChecks))
	d.api(mux, "/api/checks/run", post(d.handleRunChecks))
	// The CIPP front end's shapes. It sends POST; a GET (a link followed, a
	// prefetch) must not enqueue, so it is answered 405.
	d.api(mux, "/api/ExecCPVPermissions", post(d.handleCIPPPermissions))
	d.api(mux, "/api/ExecCPVRefresh", post(d.handleCIPPRefresh))
	d.api(mux, "/api/ExecExcludeTenant", admin(post(d.handleCIPPExclude)))
	mux.HandleFunc("/api/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, "notFound", "no such API route")
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if d.cfg.UI != nil {
			d.cfg.UI.ServeHTTP(w, r)
			return
		}
		writeError(w, http.StatusNotFound, "notFound", "no such route")
	})
	return d.instrument(canonical(d.crossOrigin(mux)))
}

// crossOrigin refuses (403) a state-changing request a browser sent from
// another site (Sec-Fetch-Site, or Origin against Host), whatever cookie
// it carries; clients that are not browsers send neither header and pass.
func (d *Dispatcher) crossOrigin(next http.Handler) http.Handler {
	cop := http.NewCrossOriginProtection()
	cop.SetDenyHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		d.log.InfoContext(r.Context(), "cross-origin request refused", "method", r.Method, "path", clipText(r.URL.Path, 100))
		writeError(w, http.StatusForbidden, "crossOrigin", "cross-origin requests that change something are refused")
	}))
	return cop.Handler(next)
}

// metricsRoutes serves /metrics alone.
func (d *Dispatcher) metricsRoutes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/metrics", d.serveMetrics())
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, "notFound", "this listener serves /metrics only")
	})
	return d.instrument(canonical(mux))
}

func (d *Dispatcher) serveMetrics() http.HandlerFunc {
	return d.methods(http.MethodGet,
		promhttp.HandlerFor(d.cfg.Registry, promhttp.HandlerOpts{Registry: d.cfg.Registry}).ServeHTTP)
}

// canonical refuses (400) a request whose path ServeMux would clean and
// redirect: ".", ".." or empty segments. ServeMux answers 307, which a
// client follows with the same method and body, so POST
// /api/tenants/../refresh would become a refresh of every tenant. Only
// reads outside /api/ (the UI's) keep the redirect.
func canonical(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if p := cleanPath(r.URL.Path); p != r.URL.Path {
			read := r.Method == http.MethodGet || r.Method == http.MethodHead
			if !read || p == "/api" || strings.HasPrefix(p, "/api/") {
				writeError(w, http.StatusBadRequest, "invalidPath",
					`the path has ".", ".." or empty segments: send the canonical path`)
				return
			}
		}
		next.ServeHTTP(w, r)
	})
}

// cleanPath is the path ServeMux serves r under (net/http's cleanPath):
// rooted, path.Clean'd, with a trailing slash kept.
func cleanPath(p string) string {
	if p == "" {
		return "/"
	}
	if p[0] != '/' {
		p = "/" + p
	}
	np := path.Clean(p)
	if p[len(p)-1] == '/' && np != "/" {
		np += "/"
	}
	return np
}

// methods allows only method (and HEAD for GET), answering 405 in JSON.
func (d *Dispatcher) methods(method string, h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if r.Method != method && !(method == http.MethodGet && r.Method == http.MethodHead) {
			w.Header().Set("Allow", method)
			writeError(w, http.StatusMethodNotAllowed, "methodNotAllowed", "use "+method)
			return
		}
		h(w, r)
	}
}

// api registers an authenticated API path with its methods.
func (d *Dispatcher) api(mux *http.ServeMux, pattern string, routes ...route) {
	var allow []string
	for _, rt := range routes {
		allow = append(allow, rt.method)
	}
	mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
		var rt *route
		for i := range routes {
			if routes[i].method == r.Method || (routes[i].method == http.MethodGet && r.Method == http.MethodHead) {
				rt = &routes[i]
				break
			}
		}
		if rt == nil {
			w.Header().Set("Allow", strings.Join(allow, ", "))
			writeError(w, http.StatusMethodNotAllowed, "methodNotAllowed", "use "+strings.Join(allow, " or "))
			return
		}
		p, err := d.authenticate(r, rt.role)
		if err != nil {
			var ae *authError
			if !errors.As(err, &ae) {
				ae = &authError{http.StatusUnauthorized, "not authenticated"}
			}
			d.log.InfoContext(r.Context(), "API request refused", "route", pattern, "status", ae.status, "reason", ae.reason)
			if ae.status == http.StatusUnauthorized {
				w.Header().Set("WWW-Authenticate", `Bearer realm="cpvrefresh"`)
				writeError(w, ae.status, "unauthorized", "sign in, or authenticate with a bearer token or an API key")
				return
			}
			writeError(w, ae.status, "forbidden", ae.reason)
			return
		}
		rt.h(w, r, p)
	})
}

// instrument counts requests by route pattern and status.
func (d *Dispatcher) instrument(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rec := &statusRecorder{ResponseWriter: w, status: http.StatusOK}
		defer func() {
			if v := recover(); v != nil {
				if v == http.ErrAbortHandler {
					panic(v)
				}
				d.log.ErrorContext(r.Context(), "request handler panicked", "route", r.Pattern, "panic", fmt.Sprint(v))
				if !rec.wrote {
					writeError(rec, http.StatusInternalServerError, "internal", "internal error")
				}
			}
			route := r.Pattern
			if route == "" || route == "/" || route == "/api/" {
				route = "other"
			}
			d.metrics.requests.WithLabelValues(route, strconv.Itoa(rec.status)).Inc()
		}()
		next.ServeHTTP(rec, r)
	})
}

type statusRecorder struct {
	http.ResponseWriter
	status int
	wrote  bool
}

func (s *statusRecorder) WriteHeader(code int) {
	if !s.wrote {
		s.status, s.wrote = code, true
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusRecorder) Write(b []byte) (int, error) {
	s.wrote = true
	return s.ResponseWriter.Write(b)
}

func (s *statusRecorder) Unwrap() http.ResponseWriter { return s.ResponseWriter }

// readiness caches the last readiness check.
type readiness struct {
	mu      sync.Mutex
	checked time.Time
	err     error
}

func (d *Dispatcher) handleReady(w http.ResponseWriter, r *http.Request) {
	if err := d.Ready(r.Context()); err != nil {
		writeError(w, http.StatusServiceUnavailable, "notReady", err.Error())
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
}

// Ready reports whether the store and the queue answer, checking at most
// every few seconds.
func (d *Dispatcher) Ready(ctx context.Context) error {
	d.ready.mu.Lock()
	defer d.ready.mu.Unlock()
	now := d.now()
	if !d.ready.checked.IsZero() && now.Sub(d.ready.checked) < readyTTL && now.After(d.ready.checked) {
		return d.ready.err
	}
	ctx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	var errs []error
	if _, err := d.cfg.Store.Paused(ctx, cpvtype.ComponentDispatch); err != nil {
		errs = append(errs, errors.New("store unreachable"))
		d.log.WarnContext(ctx, "readiness: store check failed", "error", err)
	}
	if _, _, err := d.cfg.Queue.Depth(ctx); err != nil {
		errs = append(errs, errors.New("queue unreachable"))
		d.log.WarnContext(ctx, "readiness: queue check failed", "error", err)
	}
	d.ready.checked, d.ready.err = now, errors.Join(errs...)
	return d.ready.err
}

// readBody reads the request body up to limit bytes; more is an error (413).
func readBody(w http.ResponseWriter, r *http.Request, limit int) ([]byte, error) {
	tooLarge := fmt.Errorf("the body exceeds %d bytes", limit)
	if r.ContentLength > int64(limit) {
		return nil, tooLarge
	}
	b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, int64(limit)))
	if err != nil {
		var mb *http.MaxBytesError
		if errors.As(err, &mb) {
			return nil, tooLarge
		}
		return nil, fmt.Errorf("the body could not be read: %w", err)
	}
	return b, nil
}

// apiError is the JSON error shape: {"error":{"code","message"}}.
type apiError struct {
	Error apiErrorBody `json:"error"`
}

type apiErrorBody struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

func writeError(w http.ResponseWriter, status int, code, msg string) {
	writeJSON(w, status, apiError{Error: apiErrorBody{Code: code, Message: msg}})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		status = http.StatusInternalServerError
		b = []byte(`{"error":{"code":"internal","message":"response could not be encoded"}}`)
	}
	jsonHeaders(w.Header())
	w.WriteHeader(status)
	_, _ = w.Write(append(b, '\n'))
}

// jsonHeaders are the headers of every JSON answer, written at once or
// streamed: not cached, and never sniffed as another type.
func jsonHeaders(h http.Header) {
	h.Set("Content-Type", "application/json; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
}

// jsonProblem describes a decoding error briefly, without the input.
func jsonProblem(err error) string {
	var se *json.SyntaxError
	var te *json.UnmarshalTypeError
	switch {
	case errors.As(err, &se):
		return "invalid JSON at byte " + strconv.FormatInt(se.Offset, 10)
	case errors.As(err, &te):
		return "field " + clipText(te.Field, 60) + " has the wrong type"
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "the JSON ends early"
	}
	return "invalid JSON"
}

// clipText bounds s for error messages and log lines.
func clipText(s string, n int) string {
	if len(s) <= n {
		return s
	}
	cut := n
	for cut > 0 && (s[cut]&0xC0) == 0x80 {
		cut--
	}
	return s[:cut] + "…"
}

// drain reads what is left of a body (bounded) and closes it, so the
// connection can be reused.
func drain(body io.ReadCloser) {
	_, _ = io.Copy(io.Discard, io.LimitReader(body, 1<<20))
	_ = body.Close()
}
