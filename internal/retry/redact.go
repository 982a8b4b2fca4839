package retry

import (
	"errors"
	"net/url"
	"regexp"
)

// Redact returns err with every URL's query and fragment, and every secret-
// shaped value (a bearer token, a client secret, a connection string's
// account key or shared access signature), removed from its message; nil for
// nil. errors.Is and errors.As still see the original chain, so callers can
// classify it; only its text is clean, and the text is what reaches logs,
// status rows and API answers.
//
// No request this project makes carries a secret in its URL, but an SDK's
// error may echo a SAS URL or a connection string, and a transport error
// quotes the whole URL: Redact is applied where an outside error becomes
// ours.
func Redact(err error) error {
	if err == nil {
		return nil
	}
	msg := RedactString(err.Error())
	if msg == err.Error() {
		return err
	}
	return &redacted{msg: msg, err: err}
}

// RedactString is Redact for a message.
func RedactString(s string) string {
	s = urlQuery.ReplaceAllString(s, "$1")
	for _, p := range secretPatterns {
		s = p.re.ReplaceAllString(s, p.repl)
	}
	return s
}

// redacted keeps the original chain for errors.Is/As but not its text.
type redacted struct {
	msg string
	err error
}

func (r *redacted) Error() string { return r.msg }
func (r *redacted) Unwrap() error { return r.err }

var (
	// urlQuery is an absolute URL followed by a query and/or fragment.
	urlQuery = regexp.MustCompile(`((?:https?|sb|amqps?)://[^\s?#"'<>]+)[?#][^\s"'<>]*`)

	secretPatterns = []struct {
		re   *regexp.Regexp
		repl string
	}{
		{regexp.MustCompile(`(?i)\b(bearer)\s+[A-Za-z0-9\-_.~+/]+=*`), "$1 [redacted]"},
		{regexp.MustCompile(`(?i)\b(AccountKey|SharedAccessKey|SharedAccessSignature|sig|client_secret|refresh_token|access_token|client_assertion|password)=[^;&,:\s"']+`), "$1=[redacted]"},
		{regexp.MustCompile(`eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*`), "[redacted jwt]"},
	}
)

// URLError returns err with the URL of a *url.Error (a transport failure)
// reduced to its scheme, host and path, keeping the chain; any other error
// goes through Redact.
func URLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		if u, perr := url.Parse(ue.URL); perr == nil {
			u.RawQuery, u.Fragment, u.User = "", "", nil
			return Redact(&url.Error{Op: ue.Op, URL: u.String(), Err: ue.Err})
		}
	}
	return Redact(err)
}
