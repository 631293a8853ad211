// Package connections is feedgate's broker-token lifecycle: one state
// machine per (user, broker), CONNECTED or DISCONNECTED with a reason.
//
// Every change is written to the store first (row and event log), then
// applied in memory, then published to hooks (the feed hub) and watchers
// (WatchConnectionStatus). The first auth-dead answer from a broker, on any
// path, disconnects that user on that broker; from then on every call fails
// locally with *AuthRequiredError and never reaches the broker. An
// invalidation carries the token generation it was observed with, so a late
// 401 for an old token cannot disconnect a newer login. Known expiry
// (Upstox 03:30 IST, Fyers JWT exp) disconnects on a timer with no broker
// call.
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

// Config holds a Manager's dependencies and settings.
type Config struct {
	Store   store.Store
	Sealer  *seal.Sealer
	Brokers map[broker.Kind]broker.Client
	Clock   clock.Clock
	Logger  *slog.Logger
	// LoginStateTTL is how long a GetLoginURL state is accepted (default 10 min).
	LoginStateTTL time.Duration
	// ValidationTTL is how long a validation result is trusted (default 5 min).
	ValidationTTL time.Duration
	// ValidationInterval is the period of the background sweep (default 30 min).
	ValidationInterval time.Duration
	// ValidationConcurrency bounds the probes a sweep runs at once (default 4).
	ValidationConcurrency int
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
	logins  map[string]login
	hooks   []func(Change)
	watch   map[*Watcher]struct{}

	cache validationCache

	stopOnce sync.Once
	stop     chan struct{}
	wg       sync.WaitGroup
}

// entry is the in-memory state of one connection. mu serialises its
// writers and guards every field. Lock order: an entry's mu before the
// manager's mu.
type entry struct {
	mu     sync.Mutex
	loaded bool
	conn   store.Connection // SealedToken is not kept here
	token  secret.Value
	timer  clock.Timer
}

type login struct {
	key     Key
	expires time.Time
	created time.Time
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
	if cfg.LoginStateTTL <= 0 {
		cfg.LoginStateTTL = 10 * time.Minute
	}
	if cfg.ValidationTTL <= 0 {
		cfg.ValidationTTL = 5 * time.Minute
	}
	if cfg.ValidationInterval <= 0 {
		cfg.ValidationInterval = 30 * time.Minute
	}
	if cfg.ValidationConcurrency <= 0 {
		cfg.ValidationConcurrency = 4
	}
	return &Manager{
		cfg:     cfg,
		entries: make(map[Key]*entry),
		logins:  make(map[string]login),
		watch:   make(map[*Watcher]struct{}),
		cache:   validationCache{entries: make(map[Key]validation)},
		stop:    make(chan struct{}),
	}, nil
}

// Start loads every connected token (failing if the token key cannot open
// them), expires those whose known expiry has passed, arms the timers of
// the others, and starts the periodic validation sweep. It returns when the
// load is done; the sweep runs until Close.
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
	m.wg.Add(1)
	go m.sweepLoop()
	return nil
}

// Close stops the sweep and the expiry timers and ends every watcher.
func (m *Manager) Close() {
	m.stopOnce.Do(func() {
		close(m.stop)
		// Lock order is entry, then manager (a commit publishes while it
		// holds its entry): never hold m.mu while taking an entry's lock.
		m.mu.Lock()
		entries := make([]*entry, 0, len(m.entries))
		for _, e := range m.entries {
			entries = append(entries, e)
		}
		for w := range m.watch {
			w.close()
		}
		m.mu.Unlock()
		for _, e := range entries {
			e.mu.Lock()
			if e.timer != nil {
				e.timer.Stop()
			}
			e.mu.Unlock()
		}
	})
	m.wg.Wait()
}

// OnChange registers a hook called after every committed change, in the
// goroutine that made it. Hooks must not block. Register before Start.
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
	if e.loaded {
		e.mu.Unlock()
		return e, m.expireIfDue(ctx, k, e)
	}
	defer e.mu.Unlock()
	c, err := m.cfg.Store.GetConnection(ctx, k.UserID, k.Broker)
	switch {
	case errors.Is(err, store.ErrNotFound):
		c = notConnected(k)
	case err != nil:
		return nil, err
	}
	if c.State == store.StateConnected {
		pt, err := m.cfg.Sealer.Open(c.SealedToken, k.identity())
		if err != nil {
			return nil, fmt.Errorf("opening the %s token of user %s: %w (is FEEDGATE_TOKEN_KEY or the key file the one these tokens were sealed with?)", k.Broker, k.UserID, err)
		}
		e.token = secret.New(string(pt))
	}
	c.SealedToken = nil
	e.conn, e.loaded = c, true
	m.armLocked(k, e)
	return e, m.expireIfDueLocked(ctx, k, e)
}

func notConnected(k Key) store.Connection {
	return store.Connection{UserID: k.UserID, Broker: k.Broker, State: store.StateDisconnected, Reason: store.ReasonNotConnected}
}

// armLocked (re)arms the expiry timer of a connected entry.
func (m *Manager) armLocked(k Key, e *entry) {
	if e.timer != nil {
		e.timer.Stop()
		e.timer = nil
	}
	if e.conn.State != store.StateConnected || e.conn.ExpiresAt.IsZero() {
		return
	}
	gen := e.conn.TokenGeneration
	d := e.conn.ExpiresAt.Sub(m.cfg.Clock.Now())
	if d <= 0 {
		return // expireIfDueLocked handles it
	}
	e.timer = m.cfg.Clock.AfterFunc(d, func() {
		select {
		case <-m.stop:
			return
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := m.invalidate(ctx, k, gen, store.ReasonTokenExpired, "the token reached its known expiry"); err != nil {
			m.cfg.Logger.Error("expiring a token failed", "user_id", k.UserID, "broker", k.Broker, "err", err)
		}
	})
}

func (m *Manager) expireIfDue(ctx context.Context, k Key, e *entry) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	return m.expireIfDueLocked(ctx, k, e)
}

func (m *Manager) expireIfDueLocked(ctx context.Context, k Key, e *entry) error {
	if e.conn.State != store.StateConnected || e.conn.ExpiresAt.IsZero() || m.cfg.Clock.Now().Before(e.conn.ExpiresAt) {
		return nil
	}
	return m.invalidateLocked(ctx, k, e, e.conn.TokenGeneration, store.ReasonTokenExpired, "the token reached its known expiry")
}

// commitLocked writes a change through the store, then memory, then
// publishes it. fn edits the row; it returns the event kind and detail.
func (m *Manager) commitLocked(ctx context.Context, k Key, e *entry, fn store.UpdateFunc) (store.Connection, error) {
	c, err := m.cfg.Store.UpdateConnection(ctx, k.UserID, k.Broker, fn)
	if err != nil {
		return store.Connection{}, err
	}
	c.SealedToken = nil
	e.conn = c
	m.armLocked(k, e)
	m.publish(Change{Key: k, Conn: c})
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

// invalidate disconnects k if it is still connected with generation gen.
func (m *Manager) invalidate(ctx context.Context, k Key, gen int64, reason store.Reason, detail string) error {
	e, err := m.load(ctx, k)
	if err != nil {
		return err
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	return m.invalidateLocked(ctx, k, e, gen, reason, detail)
}

func (m *Manager) invalidateLocked(ctx context.Context, k Key, e *entry, gen int64, reason store.Reason, detail string) error {
	if e.conn.State != store.StateConnected || e.conn.TokenGeneration != gen {
		return nil // already disconnected, or a newer login happened since
	}
	now := m.cfg.Clock.Now().UTC()
	_, err := m.commitLocked(ctx, k, e, func(c *store.Connection) (*store.Event, error) {
		if c.State != store.StateConnected || c.TokenGeneration != gen {
			return nil, errNoChange
		}
		c.State, c.Reason, c.SealedToken = store.StateDisconnected, reason, nil
		c.DisconnectedAt, c.UpdatedAt = now, now
		c.ExpiresAt = time.Time{}
		c.LastError = detail
		return &store.Event{Kind: "disconnect", At: now, Detail: detail}, nil
	})
	if errors.Is(err, errNoChange) {
		return nil
	}
	if err != nil {
		return err
	}
	e.token = secret.Value{}
	m.cache.drop(k)
	m.cfg.Logger.Info("broker connection disconnected", "user_id", k.UserID, "broker", k.Broker, "reason", reason, "generation", gen, "detail", detail)
	return nil
}

// newState returns a random URL-safe state string.
func newState() (string, error) {
	var b [24]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	return base64.RawURLEncoding.EncodeToString(b[:]), nil
}
