package connections

import (
	"context"

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
// the broker, and never hands out a token a broker said is dead.
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
	if e.conn.State != store.StateConnected || e.conn.TokenGeneration <= e.deadGen {
		return Session{}, m.authRequiredLocked(k, e)
	}
	return Session{Key: k, Creds: broker.Credentials{UserID: userID, Token: e.token}, Generation: e.conn.TokenGeneration}, nil
}

// authRequiredLocked describes e's disconnection. Its login URL is the
// entry's live login state, if there is one: reading an AuthRequired never
// creates or evicts a state.
func (m *Manager) authRequiredLocked(k Key, e *entry) *AuthRequiredError {
	reason := e.conn.Reason
	if e.conn.State == store.StateConnected {
		reason = store.ReasonTokenRevoked // refused by deadGen while the row still says connected
	}
	ar := &AuthRequiredError{
		Broker:         k.Broker,
		Reason:         reason,
		Message:        authMessage(k.Broker, reason),
		DisconnectedAt: e.conn.DisconnectedAt,
	}
	if e.login != nil && m.cfg.Clock.Now().Before(e.login.ExpiresAt) {
		if c, err := m.client(k.Broker); err == nil {
			ar.LoginURL = c.LoginURL(e.login.State)
		}
	}
	return ar
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
	if e.conn.State == store.StateConnected && e.conn.TokenGeneration > e.deadGen {
		return nil, nil
	}
	return m.authRequiredLocked(k, e), nil
}

// Call runs fn with the user's credentials for b. When fn's error says the
// token is dead, Call records the death (if the connection is still on that
// token) and returns an *AuthRequiredError instead, never a store error.
// When a newer login replaced the token while fn ran, Call runs fn once
// more with the current session and returns what that returns. While the
// connection is disconnected fn is not called at all.
func (m *Manager) Call(ctx context.Context, userID string, b broker.Kind, op string, fn func(context.Context, broker.Credentials) error) error {
	for attempt := 0; ; attempt++ {
		s, err := m.Session(ctx, userID, b)
		if err != nil {
			return err
		}
		err = fn(ctx, s.Creds)
		if err == nil || !broker.IsAuthDead(err) {
			return err
		}
		ar, newer := m.reportAuthDead(ctx, s, op, err)
		if !newer {
			return ar
		}
		if attempt > 0 {
			// Logged in again twice while calls were failing: let the
			// caller decide.
			reason := store.ReasonTokenRevoked
			return &AuthRequiredError{Broker: b, Reason: reason, Message: authMessage(b, reason) + " (a newer login is active: retry)"}
		}
	}
}
