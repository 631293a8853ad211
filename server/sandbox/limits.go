package sandbox

import (
	"sync"
	"time"
)

// window is one fixed rate-limit window.
type window struct {
	size  time.Duration
	limit int
	day   bool // aligned to IST midnight instead of size
}

// Published per-token limits (brokers.md §1.9, §2.9).
var (
	upstoxWindows = []window{{size: time.Second, limit: 50}, {size: time.Minute, limit: 500}, {size: 30 * time.Minute, limit: 2000}}
	fyersWindows  = []window{{size: time.Second, limit: 10}, {size: time.Minute, limit: 200}, {size: 24 * time.Hour, limit: 100000, day: true}}
)

func windowsFor(b Broker) []window {
	if b == Fyers {
		return fyersWindows
	}
	return upstoxWindows
}

// counter counts calls in the current instance of one window.
type counter struct {
	start time.Time
	n     int
}

// limiter enforces fixed-window limits per token (keyed by token hash). It
// is safe for concurrent use.
type limiter struct {
	mu sync.Mutex
	m  map[string][]counter
}

func newLimiter() *limiter { return &limiter{m: map[string][]counter{}} }

func windowStart(w window, now time.Time) time.Time {
	if w.day {
		l := now.In(ist)
		return time.Date(l.Year(), l.Month(), l.Day(), 0, 0, 0, 0, ist)
	}
	return now.Truncate(w.size)
}

// allow counts one call of key at now, or reports how long until the
// exhausted window resets.
func (l *limiter) allow(b Broker, key string, now time.Time) (bool, time.Duration) {
	ws := windowsFor(b)
	l.mu.Lock()
	defer l.mu.Unlock()
	cs := l.m[key]
	if cs == nil {
		cs = make([]counter, len(ws))
		l.m[key] = cs
	}
	var wait time.Duration
	for i, w := range ws {
		st := windowStart(w, now)
		if !cs[i].start.Equal(st) {
			cs[i] = counter{start: st}
		}
		if cs[i].n >= w.limit {
			if d := st.Add(w.size).Sub(now); d > wait {
				wait = d
			}
		}
	}
	if wait > 0 {
		return false, wait
	}
	for i := range cs {
		cs[i].n++
	}
	return true, 0
}
