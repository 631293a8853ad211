// Package connections is feedgate's broker-token lifecycle: one state
// machine per (user, broker), CONNECTED or DISCONNECTED with a reason.
//
// The promise it keeps: the first dead-token answer from a broker, on any
// path (a unary call, a validation probe, the feed's authorize or socket),
// disconnects that user on that broker, durably; the dead token is never
// sent again; every open stream of that user and broker is told; a newer
// login is never harmed.
//
// How it keeps it:
//
//   - Every path reports a death through one function (recordDeath). It
//     marks the connection DISCONNECTED in memory first, so from that
//     instant no Session hands the token out, then writes the disconnection
//     to the store on a context of its own (detached from the caller, with
//     its own deadline), then publishes the change. When the store refuses
//     the write, the death stays pending in memory (fail-closed) and a
//     persister retries it with backoff until the store takes it; any later
//     write to that connection flushes it first.
//   - An invalidation carries the token generation it was observed with: a
//     late 401 for an old token cannot disconnect a newer login (Call then
//     retries once with the current session). Each entry also remembers the
//     highest generation known dead, and never hands out a session at or
//     below it, even if the store still says CONNECTED.
//   - Known expiry (Upstox 03:30 IST, Fyers JWT exp) disconnects on a timer
//     with no broker call.
//   - Other changes (login, logout) are written to the store first, then
//     applied in memory, then published to hooks (the feed hub) and
//     watchers (WatchConnectionStatus). Validation bookkeeping is written
//     but not published: it changes nothing a client acts on.
//   - Login states live in the store, one live state per (user, broker)
//     reused until it is half spent; reading an AuthRequired never creates
//     or evicts one. A state is consumed in the transaction that stores the
//     login it completes, so a failed code exchange can be retried.
package connections

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/feedgate/feedgate/server/broker"
	"github.com/feedgate/feedgate/server/clock"
	"github.com/feedgate/feedgate/server/seal"
	"github.com/feedgate/feedgate/server/secret"
	"github.com/feedgate/feedgate/server/store"
)

// Key names one connection.
type Key struct {
	UserID string
	Broker broker.Kind
}

func (k Key) identity() string { return k.UserID + "/" + string(k.Broker) }

// Defaults of Config.
const (
	DefaultLoginStateTTL         = 10 * time.Minute
	DefaultValidationTTL         = 5 * time.Minute
	DefaultValidationInterval    = 30 * time.Minute
	DefaultValidationConcurrency = 4
	DefaultMaxPendingLogins      = 4
	DefaultMaxWatchers           = 20
	DefaultWriteTimeout          = 5 * time.Second
)

// Config holds a Manager's dependencies and settings.
type Config struct {
	Store   store.Store
	Sealer  *seal.Sealer
	Brokers map[broker.Kind]broker.Client
	Clock   clock.Clock
	Logger  *slog.Logger
	// LoginStateTTL is how long a login state is accepted (default 10 min).
	LoginStateTTL time.Duration
	// ValidationTTL is how long a validation result is trusted (default 5 min).
	ValidationTTL time.Duration
	// ValidationInterval is the period of the background sweep (default 30 min).
	ValidationInterval time.Duration
	// ValidationConcurrency bounds the probes a sweep runs at once (default 4).
	ValidationConcurrency int
	// MaxPendingLogins bounds one user's code exchanges in progress at once
	// (default 4).
	MaxPendingLogins int
	// MaxWatchers bounds one user's open Watchers (default 20).
	MaxWatchers int
	// WriteTimeout bounds each attempt to record a death, on a context
	// detached from the caller's (default 5 s).
	WriteTimeout time.Duration
	// PersistBackoff is the first wait before retrying a death the store
	// refused, doubling up to 30 s (default 250 ms).
	PersistBackoff time.Duration
}

// Change is a published state change.
type Change struct {
	Key  Key
	Conn store.Connection
}

// Manager owns every connection's state. It is safe for concurrent use.
type Manager struct {
	cfg Config

	mu      sync.Mutex
	entries map[Key]*entry
	hooks   []func(Change)
	watch   map[*Watcher]struct{}
	// watchers counts each user's open Watchers.
	watchers map[string]int
	// exchanging holds the states whose code exchange is in progress, and
	// exchanges counts them per user.
	exchanging map[string]struct{}
	exchanges  map[string]int
	// pending holds the entries with a death the store has not taken yet.
	pending map[Key]*entry
	// timers are the armed expiry timers, here rather than on their
	// entries so Close can stop them without waiting for an entry's lock.
	timers map[Key]clock.Timer

	cache validationCache

	// closeMu guards closed; Close takes it for writing, so no timer
	// callback joins wg after Close began waiting.
	closeMu sync.RWMutex
	closed  bool

	stopOnce    sync.Once
	stop        chan struct{}
	persistKick chan struct{}
	wg          sync.WaitGroup
}

// entry is the in-memory state of one connection. mu serialises its
// writers and guards every field. Lock order: an entry's mu before the
// manager's mu.
type entry struct {
	mu     sync.Mutex
	loaded bool
	conn   store.Connection // SealedToken is not kept here
	token  secret.Value
	// deadGen is the highest token generation a broker said is dead. No
	// session at or below it is ever handed out.
	deadGen int64
	// pending is a death memory already shows and the store has not taken.
	pending *death
	// login is the newest login state known for this connection, or nil.
	login *store.LoginState
}

// New builds a Manager. Call Start to load connected tokens, arm their
// expiry timers and start the validation sweep.
func New(cfg Config) (*Manager, error) {
	if cfg.Store == nil || cfg.Sealer == nil || len(cfg.Brokers) == 0 {
		return nil, errors.New("connections: Store, Sealer and Brokers are required")
	}
	if cfg.Clock == nil {
		cfg.Clock = clock.Real{}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	def := func(p *time.Duration, d time.Duration) {
		if *p <= 0 {
			*p = d
		}
	}
	def(&cfg.LoginStateTTL, DefaultLoginStateTTL)
	def(&cfg.ValidationTTL, DefaultValidationTTL)
	def(&cfg.ValidationInterval, DefaultValidationInterval)
	def(&cfg.WriteTimeout, DefaultWriteTimeout)
	def(&cfg.PersistBackoff, 250*time.Millisecond)
	if cfg.ValidationConcurrency <= 0 {
		cfg.ValidationConcurrency = DefaultValidationConcurrency
	}
	if cfg.MaxPendingLogins <= 0 {
		cfg.MaxPendingLogins = DefaultMaxPendingLogins
	}
	if cfg.MaxWatchers <= 0 {
		cfg.MaxWatchers = DefaultMaxWatchers
	}
	return &Manager{
		cfg:         cfg,
		entries:     make(map[Key]*entry),
		watch:       make(map[*Watcher]struct{}),
		watchers:    make(map[string]int),
		exchanging:  make(map[string]struct{}),
		exchanges:   make(map[string]int),
		pending:     make(map[Key]*entry),
		timers:      make(map[Key]clock.Timer),
		cache:       validationCache{entries: make(map[Key]validation)},
		stop:        make(chan struct{}),
		persistKick: make(chan struct{}, 1),
	}, nil
}

// Start loads every connected token (failing if the token key cannot open
// them), expires those whose known expiry has passed, arms the timers of
// the others, and starts the periodic validation sweep and the persister of
// deaths the store refused. It returns when the load is done; the
// goroutines run until Close.
func (m *Manager) Start(ctx context.Context) error {
	f := store.ConnectionFilter{State: store.StateConnected, Limit: 500}
	for {
		page, err := m.cfg.Store.ListConnections(ctx, f)
		if err != nil {
			return fmt.Errorf("loading connections: %w", err)
		}
		for _, uc := range page {
			k := Key{uc.Connection.UserID, uc.Connection.Broker}
			if _, ok := m.cfg.Brokers[k.Broker]; !ok {
				continue
			}
			if _, err := m.load(ctx, k); err != nil {
				return err
			}
		}
		if len(page) < f.Limit {
			break
		}
		last := page[len(page)-1].Connection
		f.AfterUserID, f.AfterBroker = last.UserID, last.Broker
	}
	if !m.enter() {
		return errors.New("connections: Start after Close")
	}
	go m.sweepLoop()
	if m.enter() {
		go m.persistLoop()
	}
	return nil
}

// enter registers a goroutine with the manager's WaitGroup; false once
// Close has begun (the goroutine must not start).
func (m *Manager) enter() bool {
	m.closeMu.RLock()
	defer m.closeMu.RUnlock()
	if m.closed {
		return false
	}
	m.wg.Add(1)
	return true
}

// Close stops the sweep, the persister and the expiry timers, waits for
// every goroutine the manager started (a timer callback already running
// included), makes a last attempt to record deaths the store refused, and
// ends every watcher.
func (m *Manager) Close() {
	m.stopOnce.Do(func() {
		m.closeMu.Lock()
		m.closed = true
		m.closeMu.Unlock()
		close(m.stop)
		m.mu.Lock()
		for k, t := range m.timers {
			t.Stop()
			delete(m.timers, k)
		}
		for w := range m.watch {
			w.close()
		}
		m.mu.Unlock()
	})
	m.wg.Wait()
}

// OnChange registers a hook called after every published change, in the
// goroutine that made it, while that connection's lock is held. Hooks must
// not block or call back into the Manager. Register before Start.
func (m *Manager) OnChange(f func(Change)) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.hooks = append(m.hooks, f)
}

func (m *Manager) client(b broker.Kind) (broker.Client, error) {
	c, ok := m.cfg.Brokers[b]
	if !ok {
		return nil, &InputError{Field: "broker", Msg: fmt.Sprintf("broker %q is not configured", b)}
	}
	return c, nil
}

func (m *Manager) entry(k Key) *entry {
	m.mu.Lock()
	defer m.mu.Unlock()
	e, ok := m.entries[k]
	if !ok {
		e = &entry{}
		m.entries[k] = e
	}
	return e
}

// load returns the entry with its state read from the store, if it was not
// yet. It expires a connection whose known expiry has passed.
func (m *Manager) load(ctx context.Context, k Key) (*entry, error) {
	e := m.entry(k)
	e.mu.Lock()
	defer e.mu.Unlock()
	if err := m.loadLocked(ctx, k, e); err != nil {
		return nil, err
	}
	return e, nil
}

func (m *Manager) loadLocked(ctx context.Context, k Key, e *entry) error {
	if !e.loaded {
		c, err := m.cfg.Store.GetConnection(ctx, k.UserID, k.Broker)
		switch {
		case errors.Is(err, store.ErrNotFound):
			c = notConnected(k)
		case err != nil:
			return err
		}
		ls, err := m.cfg.Store.LatestLoginState(ctx, k.UserID, k.Broker)
		switch {
		case errors.Is(err, store.ErrNotFound):
		case err != nil:
			return err
		default:
			e.login = &ls
		}
		if c.State == store.StateConnected {
			pt, err := m.cfg.Sealer.Open(c.SealedToken, k.identity())
			if err != nil {
				return fmt.Errorf("opening the %s token of user %s: %w (is FEEDGATE_TOKEN_KEY or the key file the one these tokens were sealed with?)", k.Broker, k.UserID, err)
			}
			e.token = secret.New(string(pt))
		}
		c.SealedToken = nil
		e.conn, e.loaded = c, true
		if c.State == store.StateConnected && c.TokenGeneration <= e.deadGen {
			// A death observed before the row could be read: the store
			// still says CONNECTED, memory knows better.
			m.recordDeathLocked(k, e, c.TokenGeneration, store.ReasonTokenRevoked, "the broker refused the token", m.cfg.Clock.Now())
			return nil
		}
		m.armLocked(k, e)
	}
	if e.conn.State == store.StateConnected && !e.conn.ExpiresAt.IsZero() && !m.cfg.Clock.Now().Before(e.conn.ExpiresAt) {
		m.recordDeathLocked(k, e, e.conn.TokenGeneration, store.ReasonTokenExpired, "the token reached its known expiry", e.conn.ExpiresAt)
	}
	return nil
}

func notConnected(k Key) store.Connection {
	return store.Connection{UserID: k.UserID, Broker: k.Broker, State: store.StateDisconnected, Reason: store.ReasonNotConnected}
}

// stopTimer stops k's expiry timer, if armed.
func (m *Manager) stopTimer(k Key) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if t := m.timers[k]; t != nil {
		t.Stop()
		delete(m.timers, k)
	}
}

// armLocked (re)arms the expiry timer of a connected entry.
func (m *Manager) armLocked(k Key, e *entry) {
	m.stopTimer(k)
	if e.conn.State != store.StateConnected || e.conn.ExpiresAt.IsZero() {
		return
	}
	gen, at := e.conn.TokenGeneration, e.conn.ExpiresAt
	d := at.Sub(m.cfg.Clock.Now())
	if d <= 0 {
		return // loadLocked expires it
	}
	t := m.cfg.Clock.AfterFunc(d, func() {
		if !m.enter() {
			return
		}
		defer m.wg.Done()
		e.mu.Lock()
		defer e.mu.Unlock()
		if e.conn.State == store.StateConnected && e.conn.TokenGeneration == gen {
			m.recordDeathLocked(k, e, gen, store.ReasonTokenExpired, "the token reached its known expiry", at)
		}
	})
	m.mu.Lock()
	defer m.mu.Unlock()
	select {
	case <-m.stop:
		t.Stop() // closing: never leave a timer armed
	default:
		m.timers[k] = t
	}
}

// commitLocked writes a change through the store (after any death still
// pending for the entry), then memory, then publishes it unless quiet. fn
// edits the row; it returns the event.
func (m *Manager) commitLocked(ctx context.Context, k Key, e *entry, quiet bool, fn store.UpdateFunc) (store.Connection, error) {
	if err := m.flushLocked(ctx, k, e); err != nil {
		return store.Connection{}, err
	}
	c, err := m.cfg.Store.UpdateConnection(ctx, k.UserID, k.Broker, fn)
	if err != nil {
		return store.Connection{}, err
	}
	c.SealedToken = nil
	e.conn = c
	m.armLocked(k, e)
	if !quiet {
		m.publish(Change{Key: k, Conn: c})
	}
	return c, nil
}

func (m *Manager) publish(ch Change) {
	m.mu.Lock()
	hooks := m.hooks
	var ws []*Watcher
	for w := range m.watch {
		if w.userID == ch.Key.UserID {
			ws = append(ws, w)
		}
	}
	m.mu.Unlock()
	for _, h := range hooks {
		h(ch)
	}
	for _, w := range ws {
		w.notify(ch)
	}
}

// errNoChange aborts an update that found nothing to do.
var errNoChange = errors.New("no change")

// detached returns a context for a write that must not depend on the
// caller staying: ctx's values without its cancellation, and a deadline
// of its own.
func (m *Manager) detached(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), m.cfg.WriteTimeout)
}

// newState returns a random URL-safe state string.
func newState() (string, error) {
	var b [24]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	return base64.RawURLEncoding.EncodeToString(b[:]), nil
}
