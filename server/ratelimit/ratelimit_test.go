package ratelimit

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"
)

var t0 = time.Date(2026, 3, 2, 9, 15, 0, 0, time.UTC)

func mustNew(t testing.TB, ws ...Window) *Limiter {
	t.Helper()
	l, err := New(ws)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func TestNewRejectsBadWindows(t *testing.T) {
	t.Parallel()
	for _, w := range []Window{{0, time.Second}, {-1, time.Second}, {1, 0}, {1, -time.Second}} {
		if _, err := New([]Window{w}); err == nil {
			t.Errorf("New(%s) succeeded", w)
		}
	}
	l := mustNew(t)
	for range 1000 {
		if d := l.Reserve("u", t0); d != 0 {
			t.Fatalf("no windows: wait %s", d)
		}
	}
}

func TestReserveBurstThenWait(t *testing.T) {
	t.Parallel()
	l := mustNew(t, Window{3, time.Second})
	for i := range 3 {
		if d := l.Reserve("alice", t0); d != 0 {
			t.Fatalf("call %d: wait %s", i, d)
		}
	}
	d := l.Reserve("alice", t0)
	if d <= 0 || d > time.Second+time.Second/slotsPerWindow {
		t.Fatalf("4th call wait = %s, want (0, 1.05s]", d)
	}
	if d := l.Reserve("bob", t0); d != 0 {
		t.Fatalf("other key must not share alice's budget: wait %s", d)
	}
	if d2 := l.Reserve("alice", t0.Add(d-time.Nanosecond)); d2 == 0 {
		t.Fatal("slot granted before the announced wait")
	}
	if d2 := l.Reserve("alice", t0.Add(d)); d2 != 0 {
		t.Fatalf("slot not granted after the announced wait: %s more", d2)
	}
}

func TestMultiWindowTakesLongestWait(t *testing.T) {
	t.Parallel()
	l := mustNew(t, Window{2, time.Second}, Window{3, time.Minute})
	now := t0
	granted := 0
	for granted < 3 {
		if d := l.Reserve("u", now); d == 0 {
			granted++
		} else {
			now = now.Add(d)
		}
	}
	d := l.Reserve("u", now)
	if d < 50*time.Second {
		t.Fatalf("after 3 calls the minute window should rule: wait %s", d)
	}
}

// TestNeverExceedsAnyWindow drives random call times and checks every
// sliding span of Per holds at most N granted calls.
func TestNeverExceedsAnyWindow(t *testing.T) {
	t.Parallel()
	ws := []Window{{5, time.Second}, {20, 10 * time.Second}}
	l := mustNew(t, ws...)
	r := rand.New(rand.NewPCG(1, 2))
	now := t0
	var granted []time.Time
	for range 20000 {
		now = now.Add(time.Duration(r.Int64N(int64(80 * time.Millisecond))))
		if l.Reserve("k", now) == 0 {
			granted = append(granted, now)
		}
	}
	if len(granted) < 100 {
		t.Fatalf("only %d calls granted", len(granted))
	}
	for _, w := range ws {
		for i := range granted {
			j := sort.Search(len(granted), func(j int) bool { return granted[j].After(granted[i].Add(-w.Per)) })
			if n := i - j + 1; n > w.N {
				t.Fatalf("window %s: %d calls in (%s, %s]", w, n, granted[i].Add(-w.Per), granted[i])
			}
		}
	}
}

func TestIdleKeysEvicted(t *testing.T) {
	t.Parallel()
	l := mustNew(t, Window{10, time.Second}, Window{100, time.Minute})
	for i := range 1000 {
		l.Reserve(fmt.Sprint("user", i), t0)
	}
	if l.Len() != 1000 {
		t.Fatalf("Len = %d", l.Len())
	}
	later := t0.Add(2 * time.Minute)
	for i := range 2500 {
		l.Reserve("active", later.Add(time.Duration(i)*time.Millisecond*100))
	}
	if n := l.Len(); n > 1 {
		t.Fatalf("idle keys kept: Len = %d", n)
	}
}

func TestConcurrentReserveGrantsExactlyN(t *testing.T) {
	t.Parallel()
	const n = 100
	l := mustNew(t, Window{n, time.Minute})
	var ok atomic.Int64
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 200 {
				if l.Reserve("shared", t0) == 0 {
					ok.Add(1)
				}
				l.Reserve(fmt.Sprint(rand.IntN(50)), t0)
			}
		})
	}
	wg.Wait()
	if ok.Load() != n {
		t.Fatalf("granted %d, want %d", ok.Load(), n)
	}
}

func TestWait(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		l := mustNew(t, Window{1, time.Second})
		ctx := context.Background()
		if err := l.Wait(ctx, "u"); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		if err := l.Wait(ctx, "u"); err != nil {
			t.Fatal(err)
		}
		if el := time.Since(start); el <= 0 || el > 2*time.Second {
			t.Fatalf("waited %s", el)
		}

		short, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
		defer cancel()
		err := l.Wait(short, "u")
		var we *WaitError
		if !errors.As(err, &we) || !errors.Is(err, ErrDeadline) || we.Wait <= 100*time.Millisecond {
			t.Fatalf("Wait past deadline = %v", err)
		}
		if time.Since(start) > 2*time.Second {
			t.Fatal("refusal should not sleep")
		}

		canceled, cancel2 := context.WithCancel(ctx)
		cancel2()
		if err := l.Wait(canceled, "u"); !errors.Is(err, context.Canceled) {
			t.Fatalf("canceled Wait = %v", err)
		}
	})
}

func BenchmarkReserve(b *testing.B) {
	l := mustNew(b, Window{50, time.Second}, Window{500, time.Minute}, Window{2000, 30 * time.Minute})
	keys := make([]string, 1000)
	for i := range keys {
		keys[i] = fmt.Sprint("user", i)
	}
	var ctr atomic.Int64
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			i := ctr.Add(1)
			l.Reserve(keys[i%int64(len(keys))], t0.Add(time.Duration(i)*time.Microsecond))
		}
	})
}
