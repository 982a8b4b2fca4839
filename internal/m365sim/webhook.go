package m365sim

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"
)

// Partner Center webhook event names the simulator sends.
const (
	EventRelationshipApproved  = "granular-admin-relationship-approved"
	EventRelationshipActivated = "granular-admin-relationship-activated"
	EventAccessAssignmentAdded = "granular-admin-access-assignment-created"
	EventResellerAccepted      = "reseller-relationship-accepted-by-customer"
)

// Event is a Partner Center webhook event, with Partner Center's JSON names.
type Event struct {
	EventName             string    `json:"EventName"`
	ResourceUri           string    `json:"ResourceUri"`
	ResourceName          string    `json:"ResourceName"`
	AuditUri              string    `json:"AuditUri"`
	ResourceChangeUtcDate time.Time `json:"ResourceChangeUtcDate"`
}

// RelationshipEvent builds a granular-admin-relationship-* event for a GDAP
// relationship: its ResourceUri ends with the relationship id.
func (s *Sim) RelationshipEvent(eventName, relationshipID string) Event {
	return Event{
		EventName:             eventName,
		ResourceUri:           pcAudience + "/v1/delegatedAdminRelationships/" + relationshipID,
		ResourceName:          "DelegatedAdminRelationship",
		AuditUri:              pcAudience + "/v1/auditrecords?filter=resourceId%20eq%20%27" + relationshipID + "%27",
		ResourceChangeUtcDate: s.now().UTC().Truncate(time.Millisecond),
	}
}

// SignWebhook signs body as Partner Center does (RSA PKCS#1 v1.5 over its
// SHA-256) and returns the base64 signature.
func (s *Sim) SignWebhook(body []byte) (string, error) {
	sum := sha256.Sum256(body)
	sig, err := rsa.SignPKCS1v15(rand.Reader, s.signKey, crypto.SHA256, sum[:])
	if err != nil {
		return "", fmt.Errorf("m365sim: sign webhook: %w", err)
	}
	return base64.StdEncoding.EncodeToString(sig), nil
}

// SendWebhook JSON-encodes ev, signs the raw body and POSTs it to url with
// Partner Center's headers: Authorization: Signature <base64>,
// X-MS-Certificate-Url (WebhookCertURL), X-MS-Signature-Algorithm: rsa-sha256.
// The caller closes the response body.
func (s *Sim) SendWebhook(ctx context.Context, url string, ev Event) (*http.Response, error) {
	certURL := s.WebhookCertURL()
	if certURL == "" {
		return nil, errors.New("m365sim: send webhook: the simulator is not started (no certificate URL)")
	}
	body, err := json.Marshal(ev)
	if err != nil {
		return nil, fmt.Errorf("m365sim: send webhook: encode event: %w", err)
	}
	sig, err := s.SignWebhook(body)
	if err != nil {
		return nil, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("m365sim: send webhook: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Signature "+sig)
	req.Header.Set("X-MS-Certificate-Url", certURL)
	req.Header.Set("X-MS-Signature-Algorithm", "rsa-sha256")
	resp, err := s.hookClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("m365sim: send webhook %s: %w", ev.EventName, err)
	}
	s.log.InfoContext(ctx, "webhook sent", "event", ev.EventName, "status", resp.StatusCode)
	return resp, nil
}

// Onboard adds a tenant (AddTenant) and, when webhookURL is not empty,
// sends the granular-admin-relationship-approved event for its relationship
// to it: Partner Center's "new customer" flow. It returns the tenant and the
// webhook's HTTP status (0 when none was sent).
func (s *Sim) Onboard(ctx context.Context, webhookURL string, nt NewTenant) (FleetTenant, int, error) {
	ft := s.AddTenant(nt)
	if webhookURL == "" {
		return ft, 0, nil
	}
	resp, err := s.SendWebhook(ctx, webhookURL, s.RelationshipEvent(EventRelationshipApproved, ft.RelationshipID))
	if err != nil {
		return ft, 0, err
	}
	defer resp.Body.Close()
	return ft, resp.StatusCode, nil
}
