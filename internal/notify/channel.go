package notify

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/nicholas-fedor/shoutrrr/pkg/router"
	"github.com/nicholas-fedor/shoutrrr/pkg/types"
)

// Origins of a notification URL.
const (
	OriginEnvironment = "environment" // CPV_NOTIFY_URLS
	OriginSettings    = "settings"    // stored from the Settings page or API
)

// sender is one configured URL.
type sender struct {
	origin  string // OriginEnvironment or OriginSettings
	index   int    // 1-based position among its origin's URLs, for messages
	scheme  string // the service, e.g. "teams"
	shown   string // the URL redacted: scheme and host
	router  *router.ServiceRouter
	secrets []string // substrings of the URL removed from its errors
}

// CheckURLs reports every URL shoutrrr cannot use, by its position and
// scheme, for configuration validation in main.
func CheckURLs(urls []string) error {
	return checkURLs(OriginEnvironment, urls)
}

func checkURLs(origin string, urls []string) error {
	var errs []error
	for i, raw := range urls {
		if _, err := newSender(origin, i+1, raw, time.Second); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func newSender(origin string, index int, raw string, timeout time.Duration) (sender, error) {
	s := sender{origin: origin, index: index}
	u, err := url.Parse(raw)
	if err != nil || u.Scheme == "" {
		return sender{}, fmt.Errorf("%s: not a URL (want a shoutrrr URL such as teams://... or generic://...)", s.label())
	}
	s.scheme, s.shown, s.secrets = u.Scheme, Redact(raw), secretsOf(raw, u)
	r, err := router.New(nil, raw)
	if err != nil {
		return sender{}, fmt.Errorf("%s (%s): %s", s.label(), u.Scheme, s.redact(err))
	}
	r.Timeout = timeout
	s.router = r
	return s, nil
}

// label names the sender in errors and logs, never by its text.
func (s sender) label() string {
	if s.origin == OriginSettings {
		return fmt.Sprintf("stored notification URL %d", s.index)
	}
	return fmt.Sprintf("notification URL %d", s.index)
}

// Redact shows a notification URL as its scheme and host only, the host
// left out too when it is not a host name (Slack's and Discord's URLs
// carry a token there).
func Redact(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.Scheme == "" {
		return "(not a URL)"
	}
	if hostLike(u.Hostname()) {
		return u.Scheme + "://" + u.Host
	}
	return u.Scheme + "://…"
}

// hostLike reports whether h reads as a host name or address rather than
// a token.
func hostLike(h string) bool {
	return h == "localhost" || net.ParseIP(h) != nil || strings.Contains(h, ".")
}

// secretsOf lists the parts of a URL that may be a token: the URL itself,
// its user info, a host that is no host name, every path segment and query
// value, longest first.
func secretsOf(raw string, u *url.URL) []string {
	out := []string{raw, u.RawQuery, u.Path}
	if u.User != nil {
		out = append(out, u.User.String(), u.User.Username())
		if p, ok := u.User.Password(); ok {
			out = append(out, p)
		}
	}
	if !hostLike(u.Hostname()) {
		out = append(out, u.Hostname())
	}
	for seg := range strings.SplitSeq(u.Path, "/") {
		out = append(out, seg)
	}
	for _, vs := range u.Query() {
		out = append(out, vs...)
	}
	for _, s := range slices.Clone(out) {
		if e := url.QueryEscape(s); e != s {
			out = append(out, e)
		}
	}
	out = slices.DeleteFunc(out, func(s string) bool { return len(s) < 8 })
	slices.SortFunc(out, func(a, b string) int { return len(b) - len(a) })
	return slices.Compact(out)
}

// redact returns err's text without any part of the sender's URL.
func (s sender) redact(err error) string {
	msg := err.Error()
	for _, sec := range s.secrets {
		msg = strings.ReplaceAll(msg, sec, "[redacted]")
	}
	return msg
}

// send delivers one message to this URL.
func (s sender) send(title, body string) error {
	for _, err := range s.router.Send(body, &types.Params{"title": title}) {
		if err != nil {
			return fmt.Errorf("%s (%s): %s", s.label(), s.scheme, s.redact(err))
		}
	}
	return nil
}
