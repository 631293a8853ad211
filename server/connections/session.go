package connections

import (
	"context"
	"errors"

	"github.com/feedgate/feedgate/server/broker"
	"github.com/feedgate/feedgate/server/store"
)

// Session is what a broker call needs: the credentials and the token
// generation they belong to.
type Session struct {
	Key        Key
	Creds      broker.Credentials
	Generation int64
}

// Session returns the user's current credentials for b, or an
// *AuthRequiredError when the connection is disconnected. It never calls
// the broker.
func (m *Manager) Session(ctx context.Context, userID string, b broker.Kind) (Session, error) {
	if _, err := m.client(b); err != nil {
		return Session{}, err
	}
	k := Key{userID, b}
	e, err := m.load(ctx, k)
	if err != nil {
		return Session{}, err
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.conn.State != store.StateConnected {
		return Session{}, m.authRequiredLocked(k, e)
	}
	return Session{Key: k, Creds: broker.Credentials{UserID: userID, Token: e.token}, Generation: e.conn.TokenGeneration}, nil
}

func (m *Manager) authRequiredLocked(k Key, e *entry) *AuthRequiredError {
	return &AuthRequiredError{
		Broker:         k.Broker,
		Reason:         e.conn.Reason,
		Message:        authMessage(k.Broker, e.conn.Reason),
		LoginURL:       m.loginURLOrEmpty(k),
		DisconnectedAt: e.conn.DisconnectedAt,
	}
}

// AuthRequired returns the *AuthRequiredError for a disconnected
// connection, or nil while it is connected.
func (m *Manager) AuthRequired(ctx context.Context, k Key) (*AuthRequiredError, error) {
	e, err := m.load(ctx, k)
	if err != nil {
		return nil, err
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.conn.State == store.StateConnected {
		return nil, nil
	}
	return m.authRequiredLocked(k, e), nil
}

// Call runs fn with the user's credentials for b. When fn's error says the
// token is dead, Call disconnects the connection (if it is still on the
// same token generation) and returns an *AuthRequiredError instead. While
// the connection is disconnected fn is not called at all.
func (m *Manager) Call(ctx context.Context, userID string, b broker.Kind, op string, fn func(context.Context, broker.Credentials) error) error {
	s, err := m.Session(ctx, userID, b)
	if err != nil {
		return err
	}
	err = fn(ctx, s.Creds)
	if err == nil || !broker.IsAuthDead(err) {
		return err
	}
	return m.ReportAuthDead(ctx, s, op, err)
}

// ReportAuthDead records that the broker said s's token is dead (from any
// path: a unary call, a probe or the feed) and returns the resulting
// *AuthRequiredError. It disconnects only if the connection is still on
// s.Generation.
func (m *Manager) ReportAuthDead(ctx context.Context, s Session, op string, cause error) error {
	reason := store.ReasonTokenRevoked
	if be, ok := broker.AsError(cause); ok && be.Expired {
		reason = store.ReasonTokenExpired
	}
	e, err := m.load(ctx, s.Key)
	if err != nil {
		return err
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if reason == store.ReasonTokenRevoked && e.conn.State == store.StateConnected && e.conn.TokenGeneration == s.Generation &&
		!e.conn.ExpiresAt.IsZero() && !m.cfg.Clock.Now().Before(e.conn.ExpiresAt) {
		reason = store.ReasonTokenExpired
	}
	detail := op + ": " + cause.Error()
	if err := m.invalidateLocked(ctx, s.Key, e, s.Generation, reason, detail); err != nil {
		return errors.Join(err, cause)
	}
	if e.conn.State == store.StateConnected {
		// A newer login replaced the dead token while the call ran: the
		// caller may simply try again.
		return &AuthRequiredError{Broker: s.Key.Broker, Reason: reason, Message: authMessage(s.Key.Broker, reason) + " (a newer login is already active: retry)"}
	}
	return m.authRequiredLocked(s.Key, e)
}
