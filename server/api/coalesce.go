package api

import (
	"context"
	"sync"
	"time"
)

// flights coalesces identical concurrent calls into one. Unlike
// singleflight, the shared call runs on a context of its own: it lives
// until the latest deadline of the callers waiting for it (capped at
// maxFlight; a caller without a deadline counts as maxFlight from when it
// joined) and is cancelled when every caller has left. Each caller still
// stops at its own deadline or cancellation. Safe for concurrent use.
type flights struct {
	mu sync.Mutex
	m  map[string]*flight
}

type flight struct {
	ctx    context.Context
	cancel context.CancelFunc
	done   chan struct{}
	val    any
	err    error
	// Guarded by flights.mu.
	waiters  int
	deadline time.Time
	timer    *time.Timer
}

// do returns the result of fn for key, running fn once for every caller
// that arrives while it runs. fn gets the shared context; its values are
// the first caller's.
func (g *flights) do(ctx context.Context, key string, maxFlight time.Duration, fn func(context.Context) (any, error)) (any, error) {
	now := time.Now()
	dl := now.Add(maxFlight)
	if d, ok := ctx.Deadline(); ok && d.Before(dl) {
		dl = d
	}
	g.mu.Lock()
	if g.m == nil {
		g.m = make(map[string]*flight)
	}
	f := g.m[key]
	if f != nil && f.ctx.Err() != nil {
		f = nil // expired or abandoned while finishing: start afresh
	}
	if f == nil {
		fctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
		f = &flight{ctx: fctx, cancel: cancel, done: make(chan struct{}), deadline: dl}
		f.timer = time.AfterFunc(dl.Sub(now), cancel)
		g.m[key] = f
		go g.run(key, f, fn)
	} else if dl.After(f.deadline) {
		f.deadline = dl
		f.timer.Reset(dl.Sub(now))
	}
	f.waiters++
	g.mu.Unlock()

	select {
	case <-f.done:
		g.leave(key, f)
		return f.val, f.err
	case <-ctx.Done():
		g.leave(key, f)
		return nil, ctx.Err()
	}
}

func (g *flights) run(key string, f *flight, fn func(context.Context) (any, error)) {
	val, err := fn(f.ctx)
	g.mu.Lock()
	if g.m[key] == f {
		delete(g.m, key)
	}
	f.val, f.err = val, err
	f.timer.Stop()
	g.mu.Unlock()
	close(f.done)
	f.cancel()
}

// leave drops one waiter; the last one out of an unfinished flight
// cancels it (nobody wants its result).
func (g *flights) leave(key string, f *flight) {
	g.mu.Lock()
	defer g.mu.Unlock()
	f.waiters--
	if f.waiters > 0 {
		return
	}
	select {
	case <-f.done:
		return
	default:
	}
	if g.m[key] == f {
		delete(g.m, key)
	}
	f.timer.Stop()
	f.cancel()
}
