package notify_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/uuid"

	"github.com/cpvrefresh/cpvrefresh/internal/cpvtype"
	"github.com/cpvrefresh/cpvrefresh/internal/notify"
)

// URLs stored in the settings are used besides the environment's: shown
// redacted, told the digests and the test message, removed again; a bad
// one is refused without its text.
func TestStoredURLs(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	env, stored := newReceiver(t), newReceiver(t)
	var logs bytes.Buffer
	log := slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	n := newNotifier(t, s, func(c *notify.Config) { c.Logger = log }, env.url())
	ctx := context.Background()

	var texts []string
	for _, bad := range []string{"nosuchservice://" + token + "@example.com/" + token, "teams://" + token, "generic://a " + token, ""} {
		_, err := n.AddURL(ctx, bad)
		if !errors.Is(err, notify.ErrInvalid) {
			t.Errorf("a bad URL: %v, want ErrInvalid", err)
		}
		texts = append(texts, fmt.Sprint(err))
	}
	if _, err := n.AddURL(ctx, env.url()); !errors.Is(err, notify.ErrInvalid) {
		t.Errorf("the environment's URL again: %v, want ErrInvalid", err)
	}
	c, err := n.AddURL(ctx, " "+stored.url()+"\n")
	if err != nil {
		t.Fatal(err)
	}
	host := stored.srv.Listener.Addr().String()
	if want := (notify.Channel{Origin: notify.OriginSettings, Index: 1, Service: "generic", URL: "generic://" + host}); c != want {
		t.Errorf("added %+v, want %+v", c, want)
	}
	chans, err := n.Channels(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := []notify.Channel{
		{Origin: notify.OriginEnvironment, Index: 1, Service: "generic", URL: "generic://" + env.srv.Listener.Addr().String()},
		c,
	}
	if diff := cmp.Diff(want, chans); diff != "" {
		t.Errorf("channels (-want +got):\n%s", diff)
	}

	setState(t, s, uuid.NewString(), cpvtype.StatusFailed)
	sweep(t, n)
	if len(env.messages()) != 1 || len(stored.messages()) != 1 {
		t.Errorf("the digest reached %d and %d receivers' messages, want 1 and 1", len(env.messages()), len(stored.messages()))
	}

	stored.setFail(true)
	res, err := n.Test(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(res) != 2 || !res[0].Delivered || res[1].Delivered || !strings.Contains(res[1].Error, "500") {
		t.Errorf("test results %+v", res)
	}
	if got := env.messages(); got[len(got)-1].Title != "cpvrefresh: test notification" {
		t.Errorf("test message %+v", got[len(got)-1])
	}
	texts = append(texts, fmt.Sprint(res), logs.String())

	if err := n.RemoveURL(ctx, 2); !errors.Is(err, notify.ErrInvalid) {
		t.Errorf("removing a stored URL that is not there: %v", err)
	}
	if err := n.RemoveURL(ctx, 1); err != nil {
		t.Fatal(err)
	}
	if chans, _ := n.Channels(ctx); len(chans) != 1 || chans[0].Origin != notify.OriginEnvironment {
		t.Errorf("after removing: %+v", chans)
	}
	for _, text := range texts {
		if strings.Contains(text, token) {
			t.Errorf("the token leaked: %s", text)
		}
	}
}

// Without any URL a sweep tells nothing and records nothing: the changes
// wait for the first URL.
func TestNoURLWaits(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	rc := newReceiver(t)
	n := newNotifier(t, s, nil)
	id := uuid.NewString()
	setState(t, s, id, cpvtype.StatusFailed)
	sweep(t, n)
	if _, err := n.AddURL(context.Background(), rc.url()); err != nil {
		t.Fatal(err)
	}
	sweep(t, n)
	if got := rc.messages(); len(got) != 1 || !strings.Contains(got[0].Message, id) {
		t.Errorf("messages %+v, want the failure told once a URL is added", got)
	}
}

// Redact keeps the scheme and a host name, never a token in the host.
func TestRedact(t *testing.T) {
	t.Parallel()
	for raw, want := range map[string]string{
		"smtp://user:" + token + "@mail.example.com:587/?from=a@b&to=c@d":         "smtp://mail.example.com:587",
		"slack://hook:" + token + "@T0123ABCD/B0123ABCD/" + token:                 "slack://…",
		"slack://xoxb" + token + "/C012345":                                       "slack://…",
		"generic://127.0.0.1:8080/hook/" + token:                                  "generic://127.0.0.1:8080",
		"teams://" + token + "@" + token + "/x/y?host=example.webhook.office.com": "teams://…",
		"not a url": "(not a URL)",
	} {
		if got := notify.Redact(raw); got != want {
			t.Errorf("Redact(%q) = %q, want %q", raw, got, want)
		}
	}
}
