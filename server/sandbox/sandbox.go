// Package sandbox simulates the Upstox (v2/v3) and Fyers (v3) HTTP APIs and
// the Upstox v3 market-data feed, as shared/brokers.md describes them: same
// paths, methods, headers, request encodings, JSON shapes, HTTP statuses and
// error codes. It is feedgate's default broker (so the gateway runs with no
// broker account) and what the tests talk to, over real HTTP and WebSocket.
//
// One Handler serves Upstox under /upstox, Fyers under /fyers and the
// control API under /sandbox/. Tokens and their fates (revoked, expired,
// logged out) persist in Config.DataDir, so a restarted sandbox honours and
// refuses the same tokens. Market data is synthetic: a random-walk spot per
// underlying advancing with the injected clock, and Black-Scholes option
// prices and greeks, consistent between REST and the feed.
package sandbox

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// Credentials of the sandbox's broker apps. A gateway configured with these
// logs in to the sandbox as it would to the real broker.
const (
	UpstoxClientID     = "sandbox-upstox-app"
	UpstoxClientSecret = "sandbox-upstox-secret"
	FyersAppID         = "SANDBOX-100"
	FyersSecret        = "sandbox-fyers-secret"
	// DefaultAccount is the sandbox account a login approves when the
	// dialog URL names none (query parameter "account").
	DefaultAccount = "sandbox"
)

// ist is India Standard Time, UTC+05:30 all year; a fixed zone needs no
// time-zone database.
var ist = time.FixedZone("IST", 5*3600+30*60)

// Config configures a Sandbox. The zero value is usable.
type Config struct {
	// DataDir is where state persists (file sandbox.json, written
	// atomically); "" keeps it in memory only.
	DataDir string
	// Now is the clock for token lifetimes, rate limits and market data;
	// nil means time.Now.
	Now func() time.Time
	// FeedInterval is the time between live feed rounds; 0 means 1s.
	FeedInterval time.Duration
	// Logger receives operational logs (never tokens); nil discards.
	Logger *slog.Logger
}

// Sandbox is a simulated broker. Its methods are safe for concurrent use.
type Sandbox struct {
	now   func() time.Time
	log   *slog.Logger
	store *store
	mkt   *market
	mux   *http.ServeMux

	feedInterval atomic.Int64 // nanoseconds
	rateLimits   atomic.Bool  // enforcement on

	limiter *limiter
	faults  *faults
	stats   *stats
	codes   *codes
	feeds   *feedHub

	ctx    context.Context
	cancel context.CancelFunc
	mu     sync.Mutex // guards closed and wg.Add against Close
	closed bool
	wg     sync.WaitGroup
}

// New builds a Sandbox, loading the state persisted in cfg.DataDir.
func New(cfg Config) (*Sandbox, error) {
	now := cfg.Now
	if now == nil {
		now = time.Now
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	st, err := openStore(cfg.DataDir)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &Sandbox{
		now:     now,
		log:     log,
		store:   st,
		mkt:     newMarket(now()),
		limiter: newLimiter(),
		faults:  &faults{},
		stats:   newStats(),
		codes:   newCodes(),
		ctx:     ctx,
		cancel:  cancel,
	}
	s.feeds = newFeedHub(s)
	iv := cfg.FeedInterval
	if iv <= 0 {
		iv = time.Second
	}
	s.feedInterval.Store(int64(iv))
	s.rateLimits.Store(true)
	s.mux = s.routes()
	return s, nil
}

// Handler serves the Upstox API under /upstox, the Fyers API under /fyers
// and the control API under /sandbox/.
func (s *Sandbox) Handler() http.Handler { return s.mux }

// Close stops the feed loops, closes the feed sockets and waits for every
// goroutine the sandbox started. Calls after the first return nil.
func (s *Sandbox) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	s.mu.Unlock()
	s.cancel()
	s.feeds.closeAll()
	s.wg.Wait()
	return nil
}

// track registers a goroutine Close waits for (the caller must call
// s.wg.Done); it reports false once the sandbox is closed.
func (s *Sandbox) track() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.wg.Add(1)
	return true
}

// Revoke kills every token of account at broker, as POST /sandbox/revoke
// does: the next call with one gets the broker's dead-token answer, and the
// account's open feed sockets close.
func (s *Sandbox) Revoke(b Broker, account string) {
	s.kill(b, account, stateRevoked)
}

// Expire marks every token of account at broker expired, as POST
// /sandbox/expire does.
func (s *Sandbox) Expire(b Broker, account string) {
	s.kill(b, account, stateExpired)
}

func (s *Sandbox) kill(b Broker, account string, st tokenState) {
	if err := s.store.killAccount(b, account, st); err != nil {
		s.log.Error("sandbox: persist state", "err", err)
	}
	s.feeds.closeAccount(b, account, "token "+string(st))
}

// Stats returns the call and feed counters, as GET /sandbox/stats does.
func (s *Sandbox) Stats() Stats {
	st := s.stats.snapshot()
	st.FeedConnections = s.feeds.stats()
	return st
}
