// Package ui is the dispatcher's web UI: a single page in plain HTML, CSS
// and JavaScript (no framework, no build step, nothing from a CDN) embedded
// in the binary and served by Handler.
//
// The page talks only to the dispatcher's JSON API under /api/ on the same
// origin. People sign in with Microsoft (when the dispatcher has sign-in
// configured): /auth/login, the partner tenant's sign-in page, then a
// server-side session whose HttpOnly cookie the page never sees; "Sign
// out" ends it on the server. Automation's API keys and bearer tokens work
// too: the page keeps one in sessionStorage (gone when the tab closes) and
// sends it as "Authorization: Bearer ...". A 401 brings the sign-in form
// back. GET /api/me says who is signed in and with which role (Reader,
// Operator, Admin); the header shows both, and the page hides what the
// role may not do (refresh and reset buttons, refresh all and the pause
// switches for a Reader, the settings page for all but an Admin).
//
// Pages (hash routes, so the server serves one document):
//
//   - #/tenants: every tenant with its last status, last refresh, notices and
//     last error with its advice; search, a status filter, sortable columns;
//     the progress of a nightly or bulk run while one is running; refresh,
//     reset and refresh all with confirmation dialogs.
//   - #/tenants/{id}: the tenant's attempts, newest first, and for the latest
//     the application and delegated permissions that were applied, that were
//     already there and that could not be; the attempts as a timeline.
//   - #/charts: the last 30 runs (their tenants by outcome, stacked, and
//     their duration) and the fleet by status now (GET /api/charts).
//     charts.js draws the charts as SVG with DOM calls, coloured by class
//     from charts.css (no chart library, nothing inline); each has its
//     numbers as a table under a "Numbers" toggle.
//   - #/backend: the storage account, queues (with depths) and tables in use,
//     the Microsoft endpoints, Key Vault, the workers seen recently, the next
//     scheduled run and the pause switches.
//   - #/access: the access checks (partner app permissions and consent,
//     credential and its expiry, Partner Center, GDAP roles, assignments and
//     expiry, tenants' access, webhook registration), each with its status,
//     evidence, advice and when it last ran and changed; "Run checks" for an
//     Operator. Its script is access.js, which adds the page through
//     window.cpvUI (app.js's helpers); the tenants page shows each tenant's
//     access in a column.
//   - #/activity: the activity log (who refreshed, reset, paused, signed in),
//     filtered by person, action and tenant, older entries page by page; a
//     tenant's page shows its own entries.
//   - #/settings (Admin): sign-in, bearer tokens, API keys by number and
//     role, and what each role may do; Partner Center's webhook
//     registration; the notification URLs, shown as scheme and host only,
//     added, removed and sent a test message (notify.js).
//
// Handler serves the document with "Cache-Control: no-cache" and the
// assets under a content-hashed path (/static/<version>/...) that may be
// cached for a year; every answer carries a strict Content-Security-Policy
// (default-src 'self', no inline script or style), so the page can only
// load its own files and only talk to its own origin.
package ui

import (
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"io/fs"
	"net/http"
	"path"
	"sort"
	"strconv"
	"strings"
)

//go:embed assets
var assets embed.FS

// ContentSecurityPolicy is sent with every answer of Handler: the page loads
// only its own scripts, styles and images, connects only to its own origin
// and cannot be framed.
const ContentSecurityPolicy = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; " +
	"connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"

// versionPlaceholder is replaced in index.html by the assets' version, so
// the document names the hashed asset paths.
const versionPlaceholder = "__ASSET_VERSION__"

// Cache-Control values.
const (
	cacheRevalidate = "no-cache"
	cacheImmutable  = "public, max-age=31536000, immutable"
)

var contentTypes = map[string]string{
	".html": "text/html; charset=utf-8",
	".css":  "text/css; charset=utf-8",
	".js":   "text/javascript; charset=utf-8",
	".svg":  "image/svg+xml",
	".png":  "image/png",
	".json": "application/json",
	".txt":  "text/plain; charset=utf-8",
}

// file is one asset, ready to serve.
type file struct {
	body        []byte
	gz          []byte // nil when compression does not pay
	contentType string
	etag        string
}

type handler struct {
	version string
	index   file
	static  map[string]file // by name under assets/, e.g. "app.js"
}

// Handler returns the UI's http.Handler, meant to be mounted at "/" next to
// the API (which must stay under /api/). It answers GET and HEAD for "/"
// (and "/index.html") and for the assets under /static/<version>/; anything
// else is 404, and other methods are 405.
func Handler() http.Handler {
	h, err := newHandler(assets)
	if err != nil {
		// The assets are embedded at compile time, so this is a broken build
		// (the package's tests catch it); answer 500 rather than crash the
		// dispatcher whose API still works.
		return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			plain(w, http.StatusInternalServerError, "ui: embedded assets unreadable")
		})
	}
	return h
}

func newHandler(fsys fs.FS) (*handler, error) {
	sub, err := fs.Sub(fsys, "assets")
	if err != nil {
		return nil, err
	}
	raw := map[string][]byte{}
	err = fs.WalkDir(sub, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := fs.ReadFile(sub, p)
		if err != nil {
			return err
		}
		raw[p] = b
		return nil
	})
	if err != nil {
		return nil, err
	}
	names := make([]string, 0, len(raw))
	for n := range raw {
		names = append(names, n)
	}
	sort.Strings(names)
	sum := sha256.New()
	for _, n := range names {
		sum.Write([]byte(n))
		sum.Write([]byte{0})
		sum.Write(raw[n])
	}
	h := &handler{version: hex.EncodeToString(sum.Sum(nil))[:12], static: map[string]file{}}
	for _, n := range names {
		if n == "index.html" {
			continue
		}
		h.static[n] = newFile(n, raw[n])
	}
	index, ok := raw["index.html"]
	if !ok {
		return nil, fs.ErrNotExist
	}
	h.index = newFile("index.html", bytes.ReplaceAll(index, []byte(versionPlaceholder), []byte(h.version)))
	return h, nil
}

func newFile(name string, body []byte) file {
	ct := contentTypes[path.Ext(name)]
	if ct == "" {
		ct = "application/octet-stream"
	}
	sum := sha256.Sum256(body)
	f := file{body: body, contentType: ct, etag: `"` + hex.EncodeToString(sum[:8]) + `"`}
	if len(body) > 1024 && ct != "image/png" {
		var buf bytes.Buffer
		zw, _ := gzip.NewWriterLevel(&buf, gzip.BestCompression)
		_, _ = zw.Write(body)
		if zw.Close() == nil && buf.Len() < len(body) {
			f.gz = buf.Bytes()
		}
	}
	return f
}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	hd := w.Header()
	hd.Set("Content-Security-Policy", ContentSecurityPolicy)
	hd.Set("X-Content-Type-Options", "nosniff")
	hd.Set("X-Frame-Options", "DENY")
	hd.Set("Referrer-Policy", "no-referrer")
	hd.Set("Cross-Origin-Opener-Policy", "same-origin")
	hd.Set("Cross-Origin-Resource-Policy", "same-origin")
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		hd.Set("Allow", "GET, HEAD")
		plain(w, http.StatusMethodNotAllowed, "method not allowed")
		return
	}
	p := r.URL.Path
	switch {
	case p == "/" || p == "/index.html":
		serve(w, r, h.index, cacheRevalidate)
		return
	case strings.HasPrefix(p, "/static/"):
		version, name, ok := strings.Cut(strings.TrimPrefix(p, "/static/"), "/")
		f, found := h.static[name]
		if !ok || !found {
			break
		}
		cache := cacheImmutable
		if version != h.version {
			// An old document asking for an asset that has changed since:
			// serve the current one, but do not let it be kept.
			cache = cacheRevalidate
		}
		serve(w, r, f, cache)
		return
	}
	plain(w, http.StatusNotFound, "not found")
}

func serve(w http.ResponseWriter, r *http.Request, f file, cache string) {
	hd := w.Header()
	hd.Set("Content-Type", f.contentType)
	hd.Set("Cache-Control", cache)
	hd.Set("ETag", f.etag)
	if f.gz != nil {
		hd.Set("Vary", "Accept-Encoding")
	}
	if etagMatch(r.Header.Get("If-None-Match"), f.etag) {
		w.WriteHeader(http.StatusNotModified)
		return
	}
	body := f.body
	if f.gz != nil && acceptsGzip(r.Header.Get("Accept-Encoding")) {
		body = f.gz
		hd.Set("Content-Encoding", "gzip")
	}
	hd.Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(http.StatusOK)
	if r.Method != http.MethodHead {
		_, _ = w.Write(body)
	}
}

func plain(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	_, _ = w.Write([]byte(msg + "\n"))
}

// etagMatch reports whether an If-None-Match header names etag (weak
// comparison, as RFC 9110 asks for If-None-Match).
func etagMatch(header, etag string) bool {
	for _, t := range strings.Split(header, ",") {
		t = strings.TrimSpace(t)
		if t == "*" || strings.TrimPrefix(t, "W/") == etag {
			return true
		}
	}
	return false
}

func acceptsGzip(header string) bool {
	for _, part := range strings.Split(header, ",") {
		coding, params, _ := strings.Cut(strings.TrimSpace(part), ";")
		if !strings.EqualFold(strings.TrimSpace(coding), "gzip") {
			continue
		}
		params = strings.ReplaceAll(params, " ", "")
		return params != "q=0" && params != "q=0.0" && params != "q=0.00" && params != "q=0.000"
	}
	return false
}
