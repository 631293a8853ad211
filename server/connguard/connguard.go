// Package connguard bounds what one network peer can make the gateway
// spend before it has proved anything: how many TCP connections it holds
// (in total and per remote address, below the process's descriptor
// limit), how large a request body can be, and how fast one connection may
// cancel streams (HTTP/2 rapid reset) or have its requests refused (no or
// a wrong API key). A connection past either rate is closed: the HTTP/2
// server in net/http has no knob for them, and closing the socket ends
// every stream on it at once.
//
// Wire it into an http.Server with ConnState and ConnContext, wrap the
// handler with Handler, and report refused requests with Refused.
package connguard

import (
	"context"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"
)

// Config sets a Guard's limits. Zero values take the defaults below.
type Config struct {
	// MaxConns bounds open connections in total (default: three quarters
	// of the descriptor limit, see DefaultMaxConns).
	MaxConns int
	// MaxConnsPerAddr bounds open connections from one remote IP address
	// (default 1024; negative: no limit, for a gateway behind a proxy
	// whose connections all come from one address).
	MaxConnsPerAddr int
	// MaxBodyBytes bounds one request's body (default 4 MiB).
	MaxBodyBytes int64
	// ResetRate and ResetBurst bound requests a client cancels before
	// they finish, per connection (default 200/s, burst 2000).
	ResetRate  rate.Limit
	ResetBurst int
	// RefusalRate and RefusalBurst bound refused requests per connection
	// (default 50/s, burst 200).
	RefusalRate  rate.Limit
	RefusalBurst int
	// Logger receives one line per refused or closed connection, at most
	// a few a second.
	Logger *slog.Logger
}

// Defaults.
const (
	DefaultMaxConnsPerAddr = 1024
	DefaultMaxBodyBytes    = 4 << 20
)

// Guard enforces a Config. It is safe for concurrent use.
type Guard struct {
	cfg Config
	log *Sampler

	mu      sync.Mutex
	total   int
	perAddr map[string]int
	open    map[net.Conn]string // admitted connections and their address

	refusedConns, closedConns atomic.Int64
}

// New returns a Guard.
func New(cfg Config) *Guard {
	if cfg.MaxConns <= 0 {
		cfg.MaxConns = DefaultMaxConns()
	}
	if cfg.MaxConnsPerAddr == 0 {
		cfg.MaxConnsPerAddr = DefaultMaxConnsPerAddr
	}
	if cfg.MaxBodyBytes <= 0 {
		cfg.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if cfg.ResetRate <= 0 {
		cfg.ResetRate, cfg.ResetBurst = 200, 2000
	}
	if cfg.RefusalRate <= 0 {
		cfg.RefusalRate, cfg.RefusalBurst = 50, 200
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Guard{cfg: cfg, log: NewSampler(cfg.Logger, 2, 10), perAddr: map[string]int{}, open: map[net.Conn]string{}}
}

// MaxConns is the total connection limit in force.
func (g *Guard) MaxConns() int { return g.cfg.MaxConns }

func host(c net.Conn) string {
	h, _, err := net.SplitHostPort(c.RemoteAddr().String())
	if err != nil {
		return c.RemoteAddr().String()
	}
	return h
}

// ConnState is the http.Server hook: it closes a new connection at once
// when the total or its address's limit is reached.
func (g *Guard) ConnState(c net.Conn, s http.ConnState) {
	switch s {
	case http.StateNew:
		h := host(c)
		g.mu.Lock()
		over := g.total >= g.cfg.MaxConns || (g.cfg.MaxConnsPerAddr > 0 && g.perAddr[h] >= g.cfg.MaxConnsPerAddr)
		if !over {
			g.total++
			g.perAddr[h]++
			g.open[c] = h
		}
		g.mu.Unlock()
		if over {
			g.refusedConns.Add(1)
			g.log.Warn("connection refused: too many open connections", "remote", h, "max_conns", g.cfg.MaxConns, "max_conns_per_addr", g.cfg.MaxConnsPerAddr)
			_ = c.Close()
		}
	case http.StateClosed, http.StateHijacked:
		g.mu.Lock()
		if h, ok := g.open[c]; ok {
			delete(g.open, c)
			g.total--
			if g.perAddr[h]--; g.perAddr[h] <= 0 {
				delete(g.perAddr, h)
			}
		}
		g.mu.Unlock()
	}
}

// conn is one connection's budget of cancelled and refused requests.
type conn struct {
	c        net.Conn
	resets   *rate.Limiter
	refusals *rate.Limiter
	once     sync.Once
}

type connKey struct{}

// ConnContext is the http.Server hook that gives every request its
// connection's budget.
func (g *Guard) ConnContext(ctx context.Context, c net.Conn) context.Context {
	return context.WithValue(ctx, connKey{}, &conn{c: c,
		resets:   rate.NewLimiter(g.cfg.ResetRate, g.cfg.ResetBurst),
		refusals: rate.NewLimiter(g.cfg.RefusalRate, g.cfg.RefusalBurst)})
}

func (g *Guard) drop(cn *conn, why string) {
	cn.once.Do(func() {
		g.closedConns.Add(1)
		g.log.Warn("connection closed: "+why, "remote", host(cn.c))
		_ = cn.c.Close()
	})
}

// Handler bounds every request's body and counts the requests the client
// cancels before they finish against their connection's budget.
func (g *Guard) Handler(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ContentLength > g.cfg.MaxBodyBytes {
			http.Error(w, "request body too large", http.StatusRequestEntityTooLarge)
			return
		}
		r.Body = http.MaxBytesReader(w, r.Body, g.cfg.MaxBodyBytes)
		next.ServeHTTP(w, r)
		if r.Context().Err() == nil {
			return
		}
		if cn, ok := r.Context().Value(connKey{}).(*conn); ok && !cn.resets.Allow() {
			g.drop(cn, "too many cancelled requests (HTTP/2 rapid reset?)")
		}
	})
}

// Refused counts a refused request (no or a wrong API key) against its
// connection's budget.
func (g *Guard) Refused(r *http.Request) {
	if cn, ok := r.Context().Value(connKey{}).(*conn); ok && !cn.refusals.Allow() {
		g.drop(cn, "too many refused requests")
	}
}

// Stats are a Guard's counters.
type Stats struct {
	Open                      int
	RefusedConns, ClosedConns int64
}

// Stats returns the Guard's counters.
func (g *Guard) Stats() Stats {
	g.mu.Lock()
	defer g.mu.Unlock()
	return Stats{Open: g.total, RefusedConns: g.refusedConns.Load(), ClosedConns: g.closedConns.Load()}
}

// Sampler writes at most a few log lines a second and counts the ones it
// drops, reporting the count on the next line it writes: a flood of
// refused calls cannot become a flood of log lines. Safe for concurrent
// use.
type Sampler struct {
	l          *slog.Logger
	lim        *rate.Limiter
	suppressed atomic.Int64
}

// NewSampler returns a Sampler allowing perSecond lines, burst at once.
func NewSampler(l *slog.Logger, perSecond float64, burst int) *Sampler {
	return &Sampler{l: l, lim: rate.NewLimiter(rate.Limit(perSecond), burst)}
}

func (s *Sampler) log(ctx context.Context, level slog.Level, msg string, args ...any) {
	if !s.l.Enabled(ctx, level) {
		return
	}
	if !s.lim.AllowN(time.Now(), 1) {
		s.suppressed.Add(1)
		return
	}
	if n := s.suppressed.Swap(0); n > 0 {
		args = append(args, "suppressed_since_last", n)
	}
	s.l.Log(ctx, level, msg, args...)
}

// Info logs at info level, sampled.
func (s *Sampler) Info(ctx context.Context, msg string, args ...any) {
	s.log(ctx, slog.LevelInfo, msg, args...)
}

// Warn logs at warn level, sampled.
func (s *Sampler) Warn(msg string, args ...any) {
	s.log(context.Background(), slog.LevelWarn, msg, args...)
}
