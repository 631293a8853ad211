// Package feed is feedgate's market-feed hub: one upstream feed per (user,
// broker), shared by all of that user's client streams on that broker.
//
// Subscriptions are reference-counted per instrument: the upstream carries
// the union of its streams' keys, each in the richest mode any stream wants,
// unsubscribes what no stream wants any more, and closes with its last
// stream. Each stream has a bounded, conflating queue (see Stream), and
// Next hands over everything queued as one TickBatch, so the API sends one
// message per wake-up.
//
// A transport loss reconnects with full-jitter backoff, re-reading the
// user's current token from the connections manager before every dial, and
// tells the streams UPSTREAM_STATE_RECONNECTING, then LIVE. An auth loss
// (the broker refusing the token on dial, or the connection disconnected by
// any other path, seen through connections' OnChange) reports the dead
// token, gives every stream of that user on that broker one
// EventAuthRequired and ends them; other users and the user's other broker
// are untouched.
//
// Errors for the API layer: *InputError → InvalidArgument, *LimitError →
// ResourceExhausted, ErrHubClosed → Unavailable, and the
// *connections.AuthRequiredError a stream ends with → Unauthenticated with
// the AuthRequired detail.
package feed

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"

	feedgatev1 "github.com/feedgate/feedgate/gen/go/feedgate/v1"
	"github.com/feedgate/feedgate/server/broker"
	"github.com/feedgate/feedgate/server/clock"
	"github.com/feedgate/feedgate/server/connections"
	"github.com/feedgate/feedgate/server/metrics"
	"github.com/feedgate/feedgate/server/ratelimit"
	"github.com/feedgate/feedgate/server/store"
)

// DefaultReconnectBudget allows 20 upstream reconnects a second per
// broker, across all users: after an outage a thousand users' feeds come
// back within a minute without a stampede at the broker.
var DefaultReconnectBudget = []ratelimit.Window{{N: 20, Per: time.Second}, {N: 600, Per: time.Minute}}

// DefaultMaxStreamKeys is the most instrument keys one stream may name, as
// the public API allows.
const DefaultMaxStreamKeys = 500

// DefaultMaxStreamsPerUser bounds one user's open streams, across brokers.
const DefaultMaxStreamsPerUser = 200

// Sessions is what the hub needs from the connections manager;
// *connections.Manager implements it.
type Sessions interface {
	Session(ctx context.Context, userID string, b broker.Kind) (connections.Session, error)
	ReportAuthDead(ctx context.Context, s connections.Session, op string, cause error) error
	AuthRequired(ctx context.Context, k connections.Key) (*connections.AuthRequiredError, error)
	OnChange(f func(connections.Change))
}

var _ Sessions = (*connections.Manager)(nil)

// Config holds a Hub's dependencies and settings.
type Config struct {
	// Conns is the connections manager (required).
	Conns Sessions
	// Dialers opens each broker's upstream feed (required).
	Dialers map[broker.Kind]broker.FeedDialer
	// Metrics receives the hub's metrics; nil keeps them private.
	Metrics *metrics.Feed
	// Clock times reconnect backoff and stamps last-tick times (clock.Real).
	Clock clock.Clock
	// Jitter returns a uniform duration in [0, ceiling) (math/rand/v2).
	Jitter func(ceiling time.Duration) time.Duration
	// BackoffBase and BackoffCap shape reconnect backoff (250 ms, 30 s).
	BackoffBase, BackoffCap time.Duration
	// ReconnectBudget bounds upstream reconnects per broker across all
	// users (default DefaultReconnectBudget).
	ReconnectBudget []ratelimit.Window
	// FeedOptions are passed to every dial.
	FeedOptions broker.FeedOptions
	// MaxStreamKeys bounds one stream's keys (DefaultMaxStreamKeys).
	MaxStreamKeys int
	// MaxStreamsPerUser bounds one user's open streams, across brokers
	// (DefaultMaxStreamsPerUser).
	MaxStreamsPerUser int
	// Logger receives operational logs (never tokens); nil discards.
	Logger *slog.Logger
}

// Hub owns the upstream feeds and their streams. It is safe for concurrent
// use.
type Hub struct {
	cfg    Config
	bm     map[broker.Kind]*brokerMetrics
	mu     sync.Mutex
	ups    map[connections.Key]*upstream
	closed bool
	// perUser counts each user's open streams (Subscribe to Close).
	perUser map[string]int
	wg      sync.WaitGroup // one per upstream run goroutine
	// reconnects is the fleet-wide reconnect budget, keyed by broker.
	reconnects *ratelimit.Limiter
}

// brokerMetrics are one broker's resolved metric series.
type brokerMetrics struct {
	openStreams                                            *metrics.Gauge
	ticksIn, ticksOut, conflated, reconnects, authDisconns *metrics.Counter
	states                                                 map[feedgatev1.UpstreamState]*metrics.Gauge
}

// New builds a Hub and registers its OnChange hook with cfg.Conns.
func New(cfg Config) (*Hub, error) {
	if cfg.Conns == nil || len(cfg.Dialers) == 0 {
		return nil, fmt.Errorf("feed: Conns and Dialers are required")
	}
	if cfg.Metrics == nil {
		cfg.Metrics = metrics.NewFeed(metrics.NewRegistry())
	}
	if cfg.Clock == nil {
		cfg.Clock = clock.Real{}
	}
	if cfg.Jitter == nil {
		cfg.Jitter = func(c time.Duration) time.Duration { return rand.N(c) }
	}
	if cfg.BackoffBase <= 0 {
		cfg.BackoffBase = DefaultBackoffBase
	}
	if cfg.BackoffCap <= 0 {
		cfg.BackoffCap = DefaultBackoffCap
	}
	if cfg.ReconnectBudget == nil {
		cfg.ReconnectBudget = DefaultReconnectBudget
	}
	if cfg.MaxStreamKeys <= 0 {
		cfg.MaxStreamKeys = DefaultMaxStreamKeys
	}
	if cfg.MaxStreamsPerUser <= 0 {
		cfg.MaxStreamsPerUser = DefaultMaxStreamsPerUser
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	// On real time even under a fake clock: it only paces real dials.
	reconnects, err := ratelimit.New(cfg.ReconnectBudget)
	if err != nil {
		return nil, fmt.Errorf("feed: ReconnectBudget: %w", err)
	}
	h := &Hub{cfg: cfg, bm: map[broker.Kind]*brokerMetrics{}, ups: map[connections.Key]*upstream{}, perUser: map[string]int{}, reconnects: reconnects}
	for k := range cfg.Dialers {
		b := string(k)
		m := cfg.Metrics
		h.bm[k] = &brokerMetrics{
			openStreams: m.OpenStreams.With(b),
			ticksIn:     m.TicksIn.With(b), ticksOut: m.TicksOut.With(b), conflated: m.Conflated.With(b),
			reconnects: m.Reconnects.With(b), authDisconns: m.AuthDisconnects.With(b),
			states: map[feedgatev1.UpstreamState]*metrics.Gauge{
				feedgatev1.UpstreamState_UPSTREAM_STATE_CONNECTING:   m.Upstreams.With(b, "connecting"),
				feedgatev1.UpstreamState_UPSTREAM_STATE_LIVE:         m.Upstreams.With(b, "live"),
				feedgatev1.UpstreamState_UPSTREAM_STATE_RECONNECTING: m.Upstreams.With(b, "reconnecting"),
			},
		}
	}
	cfg.Conns.OnChange(h.onChange)
	return h, nil
}

// Subscribe opens a stream of keys in mode on userID's upstream feed of
// broker b, starting that upstream if it is the user's first stream there.
// When the connection is already disconnected, the stream it returns
// yields the EventAuthRequired at once and then ends. ctx bounds only this
// call; the stream lives until Close, auth loss or the hub's Close.
func (h *Hub) Subscribe(ctx context.Context, userID string, b broker.Kind, keys []string, mode broker.FeedMode) (*Stream, error) {
	dialer, ok := h.cfg.Dialers[b]
	if !ok {
		return nil, &InputError{Field: "broker", Msg: fmt.Sprintf("broker %q has no market feed", b)}
	}
	if !mode.Valid() {
		return nil, &InputError{Field: "mode", Msg: "unknown feed mode"}
	}
	if len(keys) == 0 {
		return nil, &InputError{Field: "instrument_keys", Msg: "at least one instrument key is required"}
	}
	if len(keys) > h.cfg.MaxStreamKeys {
		return nil, &InputError{Field: "instrument_keys", Msg: fmt.Sprintf("at most %d instrument keys per stream", h.cfg.MaxStreamKeys)}
	}
	uniq := make([]string, 0, len(keys))
	seen := make(map[string]struct{}, len(keys))
	for _, k := range keys {
		if k == "" {
			return nil, &InputError{Field: "instrument_keys", Msg: "empty instrument key"}
		}
		if _, dup := seen[k]; !dup {
			seen[k] = struct{}{}
			uniq = append(uniq, k)
		}
	}
	key := connections.Key{UserID: userID, Broker: b}
	bm := h.bm[b]
	st := newStream(h, bm, uniq, mode)
	if err := h.admit(st, userID); err != nil {
		return nil, err
	}
	ae, err := h.cfg.Conns.AuthRequired(ctx, key)
	if err != nil {
		st.Close()
		return nil, err
	}
	if ae != nil {
		st.end(ae, ae)
		return st, nil
	}

	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		h.releaseLocked(st)
		return nil, ErrHubClosed
	}
	u := h.ups[key]
	created := u == nil
	if created {
		u = newUpstream(h, key, dialer, bm)
	}
	if err := u.join(st); err != nil {
		h.releaseLocked(st)
		return nil, err
	}
	st.up = u
	bm.openStreams.Inc()
	if created {
		h.ups[key] = u
		bm.states[feedgatev1.UpstreamState_UPSTREAM_STATE_CONNECTING].Inc()
		h.wg.Add(1)
		go u.run()
	}
	return st, nil
}

// admit counts st against its user's stream limit; Close releases it.
func (h *Hub) admit(st *Stream, userID string) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return ErrHubClosed
	}
	if h.perUser[userID] >= h.cfg.MaxStreamsPerUser {
		return &StreamLimitError{Max: h.cfg.MaxStreamsPerUser}
	}
	h.perUser[userID]++
	st.user = userID
	return nil
}

// releaseLocked gives back st's place in its user's stream limit, once.
func (h *Hub) releaseLocked(st *Stream) {
	if st.user == "" {
		return
	}
	if h.perUser[st.user]--; h.perUser[st.user] <= 0 {
		delete(h.perUser, st.user)
	}
	st.user = ""
}

// onChange is the connections hook: a disconnected connection ends its
// upstream's streams with AuthRequired. It runs inside the manager's
// commit, so it only signals.
func (h *Hub) onChange(ch connections.Change) {
	h.mu.Lock()
	u := h.ups[ch.Key]
	h.mu.Unlock()
	switch {
	case u == nil:
	case ch.Conn.State == store.StateDisconnected:
		u.authLost(ch)
	case ch.Conn.State == store.StateConnected:
		u.loggedIn()
	}
}

// Upstreams returns how many upstream feeds are open.
func (h *Hub) Upstreams() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.ups)
}

// Close ends every stream with ErrHubClosed, closes every upstream and
// waits for their goroutines. Subscribe fails afterwards.
func (h *Hub) Close() error {
	h.mu.Lock()
	h.closed = true
	ups := make([]*upstream, 0, len(h.ups))
	for _, u := range h.ups {
		ups = append(ups, u)
	}
	h.mu.Unlock()
	for _, u := range ups {
		u.cancel(ErrHubClosed)
	}
	h.wg.Wait()
	return nil
}
