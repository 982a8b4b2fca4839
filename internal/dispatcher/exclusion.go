package dispatcher

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/cpvrefresh/cpvrefresh/internal/cpvtype"
	"github.com/cpvrefresh/cpvrefresh/internal/store"
)

// maxExcludeValues bounds the tenants one ExecExcludeTenant request names.
const maxExcludeValues = 100

// errTenantExcluded refuses a manual refresh or reset of an excluded
// tenant.
var errTenantExcluded = errors.New("dispatcher: the tenant is excluded")

// ExclusionView is the answer of an exclusion change: the row's new
// exclusion fields.
type ExclusionView struct {
	TenantID        string     `json:"tenantId"`
	Excluded        bool       `json:"excluded"`
	ExclusionBy     string     `json:"exclusionBy,omitempty"`
	ExclusionAt     *time.Time `json:"exclusionAt,omitempty"`
	ExclusionReason string     `json:"exclusionReason,omitempty"`
}

// SetExclusion excludes a tenant (or includes it again) on behalf of by,
// recording when and why on its row. Runs leave an excluded tenant out and
// manual refreshes of it are refused. store.ErrNotFound (wrapped) if the
// tenant has no row. It is the one place an exclusion changes, whichever
// API shape asked.
func (d *Dispatcher) SetExclusion(ctx context.Context, tenant string, excluded bool, by, reason string) (ExclusionView, error) {
	tenant = strings.ToLower(tenant)
	e := store.Exclusion{Excluded: excluded, By: clipText(by, 200), Reason: reason, At: d.now().UTC()}
	if err := d.cfg.Store.SetExclusion(ctx, tenant, e); err != nil {
		return ExclusionView{}, fmt.Errorf("dispatcher: set exclusion of tenant %s: %w", tenant, err)
	}
	d.invalidateListing()
	d.log.InfoContext(ctx, "tenant exclusion set", "tenant", tenant, "excluded", excluded, "by", e.By, "reason", clipText(reason, 200))
	return ExclusionView{TenantID: tenant, Excluded: excluded, ExclusionBy: e.By, ExclusionAt: timePtr(e.At), ExclusionReason: reason}, nil
}

// checkNotExcluded returns an error wrapping errTenantExcluded, with who
// excluded the tenant, when and why, if it is excluded; a tenant without a
// row is not.
func (d *Dispatcher) checkNotExcluded(ctx context.Context, tenant string) error {
	t, err := d.cfg.Store.GetTenant(ctx, tenant)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return nil
	case err != nil:
		return err
	case !t.Excluded:
		return nil
	}
	var b strings.Builder
	fmt.Fprintf(&b, "tenant %s is excluded", t.ID)
	if t.ExclusionBy != "" {
		fmt.Fprintf(&b, " by %s", t.ExclusionBy)
	}
	if !t.ExclusionAt.IsZero() {
		fmt.Fprintf(&b, " on %s", t.ExclusionAt.UTC().Format(time.RFC3339))
	}
	if t.ExclusionReason != "" {
		fmt.Fprintf(&b, " (%s)", clipText(t.ExclusionReason, 200))
	}
	fmt.Fprintf(&b, ": include it again (POST /api/tenants/%s/include) before refreshing it", t.ID)
	return fmt.Errorf("%w: %s", errTenantExcluded, b.String())
}

// excludedMessage is what the API says of a refused request.
func excludedMessage(err error) string {
	return strings.TrimPrefix(err.Error(), errTenantExcluded.Error()+": ")
}

// cleanReason trims a reason and checks it: at most
// store.MaxExclusionReason bytes, no control characters but tabs and line
// breaks (which become spaces).
func cleanReason(s string) (string, error) {
	bad := strings.IndexFunc(s, func(r rune) bool {
		return r != '\t' && r != '\n' && r != '\r' && (unicode.IsControl(r) || r == unicode.ReplacementChar)
	})
	if bad >= 0 {
		return "", errors.New("reason: control characters and invalid UTF-8 are not allowed")
	}
	s = strings.TrimSpace(strings.Map(func(r rune) rune {
		if r == '\t' || r == '\n' || r == '\r' {
			return ' '
		}
		return r
	}, s))
	if len(s) > store.MaxExclusionReason {
		return "", fmt.Errorf("reason: at most %d bytes", store.MaxExclusionReason)
	}
	return s, nil
}

// handleExclusion serves POST /api/tenants/{id}/exclude and .../include,
// with an optional body {"reason": "..."}.
func (d *Dispatcher) handleExclusion(exclude bool) func(http.ResponseWriter, *http.Request, principal) {
	return func(w http.ResponseWriter, r *http.Request, p principal) {
		body, err := readBody(w, r, d.cfg.MaxBody)
		if err != nil {
			writeError(w, http.StatusRequestEntityTooLarge, "payloadTooLarge", err.Error())
			return
		}
		id := strings.ToLower(r.PathValue("id"))
		if !cpvtype.IsGUID(id) {
			writeError(w, http.StatusBadRequest, "invalidTenant", "the tenant id must be a GUID")
			return
		}
		var req struct {
			Reason string `json:"reason"`
		}
		if len(bytes.TrimSpace(body)) > 0 {
			if err := decodeJSON(body, &req); err != nil {
				writeError(w, http.StatusBadRequest, "invalidBody", err.Error())
				return
			}
		}
		reason, err := cleanReason(req.Reason)
		if err != nil {
			writeError(w, http.StatusBadRequest, "invalidBody", err.Error())
			return
		}
		v, err := d.SetExclusion(r.Context(), id, exclude, p.Name, reason)
		switch {
		case errors.Is(err, store.ErrNotFound):
			writeError(w, http.StatusNotFound, "tenantNotFound", unknownTenant(id))
		case err != nil:
			d.recordExclusion(r, p, id, exclude, reason, err)
			d.unavailable(w, r, err)
		default:
			d.recordExclusion(r, p, id, exclude, reason, nil)
			writeJSON(w, http.StatusOK, v)
		}
	}
}

// recordExclusion writes an exclusion change, or its failure, to the
// activity log; an unknown tenant changes nothing and is not recorded.
func (d *Dispatcher) recordExclusion(r *http.Request, p principal, tenant string, exclude bool, reason string, err error) {
	a := store.Activity{Action: ActionInclude, TenantID: tenant, Outcome: OutcomeSucceeded, Detail: clipText(reason, 200)}
	if exclude {
		a.Action = ActionExclude
	}
	if err != nil {
		a.Outcome, a.Detail = OutcomeFailed, "the store did not answer"
	}
	d.record(r, p, a)
}

func unknownTenant(id string) string {
	return "no tenant " + id + " in the tenants table: a tenant is known once a GDAP relationship or an event names it"
}

// cippExcludeRequest is what CIPP's front end sends to ExecExcludeTenant:
// the tenant ids in value (one or a list).
type cippExcludeRequest struct {
	Value  json.RawMessage `json:"value"`
	Reason string          `json:"reason"`
}

// handleCIPPExclude serves ExecExcludeTenant: ?AddExclusion=true or
// ?RemoveExclusion=true with {"value": "<tenant id>"} or {"value": [...]}.
func (d *Dispatcher) handleCIPPExclude(w http.ResponseWriter, r *http.Request, p principal) {
	body, err := readBody(w, r, d.cfg.MaxBody)
	if err != nil {
		writeCIPPError(w, http.StatusRequestEntityTooLarge, "payloadTooLarge", err.Error())
		return
	}
	exclude, ids, reason, err := parseCIPPExclude(r, body)
	if err != nil {
		writeCIPPError(w, http.StatusBadRequest, "invalidBody", err.Error())
		return
	}
	var done, unknown []string
	for _, id := range ids {
		_, err := d.SetExclusion(r.Context(), id, exclude, p.Name, reason)
		switch {
		case errors.Is(err, store.ErrNotFound):
			unknown = append(unknown, id)
		case err != nil:
			d.recordExclusion(r, p, id, exclude, reason, err)
			d.log.ErrorContext(r.Context(), "API request failed", "route", r.Pattern, "error", err)
			msg := "the store did not answer; try again"
			if len(done) > 0 {
				msg += " (done: " + strings.Join(done, ", ") + ")"
			}
			writeCIPPError(w, http.StatusServiceUnavailable, "unavailable", msg)
			return
		default:
			d.recordExclusion(r, p, id, exclude, reason, nil)
			done = append(done, id)
		}
	}
	verb := "Added exclusions for"
	if !exclude {
		verb = "Removed exclusions of"
	}
	if len(unknown) > 0 {
		msg := "Failed. Unknown tenant(s): " + strings.Join(unknown, ", ") + "."
		if len(done) > 0 {
			msg += " " + verb + " tenant(s): " + strings.Join(done, ", ") + "."
		}
		writeCIPPError(w, http.StatusNotFound, "tenantNotFound", msg)
		return
	}
	writeJSON(w, http.StatusOK, cippResult{Results: "Success. " + verb + " tenant(s): " + strings.Join(done, ", ") + ".",
		Metadata: map[string]string{"excluded": strconv.FormatBool(exclude), "tenants": strings.Join(done, ",")}})
}

// parseCIPPExclude reads AddExclusion / RemoveExclusion from the query
// (keys matched case-insensitively; exactly one must be true) and the
// tenant ids from the body's value, each a GUID.
func parseCIPPExclude(r *http.Request, body []byte) (exclude bool, ids []string, reason string, err error) {
	var add, remove flexBool
	for k, vs := range r.URL.Query() {
		if len(vs) == 0 {
			continue
		}
		var dst *flexBool
		switch {
		case strings.EqualFold(k, "AddExclusion"):
			dst = &add
		case strings.EqualFold(k, "RemoveExclusion"):
			dst = &remove
		default:
			continue
		}
		if err := dst.UnmarshalJSON([]byte(strconv.Quote(vs[0]))); err != nil {
			return false, nil, "", fmt.Errorf("%s must be true or false", k)
		}
	}
	if add == remove {
		return false, nil, "", errors.New("give AddExclusion=true or RemoveExclusion=true in the query")
	}
	var req cippExcludeRequest
	if len(bytes.TrimSpace(body)) == 0 {
		return false, nil, "", errors.New(`the body must be {"value": "<tenant id>"}`)
	}
	if err := decodeJSON(body, &req); err != nil {
		return false, nil, "", err
	}
	var one string
	var many []string
	switch {
	case len(req.Value) == 0 || string(req.Value) == "null":
		return false, nil, "", errors.New(`value is required: the tenant id (GUID), or a list of them`)
	case json.Unmarshal(req.Value, &one) == nil:
		many = []string{one}
	case json.Unmarshal(req.Value, &many) == nil:
	default:
		return false, nil, "", errors.New("value must be a tenant id (GUID) or a list of them")
	}
	if len(many) == 0 || len(many) > maxExcludeValues {
		return false, nil, "", fmt.Errorf("value must name 1 to %d tenants", maxExcludeValues)
	}
	seen := map[string]bool{}
	for _, v := range many {
		v = strings.ToLower(strings.TrimSpace(v))
		if !cpvtype.IsGUID(v) {
			return false, nil, "", fmt.Errorf("value %q is not a tenant id (GUID)", clipText(v, 60))
		}
		if !seen[v] {
			seen[v] = true
			ids = append(ids, v)
		}
	}
	if reason, err = cleanReason(req.Reason); err != nil {
		return false, nil, "", err
	}
	return bool(add), ids, reason, nil
}
