package ui_test

import (
	"bytes"
	"compress/gzip"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/cpvrefresh/cpvrefresh/internal/dispatcher/ui"
)

// get sends one request to the UI handler and returns the response with its body read.
func get(t *testing.T, h http.Handler, method, target string, header map[string]string) (*http.Response, []byte) {
	t.Helper()
	req := httptest.NewRequest(method, target, nil)
	for k, v := range header {
		req.Header.Set(k, v)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	res := rec.Result()
	body, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatalf("read body: %v", err)
	}
	return res, body
}

// assetPaths returns the /static/... paths the document names.
func assetPaths(t *testing.T, index []byte) []string {
	t.Helper()
	var out []string
	seen := map[string]bool{}
	for _, m := range regexp.MustCompile(`(?:src|href)="(static/[^"]+)"`).FindAllSubmatch(index, -1) {
		p := "/" + string(m[1])
		if !seen[p] {
			seen[p] = true
			out = append(out, p)
		}
	}
	if len(out) == 0 {
		t.Fatalf("the document names no assets:\n%s", index)
	}
	return out
}

func TestDocument(t *testing.T) {
	t.Parallel()
	h := ui.Handler()
	for _, target := range []string{"/", "/index.html"} {
		res, body := get(t, h, http.MethodGet, target, nil)
		got := map[string]string{
			"status":        res.Status,
			"Content-Type":  res.Header.Get("Content-Type"),
			"Cache-Control": res.Header.Get("Cache-Control"),
			"CSP":           res.Header.Get("Content-Security-Policy"),
			"nosniff":       res.Header.Get("X-Content-Type-Options"),
			"frame":         res.Header.Get("X-Frame-Options"),
			"referrer":      res.Header.Get("Referrer-Policy"),
		}
		want := map[string]string{
			"status":        "200 OK",
			"Content-Type":  "text/html; charset=utf-8",
			"Cache-Control": "no-cache",
			"CSP":           ui.ContentSecurityPolicy,
			"nosniff":       "nosniff",
			"frame":         "DENY",
			"referrer":      "no-referrer",
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("GET %s headers (-want +got):\n%s", target, diff)
		}
		if bytes.Contains(body, []byte("__ASSET_VERSION__")) {
			t.Errorf("GET %s: the version placeholder was not replaced", target)
		}
		if res.Header.Get("ETag") == "" {
			t.Errorf("GET %s: no ETag", target)
		}
	}
	if !strings.Contains(ui.ContentSecurityPolicy, "default-src 'self'") {
		t.Errorf("CSP %q lacks default-src 'self'", ui.ContentSecurityPolicy)
	}
}

func TestAssets(t *testing.T) {
	t.Parallel()
	h := ui.Handler()
	_, index := get(t, h, http.MethodGet, "/", nil)
	types := map[string]string{
		".js":  "text/javascript; charset=utf-8",
		".css": "text/css; charset=utf-8",
		".svg": "image/svg+xml",
	}
	for _, p := range assetPaths(t, index) {
		ext := p[strings.LastIndex(p, "."):]
		res, body := get(t, h, http.MethodGet, p, nil)
		got := []string{res.Status, res.Header.Get("Content-Type"), res.Header.Get("Cache-Control"), res.Header.Get("Content-Security-Policy")}
		want := []string{"200 OK", types[ext], "public, max-age=31536000, immutable", ui.ContentSecurityPolicy}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("GET %s (-want +got):\n%s", p, diff)
		}
		if len(body) == 0 {
			t.Errorf("GET %s: empty body", p)
		}

		// The same asset under another version: served, but not kept.
		old := regexp.MustCompile(`^/static/[^/]+/`).ReplaceAllString(p, "/static/0ld/")
		res, oldBody := get(t, h, http.MethodGet, old, nil)
		if res.StatusCode != http.StatusOK || res.Header.Get("Cache-Control") != "no-cache" || !bytes.Equal(oldBody, body) {
			t.Errorf("GET %s: %s, Cache-Control %q; want 200, no-cache and the current asset", old, res.Status, res.Header.Get("Cache-Control"))
		}
	}
}

func TestConditionalAndCompressed(t *testing.T) {
	t.Parallel()
	h := ui.Handler()
	_, index := get(t, h, http.MethodGet, "/", nil)
	var js string
	for _, p := range assetPaths(t, index) {
		if strings.HasSuffix(p, ".js") {
			js = p
		}
	}
	res, plain := get(t, h, http.MethodGet, js, nil)
	etag := res.Header.Get("ETag")

	tests := []struct {
		name       string
		header     map[string]string
		wantStatus int
		wantEnc    string
	}{
		{"matching etag", map[string]string{"If-None-Match": etag}, http.StatusNotModified, ""},
		{"weak matching etag in a list", map[string]string{"If-None-Match": `"nope", W/` + etag}, http.StatusNotModified, ""},
		{"other etag", map[string]string{"If-None-Match": `"nope"`}, http.StatusOK, ""},
		{"gzip accepted", map[string]string{"Accept-Encoding": "br, gzip"}, http.StatusOK, "gzip"},
		{"gzip refused", map[string]string{"Accept-Encoding": "gzip;q=0"}, http.StatusOK, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			res, body := get(t, h, http.MethodGet, js, tc.header)
			if res.StatusCode != tc.wantStatus || res.Header.Get("Content-Encoding") != tc.wantEnc {
				t.Fatalf("status %d, Content-Encoding %q; want %d, %q", res.StatusCode, res.Header.Get("Content-Encoding"), tc.wantStatus, tc.wantEnc)
			}
			if res.Header.Get("Vary") != "Accept-Encoding" {
				t.Errorf("Vary %q; want Accept-Encoding", res.Header.Get("Vary"))
			}
			switch {
			case tc.wantStatus == http.StatusNotModified:
				if len(body) != 0 {
					t.Errorf("304 with a body of %d bytes", len(body))
				}
			case tc.wantEnc == "gzip":
				zr, err := gzip.NewReader(bytes.NewReader(body))
				if err != nil {
					t.Fatalf("gzip: %v", err)
				}
				unzipped, err := io.ReadAll(zr)
				if err != nil {
					t.Fatalf("gunzip: %v", err)
				}
				if !bytes.Equal(unzipped, plain) {
					t.Errorf("the compressed body differs from the plain one")
				}
			default:
				if !bytes.Equal(body, plain) {
					t.Errorf("body differs from the plain one")
				}
			}
		})
	}
}

func TestRefusals(t *testing.T) {
	t.Parallel()
	h := ui.Handler()
	tests := []struct {
		method, target string
		wantStatus     int
		wantAllow      string
	}{
		{http.MethodGet, "/nope", http.StatusNotFound, ""},
		{http.MethodGet, "/static/", http.StatusNotFound, ""},
		{http.MethodGet, "/static/x/nope.js", http.StatusNotFound, ""},
		{http.MethodGet, "/static/x/../index.html", http.StatusNotFound, ""},
		{http.MethodGet, "/index.html/", http.StatusNotFound, ""},
		{http.MethodPost, "/", http.StatusMethodNotAllowed, "GET, HEAD"},
		{http.MethodDelete, "/index.html", http.StatusMethodNotAllowed, "GET, HEAD"},
	}
	for _, tc := range tests {
		t.Run(tc.method+" "+tc.target, func(t *testing.T) {
			t.Parallel()
			res, _ := get(t, h, tc.method, tc.target, nil)
			got := []string{res.Status, res.Header.Get("Allow"), res.Header.Get("Content-Security-Policy"), res.Header.Get("Cache-Control")}
			want := []string{http.StatusText(tc.wantStatus), tc.wantAllow, ui.ContentSecurityPolicy, "no-store"}
			got[0] = strings.TrimSpace(strings.TrimLeft(got[0], "0123456789"))
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

func TestHead(t *testing.T) {
	t.Parallel()
	h := ui.Handler()
	_, full := get(t, h, http.MethodGet, "/", nil)
	res, body := get(t, h, http.MethodHead, "/", nil)
	if res.StatusCode != http.StatusOK || len(body) != 0 {
		t.Fatalf("HEAD /: %s with %d body bytes; want 200 and none", res.Status, len(body))
	}
	if got, want := res.Header.Get("Content-Length"), strconv.Itoa(len(full)); got != want {
		t.Errorf("Content-Length %s; want %s", got, want)
	}
}

// TestCSPClean checks what default-src 'self' forbids and the browser would
// refuse: inline scripts, inline styles, event-handler attributes, and
// code that builds markup or code from strings.
func TestCSPClean(t *testing.T) {
	t.Parallel()
	h := ui.Handler()
	_, index := get(t, h, http.MethodGet, "/", nil)
	files := map[string][]byte{"index.html": index}
	for _, p := range assetPaths(t, index) {
		_, b := get(t, h, http.MethodGet, p, nil)
		files[p] = b
	}
	forbidden := []struct {
		file string // suffix
		re   *regexp.Regexp
		why  string
	}{
		{"index.html", regexp.MustCompile(`<script(?:\s[^>]*)?>\s*[^<\s]`), "inline script"},
		{"index.html", regexp.MustCompile(`<style`), "inline style element"},
		{"index.html", regexp.MustCompile(`\sstyle=`), "style attribute"},
		{"index.html", regexp.MustCompile(`\son[a-z]+=`), "event-handler attribute"},
		{"index.html", regexp.MustCompile(`(?:src|href)="(?:https?:)?//`), "asset from another origin"},
		{".js", regexp.MustCompile(`\.innerHTML|\.outerHTML\s*=|insertAdjacentHTML|document\.write`), "markup from strings"},
		{".js", regexp.MustCompile(`\beval\(|new Function\(`), "code from strings"},
		{".js", regexp.MustCompile(`setAttribute\(\s*['"]style`), "style attribute"},
		{".js", regexp.MustCompile(`localStorage`), "credential kept beyond the tab"},
		{".css", regexp.MustCompile(`@import|url\(\s*['"]?(?:https?:)?//`), "style from another origin"},
	}
	for _, tag := range regexp.MustCompile(`<script[^>]*>`).FindAll(index, -1) {
		if !bytes.Contains(tag, []byte(`src="static/`)) {
			t.Errorf("index.html: script not loaded from the assets: %s", tag)
		}
	}
	for _, f := range forbidden {
		for name, body := range files {
			if !strings.HasSuffix(name, f.file) {
				continue
			}
			if loc := f.re.FindIndex(body); loc != nil {
				t.Errorf("%s: %s: %q", name, f.why, body[loc[0]:min(len(body), loc[1]+40)])
			}
		}
	}
}
