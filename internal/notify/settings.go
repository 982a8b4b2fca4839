package notify

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/cpvrefresh/cpvrefresh/internal/store"
)

// SettingURLs is the setting that holds the notification URLs added from
// the Settings page or the API, one per line. They are used besides
// CPV_NOTIFY_URLS (the two merge; the environment's cannot be removed
// from the UI).
const SettingURLs = "notify-urls"

// MaxStoredURLs bounds the URLs stored in the setting.
const MaxStoredURLs = 20

// ErrInvalid marks a request that can never succeed as it is: a URL
// shoutrrr cannot use, too many URLs, no such stored URL.
var ErrInvalid = errors.New("notify: invalid request")

// Channel is one notification URL as shown: never its text.
type Channel struct {
	Origin  string `json:"origin"` // OriginEnvironment or OriginSettings
	Index   int    `json:"index"`  // 1-based among its origin's URLs
	Service string `json:"service"`
	// URL is the URL redacted: scheme and host only (see Redact).
	URL string `json:"url"`
}

// Delivery is how a test message to one channel went.
type Delivery struct {
	Channel
	Delivered bool   `json:"delivered"`
	Error     string `json:"error,omitempty"` // redacted
}

func (s sender) channel() Channel {
	return Channel{Origin: s.origin, Index: s.index, Service: s.scheme, URL: s.shown}
}

// storedURLs splits the setting's value.
func storedURLs(v string) []string { return strings.Fields(v) }

// channels returns the senders of every URL: the environment's, then the
// stored ones. A stored URL shoutrrr cannot use (the row edited by hand)
// is logged by position and left out.
func (n *Notifier) channels(ctx context.Context) ([]sender, error) {
	st, err := n.cfg.Store.GetSetting(ctx, SettingURLs)
	if err != nil {
		return nil, fmt.Errorf("notify: read the stored notification URLs: %w", err)
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if st.Value != n.storedValue || n.stored == nil {
		n.stored = []sender{}
		for i, raw := range storedURLs(st.Value) {
			s, err := newSender(OriginSettings, i+1, raw, n.cfg.Timeout)
			if err != nil {
				n.log.WarnContext(ctx, "stored notification URL not used", "error", err)
				continue
			}
			n.stored = append(n.stored, s)
		}
		n.storedValue = st.Value
	}
	return append(slices.Clone(n.senders), n.stored...), nil
}

// Channels lists every notification URL, redacted.
func (n *Notifier) Channels(ctx context.Context) ([]Channel, error) {
	senders, err := n.channels(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]Channel, 0, len(senders))
	for _, s := range senders {
		out = append(out, s.channel())
	}
	return out, nil
}

// AddURL stores a notification URL after checking that shoutrrr can use
// it. It answers the URL's channel; errors never hold the URL's text.
func (n *Notifier) AddURL(ctx context.Context, raw string) (Channel, error) {
	raw = strings.TrimSpace(raw)
	var added Channel
	err := n.editStored(ctx, func(urls []string) ([]string, error) {
		if raw == "" || strings.ContainsAny(raw, " \t\r\n") {
			return nil, fmt.Errorf("%w: a notification URL is one shoutrrr URL without spaces", ErrInvalid)
		}
		if len(urls) >= MaxStoredURLs {
			return nil, fmt.Errorf("%w: at most %d notification URLs are stored", ErrInvalid, MaxStoredURLs)
		}
		if slices.Contains(urls, raw) || slices.Contains(n.cfg.URLs, raw) {
			return nil, fmt.Errorf("%w: this notification URL is already configured", ErrInvalid)
		}
		s, err := newSender(OriginSettings, len(urls)+1, raw, n.cfg.Timeout)
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
		}
		added = s.channel()
		return append(urls, raw), nil
	})
	return added, err
}

// RemoveURL removes the stored URL at index (1-based, as Channels numbers
// the stored ones).
func (n *Notifier) RemoveURL(ctx context.Context, index int) error {
	return n.editStored(ctx, func(urls []string) ([]string, error) {
		if index < 1 || index > len(urls) {
			return nil, fmt.Errorf("%w: no stored notification URL %d", ErrInvalid, index)
		}
		return slices.Delete(urls, index-1, index), nil
	})
}

// editStored changes the stored URLs with edit, again from a fresh read
// when another replica wrote them meanwhile.
func (n *Notifier) editStored(ctx context.Context, edit func([]string) ([]string, error)) error {
	for attempt := 0; ; attempt++ {
		st, err := n.cfg.Store.GetSetting(ctx, SettingURLs)
		if err != nil {
			return fmt.Errorf("notify: read the stored notification URLs: %w", err)
		}
		urls, err := edit(storedURLs(st.Value))
		if err != nil {
			return err
		}
		st.Value = strings.Join(urls, "\n")
		err = n.cfg.Store.SetSetting(ctx, st)
		if errors.Is(err, store.ErrChanged) && attempt < 3 {
			continue
		}
		if err != nil {
			return fmt.Errorf("notify: store the notification URLs: %w", err)
		}
		return nil
	}
}

// Test sends a test message to every notification URL and reports how
// each went.
func (n *Notifier) Test(ctx context.Context) ([]Delivery, error) {
	senders, err := n.channels(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]Delivery, 0, len(senders))
	for _, s := range senders {
		d := Delivery{Channel: s.channel(), Delivered: true}
		if err := s.send("cpvrefresh: test notification", "A test from the cpvrefresh dispatcher "+n.cfg.ID+
			": notifications reach this channel."); err != nil {
			d.Delivered, d.Error = false, err.Error()
			n.log.WarnContext(ctx, "test notification not sent", "url", s.label(), "service", s.scheme, "error", err.Error())
		}
		out = append(out, d)
	}
	return out, nil
}
