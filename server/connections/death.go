package connections

import (
	"context"
	"errors"
	"time"

	"github.com/feedgate/feedgate/server/broker"
	"github.com/feedgate/feedgate/server/secret"
	"github.com/feedgate/feedgate/server/store"
)

// death is an observed dead token: what the store must record.
type death struct {
	gen    int64
	reason store.Reason
	detail string
	at     time.Time
	// login is a fresh login state to create with the disconnection, so
	// the AuthRequired it causes carries a login URL; nil if the entry has
	// one that is fresh enough.
	login *store.LoginState
}

// ReportAuthDead records that the broker said s's token is dead, on any
// path (a unary call, a validation probe, the feed's authorize or socket).
// It returns the *AuthRequiredError the caller must pass on, or nil when a
// newer login had already replaced that token: the caller may retry with
// the current Session. It never fails because of ctx: the death is
// recorded on a context of its own, and memory shows it at once even if
// the store refuses it.
func (m *Manager) ReportAuthDead(ctx context.Context, s Session, op string, cause error) error {
	ar, newer := m.reportAuthDead(ctx, s, op, cause)
	if newer {
		return nil
	}
	return ar
}

func (m *Manager) reportAuthDead(ctx context.Context, s Session, op string, cause error) (*AuthRequiredError, bool) {
	reason := store.ReasonTokenRevoked
	if be, ok := broker.AsError(cause); ok && be.Expired {
		reason = store.ReasonTokenExpired
	}
	detail := op
	if cause != nil {
		detail += ": " + cause.Error()
	}
	e := m.entry(s.Key)
	e.mu.Lock()
	defer e.mu.Unlock()
	if s.Generation > e.deadGen {
		e.deadGen = s.Generation
	}
	if !e.loaded {
		lctx, cancel := m.detached(ctx)
		err := m.loadLocked(lctx, s.Key, e)
		cancel()
		if err != nil {
			// The row cannot be read (the store is failing, or the entry
			// was forgotten): deadGen keeps the token from being handed
			// out, and loading later records the death.
			m.cfg.Logger.Error("recording a dead broker token: the connection cannot be read; it stays refused in memory",
				"user_id", s.Key.UserID, "broker", s.Key.Broker, "generation", s.Generation, "err", err)
			return &AuthRequiredError{Broker: s.Key.Broker, Reason: reason, Message: authMessage(s.Key.Broker, reason), DisconnectedAt: m.cfg.Clock.Now().UTC()}, false
		}
	}
	switch {
	case e.conn.State != store.StateConnected:
		return m.authRequiredLocked(s.Key, e), false
	case e.conn.TokenGeneration != s.Generation:
		return nil, true // a newer login replaced the dead token
	}
	if reason == store.ReasonTokenRevoked && !e.conn.ExpiresAt.IsZero() && !m.cfg.Clock.Now().Before(e.conn.ExpiresAt) {
		reason = store.ReasonTokenExpired
	}
	m.recordDeathLocked(s.Key, e, s.Generation, reason, detail, m.cfg.Clock.Now())
	return m.authRequiredLocked(s.Key, e), false
}

// recordDeathLocked is the one place a dead token is recorded. With e
// CONNECTED on generation gen, it disconnects e in memory at once (so no
// Session hands the token out from here on), writes the disconnection to
// the store on a detached context, keeps it pending for the persister if
// the store refuses, and publishes the change either way: streams are told
// even while the disk is failing.
func (m *Manager) recordDeathLocked(k Key, e *entry, gen int64, reason store.Reason, detail string, at time.Time) {
	if e.conn.State != store.StateConnected || e.conn.TokenGeneration != gen {
		return
	}
	if gen > e.deadGen {
		e.deadGen = gen
	}
	at = at.UTC()
	// The login state is for a login from now on (at may be an expiry
	// that passed while the gateway was down).
	d := &death{gen: gen, reason: reason, detail: detail, at: at, login: m.nextLoginState(k, e, m.cfg.Clock.Now().UTC())}
	c := e.conn
	c.State, c.Reason = store.StateDisconnected, reason
	c.DisconnectedAt, c.UpdatedAt, c.ExpiresAt = at, at, time.Time{}
	c.LastError = detail
	e.conn, e.token = c, secret.Value{}
	m.stopTimer(k)
	m.cache.drop(k)
	ctx, cancel := m.detached(context.Background())
	err := m.writeDeath(ctx, k, e, d)
	cancel()
	if err != nil {
		e.pending = d
		m.mu.Lock()
		m.pending[k] = e
		m.mu.Unlock()
		m.kickPersister()
		m.cfg.Logger.Error("recording a dead broker token failed: refused in memory, retrying the write",
			"user_id", k.UserID, "broker", k.Broker, "generation", gen, "reason", reason, "err", err)
	}
	m.cfg.Logger.Info("broker connection disconnected", "user_id", k.UserID, "broker", k.Broker, "reason", reason,
		"generation", gen, "detail", detail, "durable", err == nil)
	m.publish(Change{Key: k, Conn: e.conn})
}

// nextLoginState returns a new login state to create with a
// disconnection of e at now, or nil if e's newest one is fresh enough.
func (m *Manager) nextLoginState(k Key, e *entry, now time.Time) *store.LoginState {
	if m.freshLogin(e, now) {
		return nil
	}
	st, err := newState()
	if err != nil {
		return nil
	}
	return &store.LoginState{State: st, UserID: k.UserID, Broker: k.Broker, CreatedAt: now, ExpiresAt: now.Add(m.cfg.LoginStateTTL)}
}

// freshLogin reports whether e's newest login state has at least half its
// lifetime left at now: worth handing out rather than replacing.
func (m *Manager) freshLogin(e *entry, now time.Time) bool {
	return e.login != nil && e.login.ExpiresAt.Sub(now) >= m.cfg.LoginStateTTL/2
}

// writeDeath writes d to the store. A row that is no longer CONNECTED on
// d's generation (logged out, revoked with its user) needs nothing.
func (m *Manager) writeDeath(ctx context.Context, k Key, e *entry, d *death) error {
	c, err := m.cfg.Store.UpdateConnection(ctx, k.UserID, k.Broker, func(c *store.Connection) (*store.Event, error) {
		if c.State != store.StateConnected || c.TokenGeneration != d.gen {
			return nil, errNoChange
		}
		c.State, c.Reason, c.SealedToken = store.StateDisconnected, d.reason, nil
		c.DisconnectedAt, c.UpdatedAt = d.at, d.at
		c.ExpiresAt = time.Time{}
		c.LastError = d.detail
		return &store.Event{Kind: "disconnect", At: d.at, Detail: d.detail, NewLoginState: d.login}, nil
	})
	if errors.Is(err, errNoChange) {
		return nil
	}
	if err != nil {
		return err
	}
	if e.conn.TokenGeneration == c.TokenGeneration && e.conn.State == store.StateDisconnected {
		c.SealedToken = nil
		e.conn = c
	}
	if d.login != nil {
		e.login = d.login
	}
	return nil
}

// flushLocked writes e's pending death, if any, before another write to
// the same connection.
func (m *Manager) flushLocked(ctx context.Context, k Key, e *entry) error {
	if e.pending == nil {
		return nil
	}
	if err := m.writeDeath(ctx, k, e, e.pending); err != nil {
		return err
	}
	e.pending = nil
	m.mu.Lock()
	delete(m.pending, k)
	m.mu.Unlock()
	m.cfg.Logger.Info("a dead broker token's disconnection is now durable", "user_id", k.UserID, "broker", k.Broker)
	return nil
}

func (m *Manager) kickPersister() {
	select {
	case m.persistKick <- struct{}{}:
	default:
	}
}

// persistLoop retries the deaths the store refused, with backoff from
// PersistBackoff up to 30 s, until every one is written; on Close it makes
// one last attempt, bounded by WriteTimeout in all.
func (m *Manager) persistLoop() {
	defer m.wg.Done()
	wait := m.cfg.PersistBackoff
	for {
		if m.flushAll(context.Background()) {
			wait = m.cfg.PersistBackoff
			select {
			case <-m.stop:
				return
			case <-m.persistKick:
			}
			continue
		}
		fired := make(chan struct{})
		t := m.cfg.Clock.AfterFunc(wait, func() { close(fired) })
		select {
		case <-m.stop:
			t.Stop()
			ctx, cancel := m.detached(context.Background())
			if !m.flushAll(ctx) {
				m.cfg.Logger.Error("closing with deaths the store refused: they are lost with this process; the broker will refuse those tokens again", "pending", m.Pending())
			}
			cancel()
			return
		case <-fired:
		case <-m.persistKick:
			t.Stop()
		}
		wait = min(2*wait, 30*time.Second)
	}
}

// flushAll tries every pending death once, each write within WriteTimeout
// and ctx, and reports whether none is left.
func (m *Manager) flushAll(ctx context.Context) bool {
	m.mu.Lock()
	keys := make([]Key, 0, len(m.pending))
	for k := range m.pending {
		keys = append(keys, k)
	}
	m.mu.Unlock()
	for _, k := range keys {
		m.mu.Lock()
		e := m.pending[k]
		m.mu.Unlock()
		if e == nil {
			continue
		}
		e.mu.Lock()
		wctx, cancel := context.WithTimeout(ctx, m.cfg.WriteTimeout)
		err := m.flushLocked(wctx, k, e)
		cancel()
		e.mu.Unlock()
		if err != nil {
			m.cfg.Logger.Warn("recording a dead broker token: the store still refuses", "user_id", k.UserID, "broker", k.Broker, "err", err)
		}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.pending) == 0
}

// Pending returns how many deaths memory shows that the store has not
// taken yet (for tests and metrics).
func (m *Manager) Pending() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.pending)
}
