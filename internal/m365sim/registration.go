package m365sim

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
)

// EventTest is Partner Center's test event, sent to the registered URL on
// request (POST /webhooks/v1/registration/validationEvents).
const EventTest = "test-created"

// pcCodeRegistrationExists answers a second POST of a registration:
// Partner Center says to use PUT (the code is this simulator's choice).
const pcCodeRegistrationExists = 600043

// Registration is the partner's webhook registration, with Partner
// Center's JSON names.
type Registration struct {
	SubscriberID          string    `json:"subscriberId"`
	WebhookURL            string    `json:"webhookUrl"`
	WebhookEvents         []string  `json:"webhookEvents"`
	LastModifiedTimestamp time.Time `json:"lastModifiedTimestamp"`
}

// ValidationResult is one delivery attempt of a test event.
type ValidationResult struct {
	ResponseCode    string    `json:"responseCode"`
	ResponseMessage string    `json:"responseMessage"`
	SystemError     bool      `json:"systemError"`
	DateTimeUTC     time.Time `json:"dateTimeUtc"`
}

// ValidationEvent is the state of a test event, by its correlation id.
type ValidationEvent struct {
	CorrelationID string             `json:"correlationId"`
	PartnerID     string             `json:"partnerId"`
	Status        string             `json:"status"`
	CallbackURL   string             `json:"callbackUrl"`
	Results       []ValidationResult `json:"results"`
}

// registry holds the webhook registration and the test events sent.
type registry struct {
	mu          sync.Mutex
	reg         *Registration
	validations map[string]ValidationEvent
}

// supportedEvents are the event names a registration may list.
var supportedEvents = []string{
	EventTest, EventRelationshipApproved, EventRelationshipActivated, EventAccessAssignmentAdded,
	"granular-admin-access-assignment-updated", "granular-admin-access-assignment-activated",
	"granular-admin-relationship-created", "granular-admin-relationship-updated",
	"granular-admin-relationship-terminated", "granular-admin-relationship-expired",
	EventResellerAccepted, "indirect-reseller-relationship-accepted-by-customer",
}

// WebhookRegistration returns the partner's webhook registration (false if
// none), for tests.
func (s *Sim) WebhookRegistration() (Registration, bool) {
	s.hooks.mu.Lock()
	defer s.hooks.mu.Unlock()
	if s.hooks.reg == nil {
		return Registration{}, false
	}
	r := *s.hooks.reg
	r.WebhookEvents = slices.Clone(r.WebhookEvents)
	return r, true
}

// SetWebhookRegistration replaces the registration (pointing it elsewhere,
// as another tool would), for tests; an empty URL removes it.
func (s *Sim) SetWebhookRegistration(webhookURL string, events []string) {
	s.hooks.mu.Lock()
	defer s.hooks.mu.Unlock()
	if webhookURL == "" {
		s.hooks.reg = nil
		return
	}
	s.hooks.reg = &Registration{SubscriberID: s.partnerID.String(), WebhookURL: webhookURL,
		WebhookEvents: slices.Clone(events), LastModifiedTimestamp: s.now().UTC()}
}

// serveWebhookAPI serves Partner Center's webhook registration API:
//
//	GET|POST|PUT /webhooks/v1/registration
//	GET /webhooks/v1/registration/events
//	POST /webhooks/v1/registration/validationEvents
//	GET /webhooks/v1/registration/validationEvents/{correlationId}
//
// A test event is delivered, signed, before POST validationEvents answers;
// its result is then read with GET (Partner Center delivers later and
// keeps the results for 7 days).
func (s *Sim) serveWebhookAPI(w http.ResponseWriter, r *http.Request) {
	rest := strings.Trim(strings.TrimPrefix(r.URL.Path, "/webhooks/v1/registration"), "/")
	label := r.Method + " /webhooks/v1/registration"
	if rest != "" {
		label += "/" + strings.SplitN(rest, "/", 2)[0]
	}
	s.stats.endpoint(label)
	s.stats.add("", cPartnerCenter)
	if _, ok := s.pcAuthenticate(w, r); !ok {
		return
	}
	switch {
	case rest == "" && r.Method == http.MethodGet:
		reg, ok := s.WebhookRegistration()
		if !ok {
			writePCError(w, http.StatusNotFound, pcCodeNotFound, "No webhook registration was found for this partner.")
			return
		}
		writeJSON(w, http.StatusOK, reg)
	case rest == "" && (r.Method == http.MethodPost || r.Method == http.MethodPut):
		s.putRegistration(w, r)
	case rest == "events" && r.Method == http.MethodGet:
		writeJSON(w, http.StatusOK, supportedEvents)
	case rest == "validationEvents" && r.Method == http.MethodPost:
		s.sendTestEvent(w, r)
	case strings.HasPrefix(rest, "validationEvents/") && r.Method == http.MethodGet:
		id := strings.TrimPrefix(rest, "validationEvents/")
		s.hooks.mu.Lock()
		v, ok := s.hooks.validations[id]
		s.hooks.mu.Unlock()
		if !ok {
			writePCError(w, http.StatusNotFound, pcCodeNotFound, "No validation event was found with correlation id '"+truncate(id, 64)+"'.")
			return
		}
		writeJSON(w, http.StatusOK, v)
	default:
		writePCError(w, http.StatusNotFound, pcCodeNotFound, "The requested resource was not found.")
	}
}

func (s *Sim) putRegistration(w http.ResponseWriter, r *http.Request) {
	var in Registration
	if err := json.NewDecoder(io.LimitReader(r.Body, 64<<10)).Decode(&in); err != nil {
		writePCError(w, http.StatusBadRequest, pcCodeBadRequest, "The request body is not a webhook registration.")
		return
	}
	u, err := url.Parse(in.WebhookURL)
	// Partner Center requires https; the simulator also takes http, as the
	// local stack's dispatcher listens on it.
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		writePCError(w, http.StatusBadRequest, pcCodeBadRequest, "webhookUrl must be an absolute https URL.")
		return
	}
	if len(in.WebhookEvents) == 0 {
		writePCError(w, http.StatusBadRequest, pcCodeBadRequest, "webhookEvents must list at least one event.")
		return
	}
	for _, e := range in.WebhookEvents {
		if !slices.Contains(supportedEvents, e) {
			writePCError(w, http.StatusBadRequest, pcCodeBadRequest, "The event '"+truncate(e, 100)+"' is not supported.")
			return
		}
	}
	s.hooks.mu.Lock()
	defer s.hooks.mu.Unlock()
	switch {
	case r.Method == http.MethodPost && s.hooks.reg != nil:
		writePCError(w, http.StatusConflict, pcCodeRegistrationExists, "A registration already exists. Use PUT to update it.")
		return
	case r.Method == http.MethodPut && s.hooks.reg == nil:
		writePCError(w, http.StatusNotFound, pcCodeNotFound, "No webhook registration was found for this partner.")
		return
	}
	reg := Registration{SubscriberID: s.partnerID.String(), WebhookURL: in.WebhookURL,
		WebhookEvents: slices.Clone(in.WebhookEvents), LastModifiedTimestamp: s.now().UTC()}
	s.hooks.reg = &reg
	writeJSON(w, http.StatusOK, reg)
}

// sendTestEvent delivers a signed test-created event to the registered URL
// and records the result under a new correlation id.
func (s *Sim) sendTestEvent(w http.ResponseWriter, r *http.Request) {
	reg, ok := s.WebhookRegistration()
	if !ok {
		writePCError(w, http.StatusNotFound, pcCodeNotFound, "No webhook registration was found for this partner.")
		return
	}
	id := uuid.NewString()
	ev := Event{
		EventName:             EventTest,
		ResourceUri:           pcAudience + "/webhooks/v1/registration/validationEvents/" + id,
		ResourceName:          "test",
		ResourceChangeUtcDate: s.now().UTC().Truncate(time.Millisecond),
	}
	res := ValidationResult{DateTimeUTC: s.now().UTC()}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), 30*time.Second)
	resp, err := s.SendWebhook(ctx, reg.WebhookURL, ev)
	cancel()
	if err != nil {
		res.ResponseCode, res.ResponseMessage, res.SystemError = "", err.Error(), true
	} else {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
		resp.Body.Close()
		res.ResponseCode = strings.ReplaceAll(http.StatusText(resp.StatusCode), " ", "")
		res.ResponseMessage = strings.TrimSpace(string(body))
	}
	v := ValidationEvent{CorrelationID: id, PartnerID: s.partnerID.String(), Status: "completed",
		CallbackURL: reg.WebhookURL, Results: []ValidationResult{res}}
	s.hooks.mu.Lock()
	if s.hooks.validations == nil {
		s.hooks.validations = map[string]ValidationEvent{}
	}
	s.hooks.validations[id] = v
	s.hooks.mu.Unlock()
	writeJSON(w, http.StatusOK, map[string]string{"correlationId": id})
}
