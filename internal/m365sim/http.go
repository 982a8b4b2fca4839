package m365sim

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"runtime/debug"
	"strings"
	"time"
)

// maxBody is the largest request body accepted (after decompression), as
// Graph's 4 MB limit.
const maxBody = 4 << 20

var (
	errBodyTooLarge = errors.New("request body too large")
	errBadEncoding  = errors.New("unsupported or corrupt content encoding")
)

// statusWriter remembers whether and with which status a response started.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

func (s *Sim) routes() http.Handler {
	return http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		start := time.Now()
		w := &statusWriter{ResponseWriter: rw}
		p := r.URL.Path
		defer func() {
			if v := recover(); v != nil {
				s.log.ErrorContext(r.Context(), "handler panic", "method", r.Method, "path", safePath(p), "panic", fmt.Sprint(v), "stack", string(debug.Stack()))
				s.stats.add("", cServerErrors)
				if w.status == 0 {
					switch {
					case strings.HasPrefix(p, "/v1/"):
						writePCError(w, http.StatusInternalServerError, 500, "An internal error occurred.")
					case strings.HasPrefix(p, "/v1.0"):
						s.writeGraphError(w, r, &graphError{Status: http.StatusInternalServerError, Code: "InternalServerError", Message: "An internal server error occurred."})
					default:
						writeJSON(w, http.StatusInternalServerError, map[string]any{"error": "server_error", "error_description": "internal error"})
					}
				}
			}
			s.log.DebugContext(r.Context(), "request served", "method", r.Method, "path", safePath(p), "status", w.status, "duration", time.Since(start))
		}()
		switch {
		case p == "/v1.0" || strings.HasPrefix(p, "/v1.0/"):
			s.serveGraph(w, r)
		case strings.HasPrefix(p, "/v1/"):
			s.servePartnerCenter(w, r)
		case p == "/webhooks/v1/registration" || strings.HasPrefix(p, "/webhooks/v1/registration/"):
			s.serveWebhookAPI(w, r)
		case strings.HasPrefix(p, "/_sim/"):
			s.serveInspect(w, r)
		case p == webhookCertPath && r.Method == http.MethodGet:
			w.Header().Set("Content-Type", "application/x-pem-file")
			_, _ = w.Write(s.webhookPEM)
		case p == "/secrets" || strings.HasPrefix(p, "/secrets/"):
			s.serveVault(w, r)
		default:
			s.serveEntra(w, r)
		}
	})
}

// safePath shortens a path for a log line (paths carry no secrets).
func safePath(p string) string {
	if len(p) > 200 {
		return p[:200] + "..."
	}
	return p
}

// readBody reads a request body of at most maxBody bytes, decompressing
// gzip (Content-Encoding: gzip, as msgraph-sdk-go sends by default).
func readBody(r *http.Request) ([]byte, error) {
	if r.Body == nil {
		return nil, nil
	}
	raw, err := io.ReadAll(io.LimitReader(r.Body, maxBody+1))
	if err != nil {
		return nil, fmt.Errorf("read body: %w", err)
	}
	if len(raw) > maxBody {
		return nil, errBodyTooLarge
	}
	switch enc := strings.ToLower(strings.TrimSpace(r.Header.Get("Content-Encoding"))); enc {
	case "", "identity":
		return raw, nil
	case "gzip":
		zr, err := gzip.NewReader(bytes.NewReader(raw))
		if err != nil {
			return nil, errBadEncoding
		}
		out, err := io.ReadAll(io.LimitReader(zr, maxBody+1))
		if err != nil {
			return nil, errBadEncoding
		}
		if len(out) > maxBody {
			return nil, errBodyTooLarge
		}
		return out, nil
	default:
		return nil, errBadEncoding
	}
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		status = http.StatusInternalServerError
		b = []byte(`{"error":{"code":"InternalServerError","message":"response encoding failed"}}`)
	}
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	_, _ = w.Write(b)
}
