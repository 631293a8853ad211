// Package ratelimit keeps request rates per key (one key per user) under
// several windows at once, such as a broker's "50 a second, 500 a minute,
// 2000 in 30 minutes".
//
// Each window is counted in a small ring of time slots (a sliding window of
// slot counts), so a key costs a fixed, small amount of memory however large
// N is, and the count is conservative: a window of N per Per never lets more
// than N calls through in any span of Per. Keys idle for longer than the
// longest window are evicted.
package ratelimit

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"
)

// Window is one limit: at most N calls in any span of Per.
type Window struct {
	N   int
	Per time.Duration
}

// String formats the window as "N/Per", e.g. "50/1s".
func (w Window) String() string { return fmt.Sprintf("%d/%s", w.N, w.Per) }

// slotsPerWindow is how many time slots each window is cut into. More slots
// waste less of the allowance (the window is counted over Per plus one slot)
// at the cost of memory and time per call.
const slotsPerWindow = 20

// minSweepEvery is the fewest Reserve calls between two sweeps for idle keys.
const minSweepEvery = 256

// Option configures a Limiter.
type Option func(*Limiter)

// WithClock makes Wait read the time from now instead of time.Now. Reserve
// takes the time as an argument and does not use it.
func WithClock(now func() time.Time) Option { return func(l *Limiter) { l.now = now } }

// Limiter limits calls per key under every one of its windows. It is safe
// for concurrent use.
type Limiter struct {
	windows []window
	idleTTL time.Duration
	now     func() time.Time

	mu         sync.Mutex
	keys       map[string]*keyState
	sinceSweep int
}

type window struct {
	n    int32
	slot int64 // slot width in nanoseconds
}

type slot struct {
	idx   int64 // which slot of time this count belongs to
	count int32
}

type keyState struct {
	last  int64  // unix nanoseconds of the last granted call
	slots []slot // slotsPerWindow+1 per window, window after window
}

// New returns a Limiter enforcing every window. Each window needs N > 0 and
// Per > 0; with no windows the limiter lets everything through.
func New(windows []Window, opts ...Option) (*Limiter, error) {
	l := &Limiter{now: time.Now, keys: make(map[string]*keyState)}
	for _, w := range windows {
		if w.N <= 0 || w.N > 1<<30 || w.Per <= 0 {
			return nil, fmt.Errorf("ratelimit: invalid window %s", w)
		}
		width := max(int64(w.Per)/slotsPerWindow, 1)
		if int64(w.Per)%slotsPerWindow != 0 {
			width++ // round up, so slotsPerWindow slots always cover Per
		}
		l.windows = append(l.windows, window{n: int32(w.N), slot: width})
		l.idleTTL = max(l.idleTTL, time.Duration(width*(slotsPerWindow+1)))
	}
	for _, o := range opts {
		o(l)
	}
	return l, nil
}

// Reserve takes one call's slot for key at now and returns 0 when every
// window has room. Otherwise it takes nothing and returns how long until a
// slot may free up; under contention another caller may take it first, so
// call again after waiting.
func (l *Limiter) Reserve(key string, now time.Time) time.Duration {
	if len(l.windows) == 0 {
		return 0
	}
	t := now.UnixNano()
	l.mu.Lock()
	defer l.mu.Unlock()
	s := l.keys[key]
	if s == nil {
		s = &keyState{slots: make([]slot, len(l.windows)*(slotsPerWindow+1))}
		l.keys[key] = s
	}
	var wait int64
	for i, w := range l.windows {
		wait = max(wait, w.wait(s.ring(i), t))
	}
	if wait > 0 {
		return time.Duration(wait)
	}
	for i, w := range l.windows {
		ring := s.ring(i)
		idx := floorDiv(t, w.slot)
		sl := &ring[mod(idx, len(ring))]
		if sl.idx != idx {
			*sl = slot{idx: idx}
		}
		sl.count++
	}
	s.last = t
	l.sinceSweep++
	if l.sinceSweep >= max(minSweepEvery, len(l.keys)) {
		l.sweep(t)
	}
	return 0
}

// ring returns window i's slots.
func (s *keyState) ring(i int) []slot {
	return s.slots[i*(slotsPerWindow+1) : (i+1)*(slotsPerWindow+1)]
}

// wait returns how long after t a call fits this window, 0 if it fits now.
// The window at t counts the slots idx-slotsPerWindow..idx, which cover
// every call in (t-Per, t].
func (w window) wait(ring []slot, t int64) int64 {
	idx := floorDiv(t, w.slot)
	oldest := idx - slotsPerWindow
	var sum int32
	for _, sl := range ring {
		if sl.idx >= oldest { // later slots too, should the clock step back
			sum += sl.count
		}
	}
	if sum < w.n {
		return 0
	}
	// Find the first slot whose expiry brings the count under n: slot j
	// leaves the window when the current slot becomes j+slotsPerWindow+1.
	for j := oldest; j <= idx; j++ {
		sl := ring[mod(j, len(ring))]
		if sl.idx == j {
			sum -= sl.count
		}
		if sum < w.n {
			return (j+slotsPerWindow+1)*w.slot - t
		}
	}
	// Only reachable if the clock stepped back past recorded slots.
	return w.slot * (slotsPerWindow + 1)
}

// sweep drops keys with no call inside the longest window; l.mu is held.
func (l *Limiter) sweep(t int64) {
	l.sinceSweep = 0
	for k, s := range l.keys {
		if t-s.last > int64(l.idleTTL) {
			delete(l.keys, k)
		}
	}
}

// Len returns how many keys the limiter is tracking.
func (l *Limiter) Len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.keys)
}

// ErrDeadline is matched (with errors.Is) by the *WaitError that Wait returns.
var ErrDeadline = errors.New("ratelimit: wait would pass the deadline")

// WaitError says a slot would not free up before the context's deadline.
type WaitError struct {
	// Wait is how long until a slot may free up.
	Wait time.Duration
}

// Error implements error.
func (e *WaitError) Error() string {
	return fmt.Sprintf("ratelimit: next slot in %s, after the deadline", e.Wait)
}

// Is makes errors.Is(err, ErrDeadline) true.
func (e *WaitError) Is(target error) bool { return target == ErrDeadline }

// Wait takes a slot for key, waiting for one as long as that fits ctx's
// deadline. When it would not, it returns a *WaitError at once, having taken
// nothing; when ctx ends first it returns ctx.Err(). It sleeps on real timers
// (fake ones inside a testing/synctest bubble).
func (l *Limiter) Wait(ctx context.Context, key string) error {
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		now := l.now()
		d := l.Reserve(key, now)
		if d == 0 {
			return nil
		}
		if dl, ok := ctx.Deadline(); ok && now.Add(d).After(dl) {
			return &WaitError{Wait: d}
		}
		t := time.NewTimer(d)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
	}
}

func floorDiv(a, b int64) int64 {
	q := a / b
	if a%b != 0 && a < 0 {
		q--
	}
	return q
}

func mod(a int64, n int) int {
	m := int(a % int64(n))
	if m < 0 {
		m += n
	}
	return m
}
