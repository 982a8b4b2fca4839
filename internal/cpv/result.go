package cpv

import (
	"encoding/json"
	"time"

	"github.com/cpvrefresh/cpvrefresh/internal/cpvtype"
	"github.com/cpvrefresh/cpvrefresh/internal/retry"
)

// Detail is one change of a refresh, as the history shows it.
type Detail struct {
	Kind          ChangeKind `json:"kind"`
	ResourceAppID string     `json:"resourceAppId,omitempty"`
	ResourceName  string     `json:"resourceName,omitempty"`
	// Permission is the app role's value, or the grant's scopes.
	Permission string  `json:"permission,omitempty"`
	Outcome    Verdict `json:"outcome"`
	Message    string  `json:"message,omitempty"`
}

// Counts tallies one kind of permission (application roles, or delegated
// scopes) of a refresh against what the manifest asks for.
type Counts struct {
	// Wanted is how many the manifest asks for.
	Wanted int `json:"wanted"`
	// Applied were written by this refresh.
	Applied int `json:"applied"`
	// AlreadyPresent were there already (or written concurrently).
	AlreadyPresent int `json:"alreadyPresent"`
	// Unavailable cannot exist in the tenant (no licence, not published).
	Unavailable int `json:"unavailable"`
	// Failed were attempted and failed.
	Failed int `json:"failed"`
}

// Result is the full account of one refresh. It is JSON-serializable and
// becomes the history row's detail.
type Result struct {
	Tenant          string         `json:"tenant"`
	Op              cpvtype.Op     `json:"op"`
	Status          cpvtype.Status `json:"status"`
	ManifestVersion string         `json:"manifestVersion"`
	Started         time.Time      `json:"started"`
	// Duration is serialized as "durationMs".
	Duration time.Duration `json:"-"`
	DryRun   bool          `json:"dryRun,omitempty"`
	// Consented: the app had no service principal (or no usable consent)
	// and was consented through Partner Center by this refresh.
	Consented bool `json:"consented,omitempty"`
	// NoChange: nothing was written to the tenant.
	NoChange  bool     `json:"noChange"`
	Changes   []Detail `json:"changes,omitempty"`
	AppRoles  Counts   `json:"appRoles"`
	Delegated Counts   `json:"delegated"`
	// DirectoryRoles tallies the manifest's directory roles (omitted when
	// the manifest lists none).
	DirectoryRoles Counts   `json:"directoryRoles,omitzero"`
	Notices        []string `json:"notices,omitempty"`

	Error     string      `json:"error,omitempty"`
	ErrorCode string      `json:"errorCode,omitempty"`
	Advice    string      `json:"advice,omitempty"`
	Class     retry.Class `json:"class,omitempty"`
	// RetryAfter is the server's delay for a throttled failure,
	// serialized as "retryAfterSeconds".
	RetryAfter time.Duration `json:"-"`

	Trips TripCounts `json:"trips"`
	// Plan is the computed plan of a dry run.
	Plan []Change `json:"plan,omitempty"`
}

type resultJSON Result

type resultWire struct {
	*resultJSON
	DurationMS        int64   `json:"durationMs"`
	RetryAfterSeconds float64 `json:"retryAfterSeconds,omitempty"`
}

// MarshalJSON writes durations as milliseconds and seconds.
func (r Result) MarshalJSON() ([]byte, error) {
	rj := resultJSON(r)
	return json.Marshal(resultWire{resultJSON: &rj, DurationMS: r.Duration.Milliseconds(), RetryAfterSeconds: r.RetryAfter.Seconds()})
}

// UnmarshalJSON reads what MarshalJSON writes.
func (r *Result) UnmarshalJSON(b []byte) error {
	w := resultWire{resultJSON: (*resultJSON)(r)}
	if err := json.Unmarshal(b, &w); err != nil {
		return err
	}
	r.Duration = time.Duration(w.DurationMS) * time.Millisecond
	r.RetryAfter = time.Duration(w.RetryAfterSeconds * float64(time.Second))
	return nil
}
