package dispatcher

import (
	"container/heap"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cpvrefresh/cpvrefresh/internal/checks"
	"github.com/cpvrefresh/cpvrefresh/internal/cpv"
	"github.com/cpvrefresh/cpvrefresh/internal/store"
)

// The tenant list is served from a fleet index: one copy of every tenant
// row and status row, shared by every request. It is brought up to date
// at most every listRefresh, by reading only the rows the table service
// changed since the last read (their Timestamp; tenants and statuses are
// never deleted), so a request reads no rows of its own: it scans the
// index and keeps at most one page (a bounded heap), whatever the fleet.
// Maintained counters were not chosen: workers write statuses from many
// replicas, and a shared counter row would be one hot, contended entity
// and drift whenever a write is lost.
const (
	// listRefresh is how long the index is used as read; a listing after
	// that has the store's changes read (in the background while the index
	// is younger than listServeStale). The dispatcher's own writes
	// (exclusions, new tenants) are seen at once.
	listRefresh = 2 * time.Second
	// listOverlap re-reads rows this much older than the newest Timestamp
	// seen: a write in flight may commit with an earlier Timestamp.
	listOverlap = 5 * time.Second
	// listServeStale is how old the index may be and still answer at once
	// while a background read brings it up to date (see freshListing).
	listServeStale = 30 * time.Second
	// The page sizes of GET /api/tenants.
	listDefaultLimit = 50
	listMaxLimit     = 500
	// versionsRefresh is the longest the current manifest versions (the
	// effective manifest's, each profile's, the tenants' assignments) may
	// lag the store; the dispatcher's own changes are seen at once.
	versionsRefresh = time.Minute
)

// Values of GET /api/tenants?manifest= that are not a version.
const (
	manifestOlder   = "older"   // a refresh applied a manifest other than the tenant's current one
	manifestCurrent = "current" // the latest refresh applied the tenant's current manifest
	// profileNone is ?profile= for tenants assigned to no profile (it
	// cannot be a profile's name).
	profileNone = "(none)"
)

// statusRank orders states for sort=status: problems first.
var statusRank = []string{"failed", "partial", "running", "never", "succeeded"}

// fleetIndex is the copy of the tenants and status tables the listing reads.
type fleetIndex struct {
	refresh  sync.Mutex  // one reader of the store at a time
	updating atomic.Bool // a background read is under way

	mu                     sync.RWMutex
	rows                   map[string]*listRow
	tenantMark, statusMark time.Time // newest service Timestamp seen
	at                     time.Time // when last brought up to date
	stale                  bool      // the dispatcher wrote since
	summary                FleetSummary

	vers      versions  // what "current" means for each tenant
	versAt    time.Time // when vers was read (zero: never)
	versStale bool      // the dispatcher changed the permission set or a profile since
}

// versions are the manifest versions a tenant should hold: the effective
// manifest's, or its profile's. A tenant assigned to a profile that no
// longer exists gets the effective manifest, as the workers do.
type versions struct {
	current  string            // the effective manifest's version ("" until read)
	profiles map[string]string // profile name -> its manifest's version
	assigned map[string]string // tenant id -> profile name
}

// expected is the version tenant should hold, "" when unknown.
func (v *versions) expected(tenant string) string {
	if pv, ok := v.profiles[v.assigned[tenant]]; ok {
		return pv
	}
	return v.current
}

// older reports whether r's latest refresh applied another manifest than
// the one r should hold now (false for a tenant never refreshed).
func (v *versions) older(r *listRow) bool {
	if !r.hasStatus || r.status.ManifestVersion == "" {
		return false
	}
	want := v.expected(r.tenant.ID)
	return want != "" && r.status.ManifestVersion != want
}

// listRow is one tenant: its row (known) and its latest status, if any.
type listRow struct {
	tenant    store.Tenant
	known     bool
	status    store.Status
	hasStatus bool
	text      string // lower-cased name, domain, id, error and notices: what a search matches
	lname     string // lower-cased name()
	access    checks.Access
}

func (r *listRow) state() string {
	if !r.hasStatus || r.status.State == "" {
		return "never"
	}
	return string(r.status.State)
}

func (r *listRow) name() string {
	switch {
	case r.tenant.DisplayName != "":
		return r.tenant.DisplayName
	case r.tenant.DefaultDomain != "":
		return r.tenant.DefaultDomain
	}
	return r.tenant.ID
}

func (r *listRow) index() {
	parts := []string{r.tenant.DisplayName, r.tenant.DefaultDomain, r.tenant.ID}
	if r.hasStatus {
		parts = append(parts, r.status.LastError)
		parts = append(parts, r.status.Notices...)
	}
	r.text = strings.ToLower(strings.Join(parts, "\n"))
	r.lname = strings.ToLower(r.name())
	r.access = checks.Access{Status: checks.Unknown}
	if r.hasStatus {
		r.access = checks.AccessOf(r.status)
	}
}

func (r *listRow) view(vs *versions) TenantView {
	v := TenantView{ID: r.tenant.ID}
	if r.known {
		v = tenantView(r.tenant)
	}
	if r.hasStatus {
		v.Status = statusView(r.status)
	}
	a := r.access
	v.Access = &a
	v.Profile = vs.assigned[r.tenant.ID]
	v.Outdated = vs.older(r)
	return v
}

// FleetSummary counts the whole fleet by status (no filter applies).
type FleetSummary struct {
	Total    int            `json:"total"`
	ByStatus map[string]int `json:"byStatus"` // "never" for tenants never refreshed
	Excluded int            `json:"excluded"`
	// ManifestVersion is the effective manifest's version; Older counts
	// the tenants whose latest refresh applied another manifest than the
	// one they should hold (the effective one, or their profile's).
	// Both are left out until the versions could be read.
	ManifestVersion string `json:"manifestVersion,omitempty"`
	Older           int    `json:"older"`
	// ByProfile counts the tenants assigned to each profile.
	ByProfile map[string]int `json:"byProfile,omitempty"`
}

// TenantPage is GET /api/tenants with limit or continuation: one page of
// the tenants that match, in order, and the token of the next page.
type TenantPage struct {
	Items        []TenantView `json:"items"`
	Continuation string       `json:"continuation,omitempty"`
	Matched      int          `json:"matched"` // tenants matching the filters and search, all pages
	Summary      FleetSummary `json:"summary"`
	AsOf         time.Time    `json:"asOf"` // when the listing last read the store
}

// invalidateListing makes the next listing read the store's changes.
func (d *Dispatcher) invalidateListing() {
	d.fleet.mu.Lock()
	d.fleet.stale = true
	d.fleet.mu.Unlock()
}

// invalidateVersions makes the next listing read the manifest versions and
// the profile assignments again (after a change of either).
func (d *Dispatcher) invalidateVersions() {
	d.fleet.mu.Lock()
	d.fleet.stale, d.fleet.versStale = true, true
	d.fleet.mu.Unlock()
}

// readVersions reads the effective manifest's version, each profile's and
// the tenants' assignments: a few rows of the control table (and the app
// registration, with FollowApp).
func (d *Dispatcher) readVersions(ctx context.Context) (versions, error) {
	pc := d.cfg.Permissions
	base := pc.Base
	if base == nil {
		base = cpv.DefaultManifest()
	}
	v := versions{current: base.Version()}
	consent := base.Consent
	if pc.Extras != nil {
		eff, err := d.effective(ctx)
		if err != nil {
			return versions{}, fmt.Errorf("dispatcher: read the effective manifest: %w", err)
		}
		v.current, consent = eff.manifest.Version(), eff.manifest.Consent
	}
	if pc.Profiles == nil {
		return v, nil
	}
	ps, err := pc.Profiles.Profiles(ctx)
	if err != nil {
		return versions{}, fmt.Errorf("dispatcher: read the profiles: %w", err)
	}
	v.profiles = make(map[string]string, len(ps))
	for _, p := range ps {
		if m, err := profileManifest(consent, p); err == nil {
			v.profiles[p.Name] = m.Version()
		}
	}
	if v.assigned, err = pc.Profiles.TenantProfiles(ctx); err != nil {
		return versions{}, fmt.Errorf("dispatcher: read the tenants' profiles: %w", err)
	}
	return v, nil
}

// refreshListing brings the fleet index up to date unless it was within
// listRefresh; concurrent callers share one read.
func (d *Dispatcher) refreshListing(ctx context.Context) error {
	x := &d.fleet
	x.refresh.Lock()
	defer x.refresh.Unlock()
	now := d.now()
	x.mu.Lock()
	if x.rows != nil && !x.stale && !now.Before(x.at) && now.Sub(x.at) < listRefresh {
		x.mu.Unlock()
		return nil
	}
	x.stale = false
	tSince, sSince := since(x.tenantMark), since(x.statusMark)
	readVers := x.versAt.IsZero() || x.versStale || now.Before(x.versAt) || now.Sub(x.versAt) >= versionsRefresh
	x.versStale = x.versStale && !readVers
	x.mu.Unlock()

	var vers versions
	if readVers {
		var err error
		if vers, err = d.readVersions(ctx); err != nil {
			// The listing is served all the same, with the versions last read.
			d.log.WarnContext(ctx, "tenant listing: manifest versions not read", "error", err)
			readVers = false
		}
	}

	type tenantChange struct {
		t  store.Tenant
		ts time.Time
	}
	type statusChange struct {
		s  store.Status
		ts time.Time
	}
	var tcs []tenantChange
	var scs []statusChange
	if err := d.cfg.Store.EachTenantChanged(ctx, tSince, func(t store.Tenant, ts time.Time) error {
		tcs = append(tcs, tenantChange{t, ts})
		return nil
	}); err != nil {
		d.invalidateListing()
		return err
	}
	if err := d.cfg.Store.EachStatusChanged(ctx, sSince, func(s store.Status, ts time.Time) error {
		scs = append(scs, statusChange{s, ts})
		return nil
	}); err != nil {
		d.invalidateListing()
		return err
	}

	x.mu.Lock()
	defer x.mu.Unlock()
	if x.rows == nil {
		x.rows = make(map[string]*listRow, len(tcs))
	}
	touched := map[*listRow]bool{}
	get := func(id string) *listRow {
		id = strings.ToLower(id)
		r := x.rows[id]
		if r == nil {
			r = &listRow{tenant: store.Tenant{ID: id}}
			x.rows[id] = r
		}
		touched[r] = true
		return r
	}
	for _, c := range tcs {
		r := get(c.t.ID)
		r.tenant, r.known = c.t, true
		r.tenant.ID = strings.ToLower(c.t.ID)
		if c.ts.After(x.tenantMark) {
			x.tenantMark = c.ts
		}
	}
	for _, c := range scs {
		r := get(c.s.TenantID)
		r.status, r.hasStatus = c.s, true
		if c.ts.After(x.statusMark) {
			x.statusMark = c.ts
		}
	}
	for r := range touched {
		r.index()
	}
	if readVers {
		x.vers, x.versAt = vers, now
	}
	sum := FleetSummary{ByStatus: map[string]int{}, ManifestVersion: x.vers.current}
	for _, r := range x.rows {
		sum.Total++
		sum.ByStatus[r.state()]++
		if r.tenant.Excluded {
			sum.Excluded++
		}
		if x.vers.older(r) {
			sum.Older++
		}
		if p := x.vers.assigned[r.tenant.ID]; p != "" {
			if sum.ByProfile == nil {
				sum.ByProfile = map[string]int{}
			}
			sum.ByProfile[p]++
		}
	}
	x.summary, x.at = sum, now
	return nil
}

// freshListing readies the fleet index for a request. An index read less
// than listServeStale ago, with no write of the dispatcher's own since,
// answers at once, and one background read brings it up to date when it is
// older than listRefresh: reading the store's changes scans the tables
// (Timestamp is not indexed), and a person opening the tenants page should
// not wait for it. Otherwise the request waits for the read.
func (d *Dispatcher) freshListing(ctx context.Context) error {
	x := &d.fleet
	now := d.now()
	x.mu.RLock()
	age, ready := now.Sub(x.at), x.rows != nil && !x.stale
	x.mu.RUnlock()
	switch {
	case !ready || age < 0 || age >= listServeStale:
		return d.refreshListing(ctx)
	case age < listRefresh:
		return nil
	}
	d.mu.Lock()
	if d.closing || !x.updating.CompareAndSwap(false, true) {
		d.mu.Unlock()
		return nil
	}
	d.wg.Add(1)
	d.mu.Unlock()
	go func() {
		defer d.wg.Done()
		defer x.updating.Store(false)
		if err := d.refreshListing(d.base); err != nil && d.base.Err() == nil {
			d.log.WarnContext(d.base, "tenant list not brought up to date; the next listing reads again", "error", err)
		}
	}()
	return nil
}

func since(mark time.Time) time.Time {
	if mark.IsZero() {
		return mark
	}
	return mark.Add(-listOverlap)
}

// listQuery is what GET /api/tenants asks for.
type listQuery struct {
	state    string // a state, "never", or "" for any
	access   string // an access check status (ok, warn, fail, unknown), or "" for any
	excluded *bool
	manifest string // a version, manifestOlder or manifestCurrent
	profile  string // a profile's name, or profileNone
	search   string // lower-cased
	sort     string
	desc     bool
	after    *listKey // the last row of the previous page
	limit    int
}

// listKey places a row in the order: the sort's value (a number or a
// string), then the name and the id, so the order is total.
type listKey struct {
	N    int64  `json:"n,omitempty"`
	S    string `json:"s,omitempty"`
	Name string `json:"m,omitempty"`
	ID   string `json:"i"`
}

// listSorts are the orders GET /api/tenants?sort= offers.
var listSorts = map[string]func(r *listRow) listKey{
	"name": func(r *listRow) listKey { return listKey{S: r.lname} },
	"id":   func(r *listRow) listKey { return listKey{S: r.tenant.ID} },
	"status": func(r *listRow) listKey {
		i := slices.Index(statusRank, r.state())
		if i < 0 {
			i = len(statusRank)
		}
		return listKey{N: int64(i)}
	},
	"last": func(r *listRow) listKey {
		if !r.hasStatus || r.status.LastAttempt.IsZero() {
			return listKey{}
		}
		return listKey{N: r.status.LastAttempt.UnixNano()}
	},
	"permissions": func(r *listRow) listKey {
		if !r.hasStatus {
			return listKey{N: -1}
		}
		return listKey{N: int64(r.status.AppRolesApplied + r.status.DelegatedApplied)}
	},
	"notices": func(r *listRow) listKey { return listKey{N: int64(len(r.status.Notices))} },
	"error":   func(r *listRow) listKey { return listKey{S: r.status.LastError} },
}

func (q *listQuery) key(r *listRow) listKey {
	k := listSorts[q.sort](r)
	k.Name, k.ID = r.lname, r.tenant.ID
	return k
}

// before reports whether a comes before b: the sort's value in the
// direction asked, then name and id ascending.
func (q *listQuery) before(a, b listKey) bool {
	if a.N != b.N {
		return (a.N < b.N) != q.desc
	}
	if a.S != b.S {
		return (a.S < b.S) != q.desc
	}
	if a.Name != b.Name {
		return a.Name < b.Name
	}
	return a.ID < b.ID
}

func (q *listQuery) matches(r *listRow, vs *versions) bool {
	if q.state != "" && r.state() != q.state {
		return false
	}
	if q.access != "" && r.access.Status != q.access {
		return false
	}
	if q.excluded != nil && r.tenant.Excluded != *q.excluded {
		return false
	}
	switch q.manifest {
	case "":
	case manifestOlder:
		if !vs.older(r) {
			return false
		}
	case manifestCurrent:
		if !r.hasStatus || r.status.ManifestVersion == "" || vs.older(r) {
			return false
		}
	default:
		if !r.hasStatus || r.status.ManifestVersion != q.manifest {
			return false
		}
	}
	switch p := vs.assigned[r.tenant.ID]; {
	case q.profile == "":
	case q.profile == profileNone && p != "":
		return false
	case q.profile != profileNone && p != q.profile:
		return false
	}
	return q.search == "" || strings.Contains(r.text, q.search)
}

// fingerprint ties a continuation token to the filters it was made for.
func (q *listQuery) fingerprint() string {
	h := fnv.New64a()
	ex := ""
	if q.excluded != nil {
		ex = strconv.FormatBool(*q.excluded)
	}
	_, _ = fmt.Fprintf(h, "%s\x00%s\x00%s\x00%s\x00%s\x00%s\x00%t\x00%s", q.state, ex, q.manifest, q.profile, q.search, q.sort, q.desc, q.access)
	return strconv.FormatUint(h.Sum64(), 36)
}

// listToken is a continuation token's content.
type listToken struct {
	F string  `json:"f"`
	K listKey `json:"k"`
}

func (q *listQuery) token(last listKey) string {
	b, _ := json.Marshal(listToken{F: q.fingerprint(), K: last})
	return base64.RawURLEncoding.EncodeToString(b)
}

var errToken = errors.New("continuation is not a token of this listing: start again without it, with the same filters and sort")

func (q *listQuery) readToken(s string) error {
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil || len(s) > 2048 {
		return errToken
	}
	var t listToken
	if err := json.Unmarshal(b, &t); err != nil || t.F != q.fingerprint() || t.K.ID == "" {
		return errToken
	}
	q.after = &t.K
	return nil
}

// pageHeap keeps the first rows in the order; its top is the last of them.
type pageHeap struct {
	q    *listQuery
	keys []listKey
	rows []*listRow
}

func (h *pageHeap) Len() int           { return len(h.keys) }
func (h *pageHeap) Less(i, j int) bool { return h.q.before(h.keys[j], h.keys[i]) }
func (h *pageHeap) Swap(i, j int) {
	h.keys[i], h.keys[j] = h.keys[j], h.keys[i]
	h.rows[i], h.rows[j] = h.rows[j], h.rows[i]
}
func (h *pageHeap) Push(x any) {
	e := x.(pageEntry)
	h.keys, h.rows = append(h.keys, e.k), append(h.rows, e.r)
}
func (h *pageHeap) Pop() any {
	n := len(h.keys) - 1
	e := pageEntry{h.keys[n], h.rows[n]}
	h.keys, h.rows = h.keys[:n], h.rows[:n]
	return e
}

type pageEntry struct {
	k listKey
	r *listRow
}

// page scans the index for q's next page: at most q.limit views, the
// token of the page after (empty on the last), and how many rows match.
func (d *Dispatcher) page(q *listQuery) (items []TenantView, next string, matched int) {
	x := &d.fleet
	x.mu.RLock()
	defer x.mu.RUnlock()
	h := &pageHeap{q: q}
	more := false
	for _, r := range x.rows {
		if !q.matches(r, &x.vers) {
			continue
		}
		matched++
		k := q.key(r)
		if q.after != nil && !q.before(*q.after, k) {
			continue
		}
		if h.Len() < q.limit {
			heap.Push(h, pageEntry{k, r})
			continue
		}
		more = true
		if q.before(k, h.keys[0]) {
			h.keys[0], h.rows[0] = k, r
			heap.Fix(h, 0)
		}
	}
	out := make([]pageEntry, h.Len())
	for i := len(out) - 1; i >= 0; i-- {
		out[i] = heap.Pop(h).(pageEntry)
	}
	items = make([]TenantView, len(out))
	for i, e := range out {
		items[i] = e.r.view(&x.vers)
	}
	if more && len(out) > 0 {
		next = q.token(out[len(out)-1].k)
	}
	return items, next, matched
}

// parseListQuery reads GET /api/tenants's query; false after answering 400.
func parseListQuery(w http.ResponseWriter, r *http.Request) (*listQuery, bool) {
	v := r.URL.Query()
	q := &listQuery{state: v.Get("state"), access: v.Get("access"), manifest: v.Get("manifest"), profile: v.Get("profile"), sort: v.Get("sort"),
		search: strings.ToLower(strings.TrimSpace(v.Get("q")))}
	if s := v.Get("excluded"); s != "" {
		b, err := strconv.ParseBool(s)
		if err != nil {
			writeError(w, http.StatusBadRequest, "invalidFilter", "excluded must be true or false")
			return nil, false
		}
		q.excluded = &b
	}
	switch q.access {
	case "", checks.OK, checks.Warn, checks.Fail, checks.Unknown:
	default:
		writeError(w, http.StatusBadRequest, "invalidFilter", "access must be ok, warn, fail or unknown")
		return nil, false
	}
	if len(q.search) > 200 || len(q.state) > 40 || len(q.manifest) > 200 {
		writeError(w, http.StatusBadRequest, "invalidFilter", "q, manifest and state are too long")
		return nil, false
	}
	if q.profile != "" && q.profile != profileNone && !validProfileName(q.profile) {
		writeError(w, http.StatusBadRequest, "invalidFilter", "profile must be a profile's name, or "+profileNone+" for tenants in none")
		return nil, false
	}
	if q.sort == "" {
		q.sort = "name"
	}
	if _, ok := listSorts[q.sort]; !ok {
		writeError(w, http.StatusBadRequest, "invalidSort", "sort must be name, id, status, last, permissions, notices or error")
		return nil, false
	}
	switch v.Get("dir") {
	case "", "asc":
	case "desc":
		q.desc = true
	default:
		writeError(w, http.StatusBadRequest, "invalidSort", "dir must be asc or desc")
		return nil, false
	}
	limit, ok := queryLimit(w, r, listDefaultLimit, listMaxLimit)
	if !ok {
		return nil, false
	}
	q.limit = limit
	if c := v.Get("continuation"); c != "" {
		if err := q.readToken(c); err != nil {
			writeError(w, http.StatusBadRequest, "invalidContinuation", err.Error())
			return nil, false
		}
	}
	return q, true
}

// handleListTenants serves GET /api/tenants. Filters: state= (a state, or
// "never"), access=ok|warn|fail|unknown (the access check), excluded=true|false, manifest= (a manifest version, "older":
// the latest refresh applied another manifest than the tenant's current
// one, the effective manifest or its profile's, or "current"), profile= (a
// profile's name, or "(none)"), q= (a
// search of name, domain, id, error and notices); sort=name|id|status|
// last|permissions|notices|error and dir=asc|desc. With limit= or
// continuation= the answer is a TenantPage; without, every match as a JSON
// array, streamed a page at a time. Statuses of tenants that have no row
// in the tenants table (refreshed by id only) are listed too; they are
// never excluded.
func (d *Dispatcher) handleListTenants(w http.ResponseWriter, r *http.Request, _ principal) {
	q, ok := parseListQuery(w, r)
	if !ok {
		return
	}
	if err := d.freshListing(r.Context()); err != nil {
		d.unavailable(w, r, err)
		return
	}
	v := r.URL.Query()
	if v.Has("limit") || v.Has("continuation") {
		items, next, matched := d.page(q)
		d.fleet.mu.RLock()
		p := TenantPage{Items: items, Continuation: next, Matched: matched, Summary: d.fleet.summary, AsOf: d.fleet.at.UTC()}
		d.fleet.mu.RUnlock()
		writeJSON(w, http.StatusOK, p)
		return
	}
	jsonHeaders(w.Header())
	w.WriteHeader(http.StatusOK)
	enc := json.NewEncoder(w)
	sep := "["
	q.limit = listMaxLimit
	for {
		items, next, _ := d.page(q)
		for _, it := range items {
			if _, err := w.Write([]byte(sep)); err != nil {
				return
			}
			sep = ","
			if err := enc.Encode(it); err != nil {
				return
			}
		}
		if next == "" {
			break
		}
		if err := q.readToken(next); err != nil {
			return
		}
	}
	if sep == "[" {
		_, _ = w.Write([]byte("["))
	}
	_, _ = w.Write([]byte("]\n"))
}
