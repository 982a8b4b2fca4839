// Package gdap reads the partner's GDAP (granular delegated admin privileges)
// relationships from Microsoft Graph
// (tenantRelationships/delegatedAdminRelationships): every relationship, page
// by page, and one by id. It uses plain net/http, not the Graph SDK, so that
// the dispatcher stays small and fast to build; it sits beside internal/graph
// because it is Graph code too.
package gdap

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"

	"github.com/cpvrefresh/cpvrefresh/internal/cpv"
	"github.com/cpvrefresh/cpvrefresh/internal/cpvtype"
	"github.com/cpvrefresh/cpvrefresh/internal/entra"
	"github.com/cpvrefresh/cpvrefresh/internal/retry"
)

// GraphScope is the scope of the partner-tenant token used to read GDAP
// relationships.
const GraphScope = "https://graph.microsoft.com/.default"

// relationshipsPath is the Graph collection of the partner's GDAP relationships.
const relationshipsPath = "/tenantRelationships/delegatedAdminRelationships"

// MaxPageSize is the largest $top Graph allows for relationships.
const MaxPageSize = 300

// maxGraphErrorBody bounds how much of an error response is read.
const maxGraphErrorBody = 64 << 10

// Relationship is one GDAP relationship, with the fields the dispatcher
// and the access checks use.
type Relationship struct {
	ID          string   `json:"id"`
	DisplayName string   `json:"displayName"`
	Status      string   `json:"status"`
	Customer    Customer `json:"customer"`
	// AccessDetails are the Entra roles the relationship grants.
	AccessDetails AccessDetails `json:"accessDetails"`
	// EndDateTime is when it ends (unless AutoExtendDuration extends it).
	EndDateTime *time.Time `json:"endDateTime"`
	// AutoExtendDuration is an ISO 8601 duration ("P180D"); "PT0S" or ""
	// when it does not extend itself.
	AutoExtendDuration string `json:"autoExtendDuration"`
}

// AccessDetails lists the roles of a relationship or an access assignment.
type AccessDetails struct {
	UnifiedRoles []UnifiedRole `json:"unifiedRoles"`
}

// RoleIDs returns the role definition ids, lower-cased.
func (a AccessDetails) RoleIDs() []string {
	out := make([]string, 0, len(a.UnifiedRoles))
	for _, r := range a.UnifiedRoles {
		out = append(out, strings.ToLower(r.RoleDefinitionID))
	}
	return out
}

// UnifiedRole is one Entra role (its template id).
type UnifiedRole struct {
	RoleDefinitionID string `json:"roleDefinitionId"`
}

// Customer is the customer side of a GDAP relationship.
type Customer struct {
	TenantID    string `json:"tenantId"`
	DisplayName string `json:"displayName"`
}

// Client reads the partner's GDAP relationships.
type Client struct {
	base     *url.URL
	cred     azcore.TokenCredential
	client   *http.Client
	pageSize int
}

// Config configures a Client.
type Config struct {
	// GraphURL is the Graph base URL, e.g. https://graph.microsoft.com/v1.0.
	GraphURL string
	// PartnerTenantID is the partner's own tenant, where the relationships live.
	PartnerTenantID string
	// Credential issues the partner-tenant token (entra.NewCredential).
	Credential azcore.TokenCredential
	// HTTPClient sends the requests; http.DefaultClient when nil.
	HTTPClient *http.Client
	// PageSize is $top (1..300; 300 when 0).
	PageSize int
}

// New checks cfg and returns a Client.
func New(cfg Config) (*Client, error) {
	u, err := url.Parse(strings.TrimRight(cfg.GraphURL, "/"))
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return nil, fmt.Errorf("gdap: graph URL %q is not an absolute http(s) URL", cfg.GraphURL)
	}
	if !cpvtype.IsGUID(cfg.PartnerTenantID) {
		return nil, fmt.Errorf("gdap: partner tenant id %q is not a GUID", cfg.PartnerTenantID)
	}
	if cfg.Credential == nil {
		return nil, errors.New("gdap: a credential is required")
	}
	size := cfg.PageSize
	switch {
	case size == 0:
		size = MaxPageSize
	case size < 1 || size > MaxPageSize:
		return nil, fmt.Errorf("gdap: relationship page size %d: want 1..%d", size, MaxPageSize)
	}
	client := cfg.HTTPClient
	if client == nil {
		client = http.DefaultClient
	}
	return &Client{
		base:     u,
		cred:     entra.ForTenant(cfg.Credential, cfg.PartnerTenantID),
		client:   client,
		pageSize: size,
	}, nil
}

// Relationships streams every GDAP relationship of the partner to fn, one
// page at a time; fn must not keep the slice. Pages are decoded as they
// arrive, and @odata.nextLink is followed only to the Graph host (the
// request carries the partner's token).
func (d *Client) Relationships(ctx context.Context, fn func([]Relationship) error) error {
	next := d.base.String() + relationshipsPath + "?$top=" + strconv.Itoa(d.pageSize)
	page := make([]Relationship, 0, d.pageSize)
	for next != "" {
		u, err := url.Parse(next)
		if err != nil || !sameOrigin(u, d.base) {
			return cpv.PermanentError("list relationships", fmt.Errorf("next link points outside %s", d.base.Host),
				"Graph returned a next link to another host; check CPV_GRAPH_URL")
		}
		page = page[:0]
		next, err = d.listPage(ctx, u.String(), &page)
		if err != nil {
			return err
		}
		if err := fn(page); err != nil {
			return err
		}
	}
	return nil
}

// listPage reads one page into *page and returns the next link.
func (d *Client) listPage(ctx context.Context, pageURL string, page *[]Relationship) (string, error) {
	const op = "list relationships"
	resp, err := d.get(ctx, op, pageURL)
	if err != nil {
		return "", err
	}
	defer drain(resp.Body)
	dec := json.NewDecoder(resp.Body)
	var next string
	if err := expectDelim(dec, '{'); err != nil {
		return "", decodeError(op, err)
	}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return "", decodeError(op, err)
		}
		key, _ := tok.(string)
		switch key {
		case "value":
			if err := expectDelim(dec, '['); err != nil {
				return "", decodeError(op, err)
			}
			for dec.More() {
				var r Relationship
				if err := dec.Decode(&r); err != nil {
					return "", decodeError(op, err)
				}
				*page = append(*page, r)
			}
			if err := expectDelim(dec, ']'); err != nil {
				return "", decodeError(op, err)
			}
		case "@odata.nextLink":
			if err := dec.Decode(&next); err != nil {
				return "", decodeError(op, err)
			}
		default:
			var skip json.RawMessage
			if err := dec.Decode(&skip); err != nil {
				return "", decodeError(op, err)
			}
		}
	}
	return next, nil
}

// Relationship reads one relationship by id (for webhooks).
func (d *Client) Relationship(ctx context.Context, id string) (Relationship, error) {
	op := "get relationship " + id
	if !ValidRelationshipID(id) {
		return Relationship{}, cpv.PermanentError(op, errors.New("not a relationship id"), "")
	}
	resp, err := d.get(ctx, op, d.base.String()+relationshipsPath+"/"+url.PathEscape(id))
	if err != nil {
		return Relationship{}, err
	}
	defer drain(resp.Body)
	var r Relationship
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&r); err != nil {
		return Relationship{}, decodeError(op, err)
	}
	return r, nil
}

// Retries of one Graph request during discovery: throttling waits for the
// server's Retry-After (at most maxWait), 5xx and network errors back off
// exponentially, for as long as budget allows. A run that gave up would
// enqueue only the tenants already known, so a transient error is worth
// minutes: the budget is time, not a count of attempts, because a count
// small enough to fail fast on an outage loses discovery to a throttled
// stretch (at 30% 429s, five attempts fail one listing in 400).
const (
	budget  = 2 * time.Minute
	maxWait = 30 * time.Second
)

// mayRetry says whether a request first sent at start may be sent again
// after waiting wait.
func mayRetry(start time.Time, wait time.Duration) bool {
	return wait <= maxWait && time.Since(start)+wait <= budget
}

// backoff spaces retries of 5xx and network failures.
var backoff = retry.Backoff{Base: time.Second, Max: 8 * time.Second}

// get sends an authenticated GET and returns a 200 response; any other
// answer is a classified *cpv.Error.
func (d *Client) get(ctx context.Context, op, u string) (*http.Response, error) {
	return d.send(ctx, op, http.MethodGet, u, nil)
}

// send is get for any method, with a JSON body (nil for none).
func (d *Client) send(ctx context.Context, op, method, u string, body []byte) (*http.Response, error) {
	start := time.Now()
	for attempt := 1; ; attempt++ {
		resp, err := d.sendOnce(ctx, op, method, u, body)
		if err == nil {
			return resp, nil
		}
		class, wait := cpv.ClassOf(err)
		if ctx.Err() != nil || class == retry.Permanent {
			return nil, err
		}
		wait = max(wait, backoff.Delay(attempt))
		if !mayRetry(start, wait) {
			return nil, err
		}
		if err := retry.Wait(ctx, wait); err != nil {
			return nil, fmt.Errorf("gdap: %s: %w", op, err)
		}
	}
}

func (d *Client) sendOnce(ctx context.Context, op, method, u string, body []byte) (*http.Response, error) {
	tok, err := d.cred.GetToken(ctx, policy.TokenRequestOptions{Scopes: []string{GraphScope}})
	if err != nil {
		return nil, fmt.Errorf("gdap: %s: partner token: %w", op, err)
	}
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, rd)
	if err != nil {
		return nil, cpv.PermanentError(op, err, "")
	}
	req.Header.Set("Authorization", "Bearer "+tok.Token)
	req.Header.Set("Accept", "application/json")
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := d.client.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("gdap: %s: %w", op, ctx.Err())
		}
		return nil, &cpv.Error{Op: op, Class: retry.Retryable, Err: retry.URLError(err)}
	}
	if resp.StatusCode == http.StatusOK {
		return resp, nil
	}
	defer drain(resp.Body)
	return nil, graphError(op, resp)
}

// graphError classifies a Graph error answer, keeping Graph's code and
// message (never the request or its token).
func graphError(op string, resp *http.Response) error {
	var env struct {
		Error struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"error"`
	}
	_ = json.NewDecoder(io.LimitReader(resp.Body, maxGraphErrorBody)).Decode(&env)
	msg := env.Error.Message
	if len(msg) > 300 {
		msg = msg[:300]
	}
	e := &cpv.Error{Op: op, Status: resp.StatusCode, Code: env.Error.Code,
		Err: fmt.Errorf("HTTP %d %s", resp.StatusCode, strings.TrimSpace(msg))}
	e.Class, e.RetryAfter = retry.Classify(resp.StatusCode, resp.Header)
	switch resp.StatusCode {
	case http.StatusUnauthorized, http.StatusForbidden:
		e.Advice = "the partner app cannot read GDAP relationships: grant it DelegatedAdminRelationship.Read.All in the partner tenant"
	case http.StatusNotFound:
		e.Advice = "the relationship does not exist in the partner tenant"
	}
	return e
}

func decodeError(op string, err error) error {
	return &cpv.Error{Op: op, Class: retry.Retryable, Err: fmt.Errorf("decode Graph answer: %w", err)}
}

func expectDelim(dec *json.Decoder, want json.Delim) error {
	tok, err := dec.Token()
	if err != nil {
		return err
	}
	if d, ok := tok.(json.Delim); !ok || d != want {
		return fmt.Errorf("want %q, got %v", want, tok)
	}
	return nil
}

func sameOrigin(u, base *url.URL) bool {
	return strings.EqualFold(u.Scheme, base.Scheme) && strings.EqualFold(u.Host, base.Host)
}

func drain(body io.ReadCloser) {
	_, _ = io.Copy(io.Discard, io.LimitReader(body, 1<<20))
	_ = body.Close()
}

// ValidRelationshipID accepts GDAP relationship ids (a GUID, or two GUIDs
// joined by a hyphen): letters, digits and hyphens, bounded.
func ValidRelationshipID(id string) bool {
	if id == "" || len(id) > 128 {
		return false
	}
	for _, c := range id {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}
