package feed

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	feedgatev1 "github.com/feedgate/feedgate/gen/go/feedgate/v1"
	"github.com/feedgate/feedgate/server/broker"
	"github.com/feedgate/feedgate/server/clock"
	"github.com/feedgate/feedgate/server/connections"
	"github.com/feedgate/feedgate/server/metrics"
	"github.com/feedgate/feedgate/server/store"
)

type fakeEnv struct {
	hub  *Hub
	ss   *fakeSessions
	d    *fakeDialer
	reg  *metrics.Registry
	fm   *metrics.Feed
	clk  clock.Clock
	opts func(*Config)
}

func newFakeEnv(t testing.TB, opts ...func(*Config)) *fakeEnv {
	t.Helper()
	e := &fakeEnv{ss: newFakeSessions(), d: newFakeDialer(), reg: metrics.NewRegistry()}
	e.fm = metrics.NewFeed(e.reg)
	cfg := Config{Conns: e.ss, Dialers: map[broker.Kind]broker.FeedDialer{broker.Upstox: e.d, broker.Fyers: newFakeDialer()},
		Metrics: e.fm, BackoffBase: time.Millisecond, BackoffCap: 5 * time.Millisecond}
	for _, o := range opts {
		o(&cfg)
	}
	h, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	e.hub = h
	t.Cleanup(func() { h.Close() })
	return e
}

func (e *fakeEnv) sub(t testing.TB, user string, mode broker.FeedMode, keys ...string) *Stream {
	t.Helper()
	st, err := e.hub.Subscribe(context.Background(), user, broker.Upstox, keys, mode)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func (e *fakeEnv) conn(t testing.TB) *fakeConn {
	t.Helper()
	select {
	case c := <-e.d.ready:
		return c
	case <-time.After(5 * time.Second):
		t.Fatal("no dial")
		return nil
	}
}

func TestSubscribeValidation(t *testing.T) {
	checkLeaks(t)
	e := newFakeEnv(t)
	for _, c := range []struct {
		b     broker.Kind
		keys  []string
		mode  broker.FeedMode
		field string
	}{
		{"kite", []string{"a"}, broker.ModeLTPC, "broker"},
		{broker.Upstox, nil, broker.ModeLTPC, "instrument_keys"},
		{broker.Upstox, []string{"a", ""}, broker.ModeLTPC, "instrument_keys"},
		{broker.Upstox, make([]string, 501), broker.ModeLTPC, "instrument_keys"},
		{broker.Upstox, []string{"a"}, broker.FeedMode(9), "mode"},
	} {
		_, err := e.hub.Subscribe(context.Background(), "u", c.b, c.keys, c.mode)
		if ie, ok := AsInputError(err); !ok || ie.Field != c.field {
			t.Errorf("Subscribe(%s, %d keys, %v) = %v, want InputError on %s", c.b, len(c.keys), c.mode, err, c.field)
		}
	}
}

func TestRefcounting(t *testing.T) {
	checkLeaks(t)
	e := newFakeEnv(t)
	a := e.sub(t, "alice", broker.ModeLTPC, "K1", "K2")
	c := e.conn(t)
	b := e.sub(t, "alice", broker.ModeFull, "K2", "K3")
	want := map[string]broker.FeedMode{"K1": broker.ModeLTPC, "K2": broker.ModeFull, "K3": broker.ModeFull}
	eventually(t, "union subscribed", func() bool { return fmt.Sprint(c.snapshot()) == fmt.Sprint(want) })

	// A full-mode tick reaches the LTPC stream trimmed, the full one whole.
	c.batches <- ticks("K2")
	ta, tb := nextTicks(t, a).Ticks.Ticks[0], nextTicks(t, b).Ticks.Ticks[0]
	if ta.GetGreeks() != nil || ta.GetVolume() != 0 || tb.GetGreeks().GetDelta() != 0.5 || tb.GetVolume() != 7 {
		t.Fatalf("mode shaping wrong: ltpc %v, full %v", ta, tb)
	}

	b.Close()
	want = map[string]broker.FeedMode{"K1": broker.ModeLTPC, "K2": broker.ModeLTPC}
	eventually(t, "K3 unsubscribed, K2 back to ltpc", func() bool { return fmt.Sprint(c.snapshot()) == fmt.Sprint(want) })
	if c.isClosed() || e.hub.Upstreams() != 1 {
		t.Fatal("upstream closed while a stream remains")
	}
	a.Close()
	eventually(t, "upstream closed with its last stream", c.isClosed)
	if e.hub.Upstreams() != 0 {
		t.Fatal("upstream still registered")
	}
	if _, err := a.Next(context.Background()); !errors.Is(err, ErrStreamClosed) {
		t.Fatalf("Next after Close = %v", err)
	}
	if g := e.fm.OpenStreams.With("upstox").Value(); g != 0 {
		t.Fatalf("open streams gauge %d", g)
	}
	// A new stream starts a new upstream.
	d := e.sub(t, "alice", broker.ModeLTPC, "K9")
	c2 := e.conn(t)
	eventually(t, "fresh upstream subscribed", func() bool { return len(c2.snapshot()) == 1 })
	d.Close()
}

func TestTenStreamsShareOneUpstream(t *testing.T) {
	checkLeaks(t)
	e := newFakeEnv(t)
	var sts []*Stream
	for i := range 10 {
		sts = append(sts, e.sub(t, "alice", broker.ModeLTPC, "K0", fmt.Sprintf("K%d", i+1)))
	}
	other := e.sub(t, "bob", broker.ModeLTPC, "K0")
	ca, cb := e.conn(t), e.conn(t)
	eventually(t, "subscriptions", func() bool { return len(ca.snapshot())+len(cb.snapshot()) == 12 })
	if e.d.dials() != 2 || e.hub.Upstreams() != 2 {
		t.Fatalf("%d dials, %d upstreams; want one per user", e.d.dials(), e.hub.Upstreams())
	}
	alice := ca
	if len(cb.snapshot()) == 11 {
		alice = cb
	}
	alice.batches <- ticks("K0", "K5")
	for i, st := range sts {
		got := nextTicks(t, st).Ticks.Ticks
		if len(got) < 1 || got[0].GetInstrumentKey() != "K0" || (i == 4) != (len(got) == 2) {
			t.Fatalf("stream %d got %v", i, got)
		}
	}
	for _, st := range sts {
		st.Close()
	}
	other.Close()
}

func TestLimits(t *testing.T) {
	checkLeaks(t)
	e := newFakeEnv(t, func(c *Config) { c.MaxStreamKeys = 5000 })
	keys := func(prefix string, n int) []string {
		out := make([]string, n)
		for i := range out {
			out[i] = fmt.Sprintf("%s%d", prefix, i)
		}
		return out
	}
	a := e.sub(t, "alice", broker.ModeFull, keys("F", 1500)...)
	// 2000 LTPC keys would fit alone, but mixing modes applies 2000/1500.
	b := e.sub(t, "alice", broker.ModeLTPC, keys("L", 2000)...)
	_, err := e.hub.Subscribe(context.Background(), "alice", broker.Upstox, []string{"F1500"}, broker.ModeFull)
	if le, ok := AsLimitError(err); !ok || le.Broker != broker.Upstox {
		t.Fatalf("over the combined full limit: %v, want LimitError", err)
	}
	// Another user has a connection of their own.
	c := e.sub(t, "bob", broker.ModeFull, keys("F", 2000)...)
	a.Close()
	b.Close()
	c.Close()
}

func TestSlowConsumerConflates(t *testing.T) {
	checkLeaks(t)
	e := newFakeEnv(t)
	keys := []string{"A", "B", "C"}
	slow := e.sub(t, "alice", broker.ModeLTPC, keys...)
	fast := e.sub(t, "alice", broker.ModeLTPC, keys...)
	c := e.conn(t)
	eventually(t, "subscribed", func() bool { return len(c.snapshot()) == 3 })
	const rounds = 1000
	got := 0
	for r := range rounds {
		b := ticks(keys...)
		for i := range b {
			b[i].LTP = float64(r)
		}
		c.batches <- b
		for got < (r+1)*3 {
			got += len(nextTicks(t, fast).Ticks.Ticks)
		}
	}
	// The slow stream holds one tick per key, the newest, and counts the rest.
	slow.mu.Lock()
	queued := len(slow.order)
	slow.mu.Unlock()
	if queued != 3 {
		t.Fatalf("slow stream queued %d ticks, want 3 (one per key)", queued)
	}
	ev := nextTicks(t, slow)
	if len(ev.Ticks.Ticks) != 3 || ev.Ticks.Conflated != (rounds-1)*3 {
		t.Fatalf("slow batch: %d ticks, conflated %d", len(ev.Ticks.Ticks), ev.Ticks.Conflated)
	}
	for _, tk := range ev.Ticks.Ticks {
		if tk.GetLtp() != rounds-1 {
			t.Fatalf("conflated tick is not the newest: %v", tk)
		}
	}
	if v := e.fm.Conflated.With("upstox").Value(); v != (rounds-1)*3 {
		t.Fatalf("conflated metric %d", v)
	}
	if in, out := e.fm.TicksIn.With("upstox").Value(), e.fm.TicksOut.With("upstox").Value(); in != rounds*3 || out != rounds*3+3 {
		t.Fatalf("ticks in %d out %d", in, out)
	}
	slow.Close()
	fast.Close()
}

func TestReconnectBackoffAndStatus(t *testing.T) {
	checkLeaks(t)
	fc := clock.NewFake(time.Unix(1_700_000_000, 0))
	var ceilings []time.Duration
	jitter := func(c time.Duration) time.Duration { ceilings = append(ceilings, c); return c / 2 }
	e := newFakeEnv(t, func(c *Config) {
		c.Clock, c.Jitter, c.BackoffBase, c.BackoffCap = fc, jitter, 250*time.Millisecond, 30*time.Second
	})
	fail := 3
	e.d.dial = func(n int) error {
		if n >= 2 && n < 2+fail {
			return &broker.Error{Class: broker.ClassUpstream, Message: "down"}
		}
		return nil
	}
	st := e.sub(t, "alice", broker.ModeLTPC, "K")
	c1 := e.conn(t)
	ev, _ := nextWithin(t, st, 5*time.Second)
	if ev.Kind != EventUpstreamStatus || ev.UpstreamState != feedgatev1.UpstreamState_UPSTREAM_STATE_LIVE {
		t.Fatalf("first event %+v, want LIVE", ev)
	}
	c1.Close() // transport loss
	ev, _ = nextWithin(t, st, 5*time.Second)
	if ev.UpstreamState != feedgatev1.UpstreamState_UPSTREAM_STATE_RECONNECTING {
		t.Fatalf("event %+v, want RECONNECTING", ev)
	}
	// Each failed dial waits jitter(min(cap, 250ms·2^n)) on the fake clock.
	for i := range fail + 1 {
		want := (250 * time.Millisecond << i) / 2
		eventually(t, "backoff timer armed", func() bool { return fc.Pending() == 1 })
		fc.Advance(want - 1)
		if e.d.dials() != 1+i {
			t.Fatalf("dialed before the backoff ended (attempt %d)", i)
		}
		fc.Advance(1)
		eventually(t, "redial", func() bool { return e.d.dials() == 2+i })
	}
	c2 := e.conn(t)
	ev, _ = nextWithin(t, st, 5*time.Second)
	if ev.UpstreamState != feedgatev1.UpstreamState_UPSTREAM_STATE_LIVE {
		t.Fatalf("event %+v, want LIVE", ev)
	}
	eventually(t, "resubscribed", func() bool { return len(c2.snapshot()) == 1 })
	if fmt.Sprint(ceilings) != "[250ms 500ms 1s 2s]" {
		t.Fatalf("backoff ceilings %v", ceilings)
	}
	if v := e.fm.Reconnects.With("upstox").Value(); v != 4 {
		t.Fatalf("reconnects metric %d", v)
	}
	st.Close()
}

func TestAuthDeadOnDialEndsOnlyThatUser(t *testing.T) {
	checkLeaks(t)
	e := newFakeEnv(t)
	alice1 := e.sub(t, "alice", broker.ModeLTPC, "K")
	ca := e.conn(t)
	bob := e.sub(t, "bob", broker.ModeLTPC, "K")
	cb := e.conn(t)
	alice2 := e.sub(t, "alice", broker.ModeLTPC, "J")
	fy, err := e.hub.Subscribe(context.Background(), "alice", broker.Fyers, []string{"NSE:X"}, broker.ModeLTPC)
	if err != nil {
		t.Fatal(err)
	}
	if ca == cb {
		t.Fatal("shared conn")
	}
	e.d.dial = func(int) error { return &broker.Error{Class: broker.ClassAuthDead, Message: "401"} }
	// Find alice's conn by its subscriptions, then drop it.
	eventually(t, "subscribed", func() bool { return len(ca.snapshot())+len(cb.snapshot()) == 3 })
	if len(ca.snapshot()) != 2 {
		ca, cb = cb, ca
	}
	ca.Close()
	for _, st := range []*Stream{alice1, alice2} {
		var ev Event
		for ev.Kind != EventAuthRequired {
			var err error
			if ev, err = nextWithin(t, st, 5*time.Second); err != nil {
				t.Fatalf("Next: %v", err)
			}
		}
		var ae *connections.AuthRequiredError
		if _, err := st.Next(context.Background()); !errors.As(err, &ae) || ae.Reason != store.ReasonTokenRevoked {
			t.Fatalf("after AuthRequired: %v", err)
		}
	}
	if e.ss.reports != 1 {
		t.Fatalf("ReportAuthDead called %d times", e.ss.reports)
	}
	cb.batches <- ticks("K")
	nextTicks(t, bob)
	if st, _ := fy.Upstream(); st == feedgatev1.UpstreamState_UPSTREAM_STATE_UNSPECIFIED {
		t.Fatal("alice's other broker was touched")
	}
	if v := e.fm.AuthDisconnects.With("upstox").Value(); v != 1 {
		t.Fatalf("auth disconnects metric %d", v)
	}
	// Opened while disconnected: AuthRequired at once, then the error.
	late := e.sub(t, "alice", broker.ModeLTPC, "K")
	if ev, err := late.Next(context.Background()); err != nil || ev.Kind != EventAuthRequired {
		t.Fatalf("late stream first Next = %+v, %v", ev, err)
	}
	if _, err := late.Next(context.Background()); err == nil {
		t.Fatal("late stream did not end")
	}
	for _, st := range []*Stream{alice1, alice2, bob, fy, late} {
		st.Close()
	}
}

func TestOnChangeDisconnectEndsStreams(t *testing.T) {
	checkLeaks(t)
	e := newFakeEnv(t)
	st := e.sub(t, "alice", broker.ModeLTPC, "K")
	c := e.conn(t)
	other := e.sub(t, "bob", broker.ModeLTPC, "K")
	cb := e.conn(t)
	e.ss.disconnect(connections.Key{UserID: "alice", Broker: broker.Upstox}, store.ReasonLoggedOut)
	var ev Event
	for ev.Kind != EventAuthRequired {
		var err error
		if ev, err = nextWithin(t, st, 5*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	if ev.AuthRequired.Reason != store.ReasonLoggedOut {
		t.Fatalf("reason %q", ev.AuthRequired.Reason)
	}
	eventually(t, "alice's upstream closed", func() bool { return c.isClosed() || cb.isClosed() })
	if e.hub.Upstreams() != 1 {
		t.Fatalf("%d upstreams, want bob's only", e.hub.Upstreams())
	}
	st.Close()
	other.Close()
}

func TestHubCloseEndsEverything(t *testing.T) {
	checkLeaks(t)
	e := newFakeEnv(t)
	a := e.sub(t, "alice", broker.ModeLTPC, "K")
	b := e.sub(t, "bob", broker.ModeFull, "K")
	e.conn(t)
	e.conn(t)
	e.hub.Close()
	for _, st := range []*Stream{a, b} {
		for {
			_, err := nextWithin(t, st, 5*time.Second)
			if errors.Is(err, ErrHubClosed) {
				break
			}
			if err != nil {
				t.Fatalf("Next = %v, want ErrHubClosed", err)
			}
		}
	}
	if _, err := e.hub.Subscribe(context.Background(), "alice", broker.Upstox, []string{"K"}, 0); !errors.Is(err, ErrHubClosed) {
		t.Fatalf("Subscribe after Close = %v", err)
	}
	a.Close()
	b.Close()
}

// BenchmarkFanOut delivers one 100-tick upstream batch to 1,000 streams
// of one user, each subscribed to all 100 instruments (100,000 deliveries
// per op). Streams are not read, so it measures the conflating steady state.
func BenchmarkFanOut(b *testing.B) {
	benchFanOut(b, false)
}

// BenchmarkFanOutDrained is the same with every stream's batch taken by
// Next after each op (the per-stream message building included).
func BenchmarkFanOutDrained(b *testing.B) {
	benchFanOut(b, true)
}

func benchFanOut(b *testing.B, drain bool) {
	e := newFakeEnv(b)
	keys := make([]string, 100)
	for i := range keys {
		keys[i] = fmt.Sprintf("NSE_FO|%d", 40000+i)
	}
	sts := make([]*Stream, 1000)
	for i := range sts {
		mode := broker.ModeFull
		if i%2 == 0 {
			mode = broker.ModeLTPC
		}
		sts[i] = e.sub(b, "alice", mode, keys...)
	}
	e.hub.mu.Lock()
	u := e.hub.ups[connections.Key{UserID: "alice", Broker: broker.Upstox}]
	e.hub.mu.Unlock()
	batch := ticks(keys...)
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		u.dispatch(batch)
		if drain {
			for _, st := range sts {
				for {
					ev, err := st.Next(ctx)
					if err != nil {
						b.Fatal(err)
					}
					if ev.Kind == EventTicks {
						break
					}
				}
			}
		}
	}
	b.StopTimer()
	for _, st := range sts {
		st.Close()
	}
}

func TestReloginCutsBackoffShort(t *testing.T) {
	checkLeaks(t)
	fc := clock.NewFake(time.Unix(1_700_000_000, 0))
	e := newFakeEnv(t, func(c *Config) {
		c.Clock, c.Jitter = fc, func(c time.Duration) time.Duration { return c }
	})
	var failing atomic.Bool
	e.d.dial = func(n int) error {
		if failing.Load() {
			return &broker.Error{Class: broker.ClassUpstream, Message: "down"}
		}
		return nil
	}
	st := e.sub(t, "alice", broker.ModeLTPC, "K")
	c1 := e.conn(t)
	nextWithin(t, st, 5*time.Second) // LIVE
	failing.Store(true)
	c1.Close()
	nextWithin(t, st, 5*time.Second) // RECONNECTING
	eventually(t, "backoff timer armed", func() bool { return fc.Pending() == 1 })
	dials := e.d.dials()
	// The user logs in again: the upstream retries now, not after its backoff.
	failing.Store(false)
	e.ss.mu.Lock()
	hooks := e.ss.hooks
	e.ss.mu.Unlock()
	for _, h := range hooks {
		h(connections.Change{Key: connections.Key{UserID: "alice", Broker: broker.Upstox}, Conn: store.Connection{State: store.StateConnected}})
	}
	eventually(t, "redial after re-login", func() bool { return e.d.dials() == dials+1 })
	e.conn(t)
	ev, _ := nextWithin(t, st, 5*time.Second)
	if ev.UpstreamState != feedgatev1.UpstreamState_UPSTREAM_STATE_LIVE {
		t.Fatalf("event %+v, want LIVE", ev)
	}
	st.Close()
}
