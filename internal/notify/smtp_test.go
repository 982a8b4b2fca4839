package notify_test

import (
	"context"
	"errors"
	"io"
	"net"
	"net/mail"
	"strings"
	"sync"
	"testing"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
	"github.com/google/go-cmp/cmp"
	"github.com/google/uuid"

	"github.com/cpvrefresh/cpvrefresh/internal/cpvtype"
	"github.com/cpvrefresh/cpvrefresh/internal/store"
)

// mailUser signs in to the test mail server with token as its password.
const mailUser = "cpvrefresh"

// email is a message the mail server took.
type email struct {
	From, To, Subject, Body string
}

// mailServer is a local SMTP server (go-smtp) that takes mail only from a
// client signed in with mailUser and token (PLAIN).
type mailServer struct {
	srv  *smtp.Server
	addr string
	mu   sync.Mutex
	got  []email
}

func newMailServer(t *testing.T) *mailServer {
	t.Helper()
	m := &mailServer{}
	m.srv = smtp.NewServer(smtp.BackendFunc(func(*smtp.Conn) (smtp.Session, error) { return &mailSession{server: m}, nil }))
	m.srv.Domain = "localhost"
	m.srv.AllowInsecureAuth = true // plain text on the loopback, as net/smtp allows
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	m.addr = ln.Addr().String()
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := m.srv.Serve(ln); err != nil && !errors.Is(err, smtp.ErrServerClosed) {
			t.Errorf("smtp server: %v", err)
		}
	}()
	t.Cleanup(func() { _ = m.srv.Close(); <-done })
	return m
}

// url is the server as a shoutrrr smtp URL, the token as the password.
func (m *mailServer) url() string {
	host, port, _ := net.SplitHostPort(m.addr)
	return "smtp://" + mailUser + ":" + token + "@" + host + ":" + port +
		"/?from=cpv@example.com&to=ops@example.com&auth=Plain&encryption=None&usestarttls=no"
}

func (m *mailServer) mails() []email {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]email(nil), m.got...)
}

type mailSession struct {
	server   *mailServer
	signedIn bool
	from, to string
}

func (s *mailSession) AuthMechanisms() []string { return []string{sasl.Plain} }

func (s *mailSession) Auth(string) (sasl.Server, error) {
	return sasl.NewPlainServer(func(_, user, pass string) error {
		if user != mailUser || pass != token {
			return errors.New("wrong user or password")
		}
		s.signedIn = true
		return nil
	}), nil
}

func (s *mailSession) Mail(from string, _ *smtp.MailOptions) error {
	if !s.signedIn {
		return smtp.ErrAuthRequired
	}
	s.from = from
	return nil
}

func (s *mailSession) Rcpt(to string, _ *smtp.RcptOptions) error {
	s.to = to
	return nil
}

func (s *mailSession) Data(r io.Reader) error {
	msg, err := mail.ReadMessage(r)
	if err != nil {
		return err
	}
	body, err := io.ReadAll(msg.Body)
	if err != nil {
		return err
	}
	s.server.mu.Lock()
	defer s.server.mu.Unlock()
	s.server.got = append(s.server.got, email{From: s.from, To: s.to, Subject: msg.Header.Get("Subject"),
		Body: strings.TrimSpace(strings.ReplaceAll(string(body), "\r\n", "\n"))})
	return nil
}

func (s *mailSession) Reset()        { s.from, s.to = "", "" }
func (s *mailSession) Logout() error { return nil }

// The Done-when: a tenant that starts failing is told once, by
// mail (shoutrrr's smtp service to a local SMTP server) and by webhook,
// not on the following nights while it stays failed, and its recovery
// once.
func TestDigestByMailAndWebhook(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	rc := newReceiver(t)
	ms := newMailServer(t)
	n := newNotifier(t, s, nil, rc.url(), ms.url())
	ctx := context.Background()
	id := uuid.NewString()
	if err := s.UpsertTenant(ctx, store.Tenant{ID: id, DisplayName: "Contoso"}); err != nil {
		t.Fatal(err)
	}
	setState(t, s, id, cpvtype.StatusSucceeded)
	sweep(t, n) // the first sweep: healthy, nothing to tell

	setState(t, s, id, cpvtype.StatusFailed)
	sweep(t, n)
	for range 3 { // the following nights
		setState(t, s, id, cpvtype.StatusFailed)
		sweep(t, n)
	}
	setState(t, s, id, cpvtype.StatusSucceeded)
	sweep(t, n)
	sweep(t, n)

	failed := "FAILED Contoso (" + id + "): consent missing, run a CPV reset"
	recovered := "RECOVERED Contoso (" + id + ")"
	wantMail := []email{
		{From: "cpv@example.com", To: "ops@example.com", Subject: "cpvrefresh: 1 tenant failed", Body: failed},
		{From: "cpv@example.com", To: "ops@example.com", Subject: "cpvrefresh: 1 tenant recovered", Body: recovered},
	}
	if diff := cmp.Diff(wantMail, ms.mails()); diff != "" {
		t.Errorf("mail (-want +got):\n%s", diff)
	}
	wantHook := []message{
		{Title: "cpvrefresh: 1 tenant failed", Message: failed + "\n"},
		{Title: "cpvrefresh: 1 tenant recovered", Message: recovered + "\n"},
	}
	if diff := cmp.Diff(wantHook, rc.messages()); diff != "" {
		t.Errorf("webhook (-want +got):\n%s", diff)
	}
}
