package store

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/data/aztables"
)

// Partitions of the control table for sign-in.
const (
	sessionPartition = "session"
	keyPartition     = "key"
	sessionKeyRow    = "session"
)

// errConflictLoop: the key row was created by another replica and then
// deleted before it could be read.
var errConflictLoop = errors.New("the session key row keeps changing")

// Session is a signed-in user's server-side session: the cookie names it,
// and deleting it (sign-out) ends it whatever cookie is still around.
type Session struct {
	ID      string
	User    string // "user:<upn>"
	Name    string // display name
	Role    string
	Created time.Time
	Expires time.Time
}

// PutSession stores a new session (one round trip); ErrExists if the id is
// taken.
func (s *Store) PutSession(ctx context.Context, ss Session) error {
	const op = "put session"
	if err := checkKey(op, "session id", ss.ID); err != nil {
		return err
	}
	if ss.Expires.IsZero() {
		return invalid(op, "a session needs an expiry")
	}
	p := props{}
	p.str("User", ss.User)
	p.str("Name", ss.Name)
	p.str("Role", ss.Role)
	p.time("Created", ss.Created)
	p.time("Expires", ss.Expires)
	b, err := p.entity(sessionPartition, ss.ID)
	if err != nil {
		return failure(op, "", err)
	}
	_, err = s.control.AddEntity(ctx, b, nil)
	switch {
	case isConflict(err):
		return exists(op, "session")
	case err != nil:
		return failure(op, "", err)
	}
	return nil
}

// GetSession reads a session that has not expired (by the Store's clock);
// ErrNotFound if it does not exist, was deleted or has expired.
func (s *Store) GetSession(ctx context.Context, id string) (Session, error) {
	const op = "get session"
	if err := checkKey(op, "session id", id); err != nil {
		return Session{}, err
	}
	resp, err := s.control.GetEntity(ctx, sessionPartition, id, nil)
	switch {
	case isNotFound(err):
		return Session{}, notFound(op, "session")
	case err != nil:
		return Session{}, failure(op, "", err)
	}
	var e aztables.EDMEntity
	if err := e.UnmarshalJSON(resp.Value); err != nil {
		return Session{}, failure(op, "", err)
	}
	r := row{e}
	ss := Session{ID: id, User: r.str("User"), Name: r.str("Name"), Role: r.str("Role"),
		Created: r.time("Created"), Expires: r.time("Expires")}
	if !s.now().Before(ss.Expires) {
		return Session{}, notFound(op, "session (expired)")
	}
	return ss, nil
}

// DeleteSession ends a session; deleting one that is gone is not an error.
func (s *Store) DeleteSession(ctx context.Context, id string) error {
	const op = "delete session"
	if err := checkKey(op, "session id", id); err != nil {
		return err
	}
	if _, err := s.control.DeleteEntity(ctx, sessionPartition, id, nil); err != nil && !isNotFound(err) {
		return failure(op, "", err)
	}
	return nil
}

// SessionKey returns the 32-byte key that seals session cookies, creating
// it on first use; every replica reading the same tables gets the same key.
func (s *Store) SessionKey(ctx context.Context) ([]byte, error) {
	const op = "session key"
	for range 2 {
		resp, err := s.control.GetEntity(ctx, keyPartition, sessionKeyRow, nil)
		if err == nil {
			var e aztables.EDMEntity
			if err := e.UnmarshalJSON(resp.Value); err != nil {
				return nil, failure(op, "", err)
			}
			k, err := base64.StdEncoding.DecodeString((row{e}).str("Key"))
			if err != nil || len(k) != 32 {
				return nil, invalid(op, "the stored key is not 32 bytes of base64: delete the row to have a new one made")
			}
			return k, nil
		}
		if !isNotFound(err) {
			return nil, failure(op, "", err)
		}
		k := make([]byte, 32)
		_, _ = rand.Read(k)
		p := props{}
		p.str("Key", base64.StdEncoding.EncodeToString(k))
		p.time("Created", s.now())
		b, err := p.entity(keyPartition, sessionKeyRow)
		if err != nil {
			return nil, failure(op, "", err)
		}
		_, err = s.control.AddEntity(ctx, b, nil)
		switch {
		case err == nil:
			return k, nil
		case !isConflict(err):
			return nil, failure(op, "", err)
		}
		// Another replica created it first: read theirs.
	}
	return nil, failure(op, "", errConflictLoop)
}
