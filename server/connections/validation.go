package connections

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/feedgate/feedgate/server/broker"
	"github.com/feedgate/feedgate/server/store"
)

// validation is a cached probe result.
type validation struct {
	at         time.Time
	generation int64
}

// validationCache remembers which tokens the broker confirmed valid, and
// when, so sweeps skip tokens checked within the TTL.
type validationCache struct {
	mu           sync.Mutex
	entries      map[Key]validation
	hits, misses atomic.Int64
}

func (c *validationCache) get(k Key, gen int64, now time.Time, ttl time.Duration) bool {
	c.mu.Lock()
	v, ok := c.entries[k]
	c.mu.Unlock()
	if ok && v.generation == gen && now.Sub(v.at) < ttl {
		c.hits.Add(1)
		return true
	}
	c.misses.Add(1)
	return false
}

func (c *validationCache) put(k Key, gen int64, at time.Time) {
	c.mu.Lock()
	c.entries[k] = validation{at: at, generation: gen}
	c.mu.Unlock()
}

func (c *validationCache) drop(k Key) {
	c.mu.Lock()
	delete(c.entries, k)
	c.mu.Unlock()
}

// CacheStats are the validation cache's counters.
type CacheStats struct {
	Entries, Hits, Misses int64
	TTL                   time.Duration
}

// HitRatio is Hits / (Hits + Misses), 0 with no lookups.
func (s CacheStats) HitRatio() float64 {
	if s.Hits+s.Misses == 0 {
		return 0
	}
	return float64(s.Hits) / float64(s.Hits+s.Misses)
}

// CacheStats returns the validation cache's counters.
func (m *Manager) CacheStats() CacheStats {
	m.cache.mu.Lock()
	n := len(m.cache.entries)
	m.cache.mu.Unlock()
	return CacheStats{Entries: int64(n), Hits: m.cache.hits.Load(), Misses: m.cache.misses.Load(), TTL: m.cfg.ValidationTTL}
}

// ClearCache drops cached validations of userID ("" for all users) on b
// ("" for all brokers) and returns how many it dropped.
func (m *Manager) ClearCache(userID string, b broker.Kind) int64 {
	m.cache.mu.Lock()
	defer m.cache.mu.Unlock()
	var n int64
	for k := range m.cache.entries {
		if (userID == "" || k.UserID == userID) && (b == "" || k.Broker == b) {
			delete(m.cache.entries, k)
			n++
		}
	}
	return n
}

// Outcome is the result of validating one token.
type Outcome int

// Validation outcomes.
const (
	OutcomeValid Outcome = iota
	OutcomeCached
	OutcomeInvalidated
	OutcomeError
	OutcomeSkipped // not connected
)

// Validate probes k's token with the broker's profile call, unless force
// is false and a result younger than the TTL is cached. A dead token
// disconnects the connection.
func (m *Manager) Validate(ctx context.Context, k Key, force bool) (Outcome, error) {
	s, err := m.Session(ctx, k.UserID, k.Broker)
	var ar *AuthRequiredError
	if errors.As(err, &ar) {
		return OutcomeSkipped, nil
	}
	if err != nil {
		return OutcomeError, err
	}
	now := m.cfg.Clock.Now()
	if !force && m.cache.get(k, s.Generation, now, m.cfg.ValidationTTL) {
		return OutcomeCached, nil
	}
	if force {
		m.cache.misses.Add(1)
	}
	c, _ := m.client(k.Broker)
	_, err = c.Profile(ctx, s.Creds)
	if broker.IsAuthDead(err) {
		if _, newer := m.reportAuthDead(ctx, s, "token validation", err); newer {
			return OutcomeSkipped, nil // a newer login replaced the token meanwhile
		}
		return OutcomeInvalidated, nil
	}
	if err != nil {
		m.noteError(ctx, k, s.Generation, "token validation: "+err.Error())
		return OutcomeError, err
	}
	m.cache.put(k, s.Generation, now)
	m.markValidated(ctx, k, s.Generation, now)
	return OutcomeValid, nil
}

// markValidated records a successful probe (no event: probes are frequent;
// not published: it changes nothing a client acts on).
func (m *Manager) markValidated(ctx context.Context, k Key, gen int64, at time.Time) {
	m.touch(ctx, k, gen, func(c *store.Connection) { c.LastValidatedAt, c.LastError = at.UTC(), "" })
}

// noteError records a failed probe that did not prove the token dead.
func (m *Manager) noteError(ctx context.Context, k Key, gen int64, msg string) {
	m.touch(ctx, k, gen, func(c *store.Connection) { c.LastError = msg })
}

func (m *Manager) touch(ctx context.Context, k Key, gen int64, edit func(*store.Connection)) {
	e, err := m.load(ctx, k)
	if err != nil {
		return
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.conn.State != store.StateConnected || e.conn.TokenGeneration != gen {
		return
	}
	_, err = m.commitLocked(ctx, k, e, true, func(c *store.Connection) (*store.Event, error) {
		if c.State != store.StateConnected || c.TokenGeneration != gen {
			return nil, errNoChange
		}
		edit(c)
		c.UpdatedAt = m.cfg.Clock.Now().UTC()
		return nil, nil
	})
	if err != nil && !errors.Is(err, errNoChange) {
		m.cfg.Logger.Warn("recording a validation failed", "user_id", k.UserID, "broker", k.Broker, "err", err)
	}
}

// SweepResult counts a sweep's outcomes.
type SweepResult struct {
	Checked, Valid, Invalidated, Errors, Cached int
	Duration                                    time.Duration
}

// Sweep validates every connected token (of broker b, or all when b is
// ""), force ignoring the cache, with bounded concurrency.
func (m *Manager) Sweep(ctx context.Context, b broker.Kind, force bool) (SweepResult, error) {
	start := time.Now()
	var keys []Key
	f := store.ConnectionFilter{State: store.StateConnected, Broker: b, Limit: 500}
	for {
		page, err := m.cfg.Store.ListConnections(ctx, f)
		if err != nil {
			return SweepResult{}, err
		}
		for _, uc := range page {
			if _, ok := m.cfg.Brokers[uc.Connection.Broker]; !ok {
				continue
			}
			if !uc.User.Active() {
				// Revoked (by the CLI, perhaps while this process ran):
				// never probe its tokens again.
				m.UserRevoked(uc.User.ID)
				continue
			}
			keys = append(keys, Key{uc.Connection.UserID, uc.Connection.Broker})
		}
		if len(page) < f.Limit {
			break
		}
		last := page[len(page)-1].Connection
		f.AfterUserID, f.AfterBroker = last.UserID, last.Broker
	}
	var (
		mu  sync.Mutex
		res SweepResult
	)
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(m.cfg.ValidationConcurrency)
	for _, k := range keys {
		g.Go(func() error {
			out, _ := m.Validate(gctx, k, force)
			mu.Lock()
			defer mu.Unlock()
			switch out {
			case OutcomeValid:
				res.Checked++
				res.Valid++
			case OutcomeCached:
				res.Cached++
			case OutcomeInvalidated:
				res.Checked++
				res.Invalidated++
			case OutcomeError:
				res.Checked++
				res.Errors++
			}
			return nil
		})
	}
	_ = g.Wait()
	res.Duration = time.Since(start)
	return res, ctx.Err()
}

func (m *Manager) sweepLoop() {
	defer m.wg.Done()
	for {
		fired := make(chan struct{})
		t := m.cfg.Clock.AfterFunc(m.cfg.ValidationInterval, func() { close(fired) })
		select {
		case <-m.stop:
			t.Stop()
			return
		case <-fired:
		}
		ctx, cancel := context.WithTimeout(context.Background(), m.cfg.ValidationInterval)
		go func() {
			select {
			case <-m.stop:
				cancel()
			case <-ctx.Done():
			}
		}()
		res, err := m.Sweep(ctx, "", false)
		cancel()
		m.cfg.Logger.Info("token validation sweep", "checked", res.Checked, "valid", res.Valid, "invalidated", res.Invalidated,
			"errors", res.Errors, "cached", res.Cached, "duration", res.Duration, "err", err)
	}
}
