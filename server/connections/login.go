package connections

import (
	"context"
	"errors"
	"time"

	"github.com/feedgate/feedgate/server/broker"
	"github.com/feedgate/feedgate/server/secret"
	"github.com/feedgate/feedgate/server/store"
)

// maxLoginsPerUser bounds the pending login states of one user.
const maxLoginsPerUser = 16

// LoginURL returns the broker's OAuth dialog URL for the user, carrying a
// fresh CSRF state bound to the user and broker, single-use, expiring after
// the LoginStateTTL.
func (m *Manager) LoginURL(userID string, b broker.Kind) (url, state string, expires time.Time, err error) {
	c, err := m.client(b)
	if err != nil {
		return "", "", time.Time{}, err
	}
	state, err = newState()
	if err != nil {
		return "", "", time.Time{}, err
	}
	now := m.cfg.Clock.Now()
	expires = now.Add(m.cfg.LoginStateTTL)
	k := Key{userID, b}
	m.mu.Lock()
	// Drop expired states, and the user's oldest beyond the bound.
	var mine []string
	for s, l := range m.logins {
		if !now.Before(l.expires) {
			delete(m.logins, s)
		} else if l.key.UserID == userID {
			mine = append(mine, s)
		}
	}
	for len(mine) >= maxLoginsPerUser {
		oldest := 0
		for i, s := range mine {
			if m.logins[s].created.Before(m.logins[mine[oldest]].created) {
				oldest = i
			}
		}
		delete(m.logins, mine[oldest])
		mine = append(mine[:oldest], mine[oldest+1:]...)
	}
	m.logins[state] = login{key: k, expires: expires, created: now}
	m.mu.Unlock()
	return c.LoginURL(state), state, expires, nil
}

func (m *Manager) loginURLOrEmpty(k Key) string {
	u, _, _, err := m.LoginURL(k.UserID, k.Broker)
	if err != nil {
		return ""
	}
	return u
}

// takeState consumes a login state. userID "" accepts any user (the
// browser callback, where the state itself is the proof).
func (m *Manager) takeState(state, userID string, b broker.Kind) (Key, error) {
	m.mu.Lock()
	l, ok := m.logins[state]
	if ok && (userID == "" || l.key.UserID == userID) && l.key.Broker == b {
		delete(m.logins, state) // single use
	}
	m.mu.Unlock()
	switch {
	case state == "":
		return Key{}, &LoginError{Field: "state", Msg: "missing: pass the state returned by GetLoginURL"}
	case !ok:
		return Key{}, &LoginError{Field: "state", Msg: "unknown or already used: start the login again with GetLoginURL"}
	case userID != "" && l.key.UserID != userID, l.key.Broker != b:
		return Key{}, &LoginError{Field: "state", Msg: "was issued for another user or broker"}
	case !m.cfg.Clock.Now().Before(l.expires):
		return Key{}, &LoginError{Field: "state", Msg: "expired: start the login again with GetLoginURL"}
	}
	return l.key, nil
}

// CompleteLogin exchanges an auth code for a token and connects the user.
// userID "" means the user is the one the state was issued to (the
// browser callback).
func (m *Manager) CompleteLogin(ctx context.Context, userID string, b broker.Kind, code, state string) (store.Connection, error) {
	c, err := m.client(b)
	if err != nil {
		return store.Connection{}, err
	}
	if code == "" {
		return store.Connection{}, &LoginError{Field: "code", Msg: "missing: pass the code from the broker's redirect"}
	}
	if len(code) > 4096 {
		return store.Connection{}, &LoginError{Field: "code", Msg: "too long"}
	}
	k, err := m.takeState(state, userID, b)
	if err != nil {
		return store.Connection{}, err
	}
	tok, err := c.ExchangeCode(ctx, code)
	if err != nil {
		if be, ok := broker.AsError(err); ok && (be.Class == broker.ClassBadInput || be.Class == broker.ClassAuthDead) {
			return store.Connection{}, &LoginError{Field: "code", Msg: "the broker refused the code (wrong, expired or already used): start the login again"}
		}
		return store.Connection{}, err
	}
	return m.connect(ctx, k, tok)
}

// connect stores a fresh token as the connection's next generation.
func (m *Manager) connect(ctx context.Context, k Key, tok broker.Token) (store.Connection, error) {
	sealed, err := m.cfg.Sealer.Seal([]byte(tok.Access.Reveal()), k.identity())
	if err != nil {
		return store.Connection{}, err
	}
	e, err := m.load(ctx, k)
	if err != nil {
		return store.Connection{}, err
	}
	now := m.cfg.Clock.Now().UTC()
	e.mu.Lock()
	defer e.mu.Unlock()
	conn, err := m.commitLocked(ctx, k, e, func(c *store.Connection) (*store.Event, error) {
		c.State, c.Reason, c.SealedToken = store.StateConnected, store.ReasonNone, sealed
		c.TokenGeneration++
		c.BrokerUserID = tok.BrokerUserID
		c.IssuedAt, c.ConnectedAt, c.LastValidatedAt, c.UpdatedAt = now, now, now, now
		c.ExpiresAt = tok.ExpiresAt.UTC()
		if tok.ExpiresAt.IsZero() {
			c.ExpiresAt = time.Time{}
		}
		c.LastError = ""
		return &store.Event{Kind: "login", At: now}, nil
	})
	if err != nil {
		return store.Connection{}, err
	}
	e.token = tok.Access
	m.cache.drop(k)
	m.cfg.Logger.Info("broker connection connected", "user_id", k.UserID, "broker", k.Broker, "generation", conn.TokenGeneration, "expires_at", conn.ExpiresAt)
	return conn, nil
}

// Disconnect logs the user out at the broker and forgets the token. It
// reports whether the broker confirmed the logout; the token is forgotten
// either way.
func (m *Manager) Disconnect(ctx context.Context, userID string, b broker.Kind) (store.Connection, bool, error) {
	c, err := m.client(b)
	if err != nil {
		return store.Connection{}, false, err
	}
	k := Key{userID, b}
	e, err := m.load(ctx, k)
	if err != nil {
		return store.Connection{}, false, err
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.conn.State != store.StateConnected {
		return e.conn, false, nil
	}
	confirmed := c.Logout(ctx, broker.Credentials{UserID: userID, Token: e.token}) == nil
	now := m.cfg.Clock.Now().UTC()
	gen := e.conn.TokenGeneration
	conn, err := m.commitLocked(ctx, k, e, func(c *store.Connection) (*store.Event, error) {
		c.State, c.Reason, c.SealedToken = store.StateDisconnected, store.ReasonLoggedOut, nil
		c.DisconnectedAt, c.UpdatedAt, c.ExpiresAt = now, now, time.Time{}
		c.LastError = ""
		return &store.Event{Kind: "logout", At: now}, nil
	})
	if err != nil && !errors.Is(err, errNoChange) {
		return store.Connection{}, false, err
	}
	e.token = secret.Value{}
	m.cache.drop(k)
	m.cfg.Logger.Info("broker connection logged out", "user_id", userID, "broker", b, "generation", gen, "broker_confirmed", confirmed)
	return conn, confirmed, nil
}

// Status returns the user's connection to each configured broker (or to
// b alone), NOT_CONNECTED for brokers never connected.
func (m *Manager) Status(ctx context.Context, userID string, b broker.Kind) ([]store.Connection, error) {
	var out []store.Connection
	for _, kind := range broker.Kinds {
		if _, ok := m.cfg.Brokers[kind]; !ok || (b != "" && b != kind) {
			continue
		}
		e, err := m.load(ctx, Key{userID, kind})
		if err != nil {
			return nil, err
		}
		e.mu.Lock()
		out = append(out, e.conn)
		e.mu.Unlock()
	}
	return out, nil
}
