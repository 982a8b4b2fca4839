package stack

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"time"
)

// Client calls a JSON API of the stack: the dispatcher's (with its API
// key), a daemon's health, or the simulator's /_sim/ endpoints.
type Client struct {
	Base string // e.g. http://127.0.0.1:8080
	Key  string // bearer API key; empty sends none
	// HTTP is the client used (nil: one with a 30 s timeout).
	HTTP *http.Client
}

// Get reads path into out (nil: the body is dropped).
func (c *Client) Get(ctx context.Context, path string, out any) error {
	return c.Do(ctx, http.MethodGet, path, nil, out)
}

// Do sends in as JSON (nil: no body) and reads the answer into out (nil:
// dropped). A status of 300 or more is an error quoting the body.
func (c *Client) Do(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.Base+path, body)
	if err != nil {
		return err
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.Key != "" {
		req.Header.Set("Authorization", "Bearer "+c.Key)
	}
	hc := c.HTTP
	if hc == nil {
		hc = &http.Client{Timeout: 30 * time.Second}
	}
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode >= 300 {
		return fmt.Errorf("%s %s: %d %s", method, path, resp.StatusCode, bytes.TrimSpace(b))
	}
	if out != nil {
		return json.Unmarshal(b, out)
	}
	return nil
}

// Refresh asks the dispatcher to refresh every tenant (POST /api/refresh)
// and returns the run's id.
func (c *Client) Refresh(ctx context.Context) (string, error) {
	var out struct {
		RunID string `json:"runId"`
	}
	if err := c.Do(ctx, http.MethodPost, "/api/refresh", nil, &out); err != nil {
		return "", fmt.Errorf("stack: refresh all: %w", err)
	}
	if out.RunID == "" {
		return "", errors.New("stack: refresh all: no run id in the answer")
	}
	return out.RunID, nil
}

// RunView is what GET /api/runs/{id} answers.
type RunView struct {
	ID       string       `json:"id"`
	Started  *time.Time   `json:"started"`
	Finished *time.Time   `json:"finished"`
	Enqueued int          `json:"enqueued"`
	Total    int          `json:"total"`
	Progress *RunProgress `json:"progress"`
}

// RunProgress counts a run's tenants by where their refresh is.
type RunProgress struct {
	Enqueued  int `json:"enqueued"`
	Succeeded int `json:"succeeded"`
	Partial   int `json:"partial"`
	Failed    int `json:"failed"`
	Running   int `json:"running"`
	Pending   int `json:"pending"`
}

// Run reads a run and its progress.
func (c *Client) Run(ctx context.Context, id string) (RunView, error) {
	var v RunView
	err := c.Get(ctx, "/api/runs/"+url.PathEscape(id), &v)
	return v, err
}

// Poll calls check every `every` until it returns nil, or an error marked
// Permanent (returned unwrapped), or limit (or ctx) ends: then the error
// wraps ctx's and quotes check's last error. Any other error from check
// means "not yet".
func Poll(ctx context.Context, limit, every time.Duration, check func() error) error {
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		last := check()
		if last == nil {
			return nil
		}
		var perm permanentError
		if errors.As(last, &perm) {
			return perm.error
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (last: %v)", ctx.Err(), last)
		case <-t.C:
		}
	}
}

// Permanent marks err as final for Poll: it stops at once and returns err.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return permanentError{err}
}

type permanentError struct{ error }

func (p permanentError) Unwrap() error { return p.error }
