package partnercenter

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"time"

	"github.com/cpvrefresh/cpvrefresh/internal/cpv"
	"github.com/cpvrefresh/cpvrefresh/internal/retry"
)

// WebhookRegistration is the partner's webhook registration in Partner
// Center (/webhooks/v1/registration).
type WebhookRegistration struct {
	SubscriberID  string    `json:"subscriberId,omitempty"`
	WebhookURL    string    `json:"webhookUrl"`
	WebhookEvents []string  `json:"webhookEvents"`
	LastModified  time.Time `json:"lastModifiedTimestamp,omitzero"`
}

// WebhookTest is the state of a test event Partner Center sent.
type WebhookTest struct {
	CorrelationID string `json:"correlationId"`
	Status        string `json:"status"`
	CallbackURL   string `json:"callbackUrl"`
	Results       []struct {
		ResponseCode    string    `json:"responseCode"`
		ResponseMessage string    `json:"responseMessage"`
		SystemError     bool      `json:"systemError"`
		DateTimeUTC     time.Time `json:"dateTimeUtc"`
	} `json:"results"`
}

const registrationPath = "/webhooks/v1/registration"

// WebhookRegistration reads the partner's registration; false (and no
// error) when there is none.
func (pc *Client) WebhookRegistration(ctx context.Context) (WebhookRegistration, bool, error) {
	var reg WebhookRegistration
	found := false
	err := pc.do(ctx, "read webhook registration", "", http.MethodGet, pc.base+registrationPath, nil,
		func(status int, pe pcError) (bool, *cpv.Error) {
			switch {
			case status == http.StatusNotFound:
				return true, nil
			case status == http.StatusOK:
				if err := json.Unmarshal(pe.raw, &reg); err != nil {
					return false, &cpv.Error{Class: retry.Permanent, Advice: "Partner Center's answer is not a webhook registration"}
				}
				found = true
				return true, nil
			}
			return false, nil
		})
	return reg, found, err
}

// RegisterWebhook creates the registration (update false: POST) or
// replaces it (PUT) and returns what Partner Center recorded.
func (pc *Client) RegisterWebhook(ctx context.Context, reg WebhookRegistration, update bool) (WebhookRegistration, error) {
	if u, err := url.Parse(reg.WebhookURL); err != nil || u.Scheme == "" || u.Host == "" || len(reg.WebhookEvents) == 0 {
		return WebhookRegistration{}, errors.New("partnercenter: register webhook: an absolute URL and at least one event are required")
	}
	body, err := json.Marshal(WebhookRegistration{WebhookURL: reg.WebhookURL, WebhookEvents: reg.WebhookEvents})
	if err != nil {
		return WebhookRegistration{}, fmt.Errorf("partnercenter: register webhook: %w", err)
	}
	method := http.MethodPost
	if update {
		method = http.MethodPut
	}
	var out WebhookRegistration
	err = pc.do(ctx, "register webhook", "", method, pc.base+registrationPath, body,
		func(status int, pe pcError) (bool, *cpv.Error) {
			if status != http.StatusOK && status != http.StatusCreated {
				return false, nil
			}
			if err := json.Unmarshal(pe.raw, &out); err != nil {
				return false, &cpv.Error{Class: retry.Permanent, Advice: "Partner Center's answer is not a webhook registration"}
			}
			return true, nil
		})
	return out, err
}

// SendWebhookTest asks Partner Center to send its test event to the
// registered URL and returns the correlation id to follow it with.
func (pc *Client) SendWebhookTest(ctx context.Context) (string, error) {
	var id string
	err := pc.do(ctx, "send webhook test event", "", http.MethodPost, pc.base+registrationPath+"/validationEvents", []byte("{}"),
		func(status int, pe pcError) (bool, *cpv.Error) {
			if status != http.StatusOK && status != http.StatusCreated {
				return false, nil
			}
			// Documented as a string; an object with correlationId is taken too.
			var obj struct {
				CorrelationID string `json:"correlationId"`
			}
			if json.Unmarshal(pe.raw, &id) != nil {
				if json.Unmarshal(pe.raw, &obj) != nil || obj.CorrelationID == "" {
					return false, &cpv.Error{Class: retry.Permanent, Advice: "Partner Center's answer has no correlation id"}
				}
				id = obj.CorrelationID
			}
			return true, nil
		})
	return id, err
}

// WebhookTest reads the state of a test event by its correlation id.
func (pc *Client) WebhookTest(ctx context.Context, correlationID string) (WebhookTest, error) {
	var out WebhookTest
	u := pc.base + registrationPath + "/validationEvents/" + url.PathEscape(correlationID)
	err := pc.do(ctx, "read webhook test event", "", http.MethodGet, u, nil,
		func(status int, pe pcError) (bool, *cpv.Error) {
			if status != http.StatusOK {
				return false, nil
			}
			if err := json.Unmarshal(pe.raw, &out); err != nil {
				return false, &cpv.Error{Class: retry.Permanent, Advice: "Partner Center's answer is not a test event's state"}
			}
			return true, nil
		})
	return out, err
}
