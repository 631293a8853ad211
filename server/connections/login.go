package connections

import (
	"context"
	"crypto/subtle"
	"errors"
	"time"

	"github.com/feedgate/feedgate/server/broker"
	"github.com/feedgate/feedgate/server/secret"
	"github.com/feedgate/feedgate/server/store"
)

// LoginURL returns the broker's OAuth dialog URL for the user with a CSRF
// state bound to the user and broker. It hands out the connection's live
// state while at least half its lifetime is left, so a user who asks again
// (another tab, a retry) keeps the login already under way; otherwise it
// creates a state in the store. The state is consumed by the login it
// completes.
func (m *Manager) LoginURL(ctx context.Context, userID string, b broker.Kind) (url, state string, expires time.Time, err error) {
	c, err := m.client(b)
	if err != nil {
		return "", "", time.Time{}, err
	}
	k := Key{userID, b}
	e, err := m.load(ctx, k)
	if err != nil {
		return "", "", time.Time{}, err
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	now := m.cfg.Clock.Now().UTC()
	if ls := m.nextLoginState(k, e, now); ls != nil {
		if err := m.cfg.Store.CreateLoginState(ctx, *ls); err != nil {
			return "", "", time.Time{}, err
		}
		e.login = ls
	}
	if e.login == nil {
		return "", "", time.Time{}, errors.New("connections: no login state could be made")
	}
	return c.LoginURL(e.login.State), e.login.State, e.login.ExpiresAt, nil
}

// CompleteLogin exchanges an auth code for a token and connects the user.
// userID is the caller's user for a programmatic login (bound by its API
// key); "" means the browser callback, whose caller has checked that the
// browser holds the state's binding cookie. The state is looked up, not
// consumed: it is consumed only in the transaction that stores the token,
// so a broker failure during the exchange leaves it usable for a retry.
func (m *Manager) CompleteLogin(ctx context.Context, userID string, b broker.Kind, code, state string) (store.Connection, error) {
	c, err := m.client(b)
	if err != nil {
		return store.Connection{}, err
	}
	switch {
	case code == "":
		return store.Connection{}, loginErr(LoginCodeMissing, "code", "missing: pass the code from the broker's redirect")
	case len(code) > 4096:
		return store.Connection{}, loginErr(LoginCodeRefused, "code", "too long")
	}
	ls, err := m.checkLoginState(ctx, userID, b, state)
	if err != nil {
		return store.Connection{}, err
	}
	release, err := m.beginExchange(ls)
	if err != nil {
		return store.Connection{}, err
	}
	defer release()
	tok, err := c.ExchangeCode(ctx, code)
	if err != nil {
		if be, ok := broker.AsError(err); ok && (be.Class == broker.ClassBadInput || be.Class == broker.ClassAuthDead) {
			return store.Connection{}, loginErr(LoginCodeRefused, "code", "the broker refused the code (wrong, expired or already used): start the login again")
		}
		return store.Connection{}, err
	}
	// The broker has spent the code: store its token even if the caller
	// leaves now.
	wctx, cancel := m.detached(ctx)
	defer cancel()
	return m.connect(wctx, Key{ls.UserID, b}, tok, ls.State)
}

// errStateUnknown is the answer for a state that is not (or no longer) in
// the store.
func errStateUnknown() *LoginError {
	return loginErr(LoginStateUnknown, "state", "unknown or already used: start the login again with GetLoginURL")
}

// checkLoginState returns the live login state named state, if it belongs
// to broker b and to userID ("" for any user) and its user is not revoked.
// It changes nothing.
func (m *Manager) checkLoginState(ctx context.Context, userID string, b broker.Kind, state string) (store.LoginState, error) {
	if state == "" {
		return store.LoginState{}, loginErr(LoginStateMissing, "state", "missing: pass the state returned by GetLoginURL")
	}
	if len(state) > 256 {
		return store.LoginState{}, errStateUnknown()
	}
	ls, err := m.cfg.Store.LoginState(ctx, state)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return store.LoginState{}, errStateUnknown()
	case err != nil:
		return store.LoginState{}, err
	case (userID != "" && ls.UserID != userID) || ls.Broker != b:
		return store.LoginState{}, loginErr(LoginStateForeign, "state", "was issued for another user or broker")
	case !m.cfg.Clock.Now().Before(ls.ExpiresAt):
		return store.LoginState{}, loginErr(LoginStateExpired, "state", "expired: start the login again with GetLoginURL")
	}
	u, err := m.cfg.Store.UserByID(ctx, ls.UserID)
	switch {
	case errors.Is(err, store.ErrNotFound) || (err == nil && !u.Active()):
		return store.LoginState{}, loginErr(LoginUserRevoked, "state", "was issued to a feedgate user whose API key is revoked")
	case err != nil:
		return store.LoginState{}, err
	}
	return ls, nil
}

// beginExchange admits one code exchange for ls: one at a time per state,
// MaxPendingLogins at a time per user.
func (m *Manager) beginExchange(ls store.LoginState) (func(), error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, busy := m.exchanging[ls.State]; busy {
		return nil, loginErr(LoginInProgress, "state", "a login with this state is already in progress")
	}
	if m.exchanges[ls.UserID] >= m.cfg.MaxPendingLogins {
		return nil, &LimitError{What: "pending logins", Max: m.cfg.MaxPendingLogins, Setting: "--max-pending-logins"}
	}
	m.exchanging[ls.State] = struct{}{}
	m.exchanges[ls.UserID]++
	return func() {
		m.mu.Lock()
		defer m.mu.Unlock()
		delete(m.exchanging, ls.State)
		if m.exchanges[ls.UserID]--; m.exchanges[ls.UserID] <= 0 {
			delete(m.exchanges, ls.UserID)
		}
	}, nil
}

// connect stores a fresh token as the connection's next generation,
// consuming state in the same transaction. The very token already stored
// (a repeated callback, a client's retry) changes nothing: no new
// generation, no change published, open streams untouched.
func (m *Manager) connect(ctx context.Context, k Key, tok broker.Token, state string) (store.Connection, error) {
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
	if e.conn.State == store.StateConnected && e.conn.TokenGeneration > e.deadGen &&
		subtle.ConstantTimeCompare([]byte(e.token.Reveal()), []byte(tok.Access.Reveal())) == 1 {
		if err := m.cfg.Store.DeleteLoginState(ctx, state); err != nil && !errors.Is(err, store.ErrNotFound) {
			return store.Connection{}, err
		}
		m.forgetLoginLocked(e, state)
		m.cfg.Logger.Info("broker login repeated with the token already stored: nothing to change", "user_id", k.UserID, "broker", k.Broker, "generation", e.conn.TokenGeneration)
		return e.conn, nil
	}
	conn, err := m.commitLocked(ctx, k, e, false, func(c *store.Connection) (*store.Event, error) {
		c.State, c.Reason, c.SealedToken = store.StateConnected, store.ReasonNone, sealed
		c.TokenGeneration = max(c.TokenGeneration, e.deadGen) + 1
		c.BrokerUserID = tok.BrokerUserID
		c.IssuedAt, c.ConnectedAt, c.LastValidatedAt, c.UpdatedAt = now, now, now, now
		c.DisconnectedAt = time.Time{}
		c.ExpiresAt = tok.ExpiresAt.UTC()
		if tok.ExpiresAt.IsZero() {
			c.ExpiresAt = time.Time{}
		}
		c.LastError = ""
		return &store.Event{Kind: "login", At: now, ConsumeLoginState: state}, nil
	})
	switch {
	case errors.Is(err, store.ErrAccountInUse):
		return store.Connection{}, &AccountInUseError{Broker: k.Broker, Account: tok.BrokerUserID}
	case errors.Is(err, store.ErrLoginStateUsed):
		return store.Connection{}, errStateUnknown()
	case err != nil:
		return store.Connection{}, err
	}
	e.token = tok.Access
	m.forgetLoginLocked(e, state)
	m.cache.drop(k)
	m.cfg.Logger.Info("broker connection connected", "user_id", k.UserID, "broker", k.Broker, "generation", conn.TokenGeneration, "expires_at", conn.ExpiresAt)
	return conn, nil
}

// forgetLoginLocked drops e's cached login state if it is state (consumed).
func (m *Manager) forgetLoginLocked(e *entry, state string) {
	if e.login != nil && e.login.State == state {
		e.login = nil
	}
}

// logoutTimeout bounds the broker logout of a Disconnect without a deadline.
const logoutTimeout = 30 * time.Second

// Disconnect forgets the user's token and then logs it out at the broker.
// The disconnection is recorded (store, memory, published) first, so a
// crash or a hung broker cannot leave a connection that looks usable with
// a token the broker already ended; the logout runs after, outside the
// connection's lock, within ctx's deadline. It reports whether the broker
// confirmed the logout.
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
	if e.conn.State != store.StateConnected {
		conn := e.conn
		e.mu.Unlock()
		return conn, false, nil
	}
	now := m.cfg.Clock.Now().UTC()
	gen, tok := e.conn.TokenGeneration, e.token
	// A fresh login state goes with the disconnection, so the AuthRequired
	// later calls get carries a URL to connect again.
	ls := m.nextLoginState(k, e, now)
	conn, err := m.commitLocked(ctx, k, e, false, func(c *store.Connection) (*store.Event, error) {
		c.State, c.Reason, c.SealedToken = store.StateDisconnected, store.ReasonLoggedOut, nil
		c.DisconnectedAt, c.UpdatedAt, c.ExpiresAt = now, now, time.Time{}
		c.LastError = ""
		return &store.Event{Kind: "logout", At: now, NewLoginState: ls}, nil
	})
	if err != nil {
		e.mu.Unlock()
		return store.Connection{}, false, err
	}
	if ls != nil {
		e.login = ls
	}
	e.token = secret.Value{}
	e.deadGen = max(e.deadGen, gen)
	m.cache.drop(k)
	e.mu.Unlock()

	lctx, cancel := context.WithTimeout(ctx, logoutTimeout)
	defer cancel()
	confirmed := c.Logout(lctx, broker.Credentials{UserID: userID, Token: tok}) == nil
	m.cfg.Logger.Info("broker connection logged out", "user_id", userID, "broker", b, "generation", gen, "broker_confirmed", confirmed)
	return conn, confirmed, nil
}

// UserRevoked drops what memory holds of a user whose feedgate API key was
// revoked (store.RevokeUser has disconnected its rows and deleted its
// login states, possibly from another process): every connection of the
// user is marked disconnected in memory, its token forgotten, the change
// published so its feeds close without another broker call, and the next
// read goes to the store again.
func (m *Manager) UserRevoked(userID string) {
	now := m.cfg.Clock.Now().UTC()
	for kind := range m.cfg.Brokers {
		k := Key{userID, kind}
		e := m.entry(k)
		e.mu.Lock()
		if e.loaded && e.conn.State == store.StateConnected {
			e.deadGen = max(e.deadGen, e.conn.TokenGeneration)
			c := e.conn
			c.State, c.Reason, c.LastError = store.StateDisconnected, store.ReasonLoggedOut, "the feedgate user was revoked"
			c.DisconnectedAt, c.UpdatedAt, c.ExpiresAt = now, now, time.Time{}
			e.conn, e.token = c, secret.Value{}
			m.stopTimer(k)
			m.publish(Change{Key: k, Conn: c})
		}
		e.loaded, e.login = false, nil
		e.mu.Unlock()
		m.cache.drop(k)
	}
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

func loginErr(code LoginCode, field, msg string) *LoginError {
	return &LoginError{Code: code, Field: field, Msg: msg}
}
