// Package connguard bounds what one network peer can make the gateway
// spend before it has proved anything: how many TCP connections it holds
// (in total and per remote address, below the process's descriptor
// limit), how large a request body can be, and how fast one connection may
// send requests that are not authenticated (refused, or to the endpoints
// that need no key: health, reflection, the dashboard) or that it cancels
// before they finish (HTTP/2 rapid reset). A connection past that rate is
// closed: the HTTP/2 server in net/http has no knob for it, and closing the
// socket ends every stream on it at once. Authenticated requests that run
// to their end cost nothing here; they are accountable to a user.
//
// Wire it into an http.Server with ConnState and ConnContext, wrap the
// handler with Handler, and call MarkAuthenticated from the authentication
// layer inside it.
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
	// AnonRate and AnonBurst bound, per connection, the requests that are
	// not authenticated or that the client cancels before they finish
	// (default 200/s, burst 2000).
	AnonRate  rate.Limit
	AnonBurst int
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
	if cfg.AnonRate <= 0 {
		cfg.AnonRate, cfg.AnonBurst = 200, 2000
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

// conn is one connection's budget.
type conn struct {
	c    net.Conn
	anon *rate.Limiter
	once sync.Once
}

type connKey struct{}

// ConnContext is the http.Server hook that gives every request its
// connection's budget.
func (g *Guard) ConnContext(ctx context.Context, c net.Conn) context.Context {
	return context.WithValue(ctx, connKey{}, &conn{c: c, anon: rate.NewLimiter(g.cfg.AnonRate, g.cfg.AnonBurst)})
}

// request is what the authentication layer tells the guard of a request.
type request struct{ authenticated atomic.Bool }

type requestKey struct{}

// MarkAuthenticated records that the request of ctx carries a valid API
// key. Contexts derived from the request's share the mark.
func MarkAuthenticated(ctx context.Context) {
	if r, ok := ctx.Value(requestKey{}).(*request); ok {
		r.authenticated.Store(true)
	}
}

func (g *Guard) drop(cn *conn, why string) {
	cn.once.Do(func() {
		g.log.Warn("connection closed: "+why, "remote", host(cn.c))
		_ = cn.c.Close()
	})
}

// Handler bounds every request's body, and counts each request that was
// not authenticated or that the client cancelled before it finished
// against its connection's budget.
func (g *Guard) Handler(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ContentLength > g.cfg.MaxBodyBytes {
			http.Error(w, "request body too large", http.StatusRequestEntityTooLarge)
			return
		}
		r.Body = http.MaxBytesReader(w, r.Body, g.cfg.MaxBodyBytes)
		req := &request{}
		r = r.WithContext(context.WithValue(r.Context(), requestKey{}, req))
		next.ServeHTTP(w, r)
		if req.authenticated.Load() && r.Context().Err() == nil {
			return
		}
		if cn, ok := r.Context().Value(connKey{}).(*conn); ok && !cn.anon.Allow() {
			g.drop(cn, "too many unauthenticated or cancelled requests (a flood, or HTTP/2 rapid reset)")
		}
	})
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
