package api_test

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"
	"go.uber.org/goleak"

	feedgatev1 "github.com/feedgate/feedgate/gen/go/feedgate/v1"
	"github.com/feedgate/feedgate/server/gateway/gatewaytest"
	"github.com/feedgate/feedgate/server/hardening"
)

// watched is one open StreamMarketFeed whose messages a goroutine counts.
type watched struct {
	ticks   atomic.Int64
	auth    atomic.Pointer[feedgatev1.AuthRequired]
	err     atomic.Pointer[error]
	done    chan struct{}
	cancel  context.CancelFunc
	started time.Time
}

func watch(c gatewaytest.Clients, keys []string) (*watched, error) {
	ctx, cancel := context.WithCancel(context.Background())
	s, err := c.MarketData.StreamMarketFeed(ctx, connect.NewRequest(&feedgatev1.StreamMarketFeedRequest{Broker: upstox, InstrumentKeys: keys}))
	if err != nil {
		cancel()
		return nil, err
	}
	w := &watched{done: make(chan struct{}), cancel: cancel, started: time.Now()}
	go func() {
		defer close(w.done)
		defer s.Close()
		for s.Receive() {
			if len(s.Msg().GetTicks().GetTicks()) > 0 {
				w.ticks.Add(1)
			}
			if ar := s.Msg().GetAuthRequired(); ar != nil {
				w.auth.Store(ar)
			}
		}
		err := s.Err()
		w.err.Store(&err)
	}()
	return w, nil
}

func (w *watched) ended() bool {
	select {
	case <-w.done:
		return true
	default:
		return false
	}
}

// waitFor polls cond every 20 ms until it holds or within passes.
func waitFor(within time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
	return true
}

// parallel runs f(i) for i in [0, n) on at most width goroutines.
func parallel(n, width int, f func(i int)) {
	var wg sync.WaitGroup
	sem := make(chan struct{}, width)
	for i := range n {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			f(i)
		}()
	}
	wg.Wait()
}

// TestLoadManyStreamsAndARevocationStorm connects 200 users (40 with
// -short, 500 with FEEDGATE_SOAK=1) to the sandbox's Upstox, opens two
// streams each, waits until every stream has ticks, then revokes half of
// the users at the broker at once. Every revoked user's streams get
// AUTH_REQUIRED and end with Unauthenticated; every other stream stays
// open, sees no AUTH_REQUIRED and keeps ticking. When everything is closed
// and the gateway stops, goroutines and heap return near their baseline.
func TestLoadManyStreamsAndARevocationStorm(t *testing.T) {
	users := 200
	switch {
	case hardening.Soak():
		users = 500
	case testing.Short():
		users = 40
	}
	revoked := users / 2
	ignore := goleak.IgnoreCurrent()
	baseG, baseHeap := runtime.NumGoroutine(), hardening.HeapAlloc()
	e := gatewaytest.Start(t, gatewaytest.Options{})
	e.Sandbox().SetRateLimits(false)
	clients := make([]gatewaytest.Clients, users)
	start := time.Now()
	parallel(users, 16, func(i int) {
		name := fmt.Sprintf("load-%03d", i)
		clients[i] = e.Clients(e.NewUser(name, false), gatewaytest.Protocols[i%2])
		e.Login(clients[i], upstox, name)
	})
	loginTime := time.Since(start)
	streams := make([][2]*watched, users)
	var openErrs atomic.Int64
	parallel(users, 32, func(i int) {
		for j, keys := range [][]string{{nifty}, {nifty, "NSE_INDEX|Nifty Bank"}} {
			w, err := watch(clients[i], keys)
			if err != nil {
				openErrs.Add(1)
				return
			}
			streams[i][j] = w
		}
	})
	if openErrs.Load() > 0 {
		t.Fatalf("%d streams failed to open", openErrs.Load())
	}
	all := func(from, to int, cond func(*watched) bool) bool {
		for i := from; i < to; i++ {
			for _, w := range streams[i] {
				if !cond(w) {
					return false
				}
			}
		}
		return true
	}
	if !waitFor(60*time.Second, func() bool { return all(0, users, func(w *watched) bool { return w.ticks.Load() > 0 }) }) {
		t.Fatal("not every stream got a tick within 60 s")
	}
	liveTime := time.Since(start)
	peakG := runtime.NumGoroutine()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	peakHeap := ms.HeapAlloc

	// The storm: half of the users revoked at the broker at once.
	before := make([]int64, users)
	for i := revoked; i < users; i++ {
		before[i] = streams[i][0].ticks.Load() + streams[i][1].ticks.Load()
	}
	storm := time.Now()
	parallel(revoked, 32, func(i int) { e.Revoke("upstox", fmt.Sprintf("load-%03d", i)) })
	if !waitFor(30*time.Second, func() bool { return all(0, revoked, (*watched).ended) }) {
		t.Fatal("not every revoked user's stream ended within 30 s")
	}
	stormTime := time.Since(storm)
	for i := range revoked {
		for j, w := range streams[i] {
			ar := w.auth.Load()
			errp := w.err.Load()
			var ce *connect.Error
			if ar == nil || ar.Reason != feedgatev1.DisconnectReason_DISCONNECT_REASON_TOKEN_REVOKED || errp == nil ||
				!errors.As(*errp, &ce) || ce.Code() != connect.CodeUnauthenticated {
				t.Errorf("revoked user %d stream %d: AUTH_REQUIRED %v, end %v", i, j, ar, errp)
			}
		}
	}
	// The others: still open, no AUTH_REQUIRED, ticking after the storm.
	if !waitFor(30*time.Second, func() bool {
		for i := revoked; i < users; i++ {
			if streams[i][0].ticks.Load()+streams[i][1].ticks.Load() <= before[i]+2 {
				return false
			}
		}
		return true
	}) {
		t.Error("some unrevoked streams stopped ticking after the storm")
	}
	for i := revoked; i < users; i++ {
		for j, w := range streams[i] {
			if w.ended() || w.auth.Load() != nil {
				t.Errorf("unrevoked user %d stream %d ended (%v) or got AUTH_REQUIRED", i, j, w.err.Load())
			}
		}
	}
	for i := range users {
		for _, w := range streams[i] {
			w.cancel()
			<-w.done
		}
	}
	e.Stop()
	closeIdle()
	goleak.VerifyNone(t, ignore)
	afterG := runtime.NumGoroutine()
	afterHeap := hardening.HeapAlloc()
	t.Logf("%d users x 2 streams: logged in after %v, all ticking after %v; peak %d goroutines, %.1f MiB heap",
		users, loginTime.Round(time.Millisecond), liveTime.Round(time.Millisecond), peakG, hardening.MiB(peakHeap))
	t.Logf("revocation storm of %d users: all %d of their streams ended with AUTH_REQUIRED within %v; %d other streams kept ticking",
		revoked, 2*revoked, stormTime.Round(time.Millisecond), 2*(users-revoked))
	t.Logf("goroutines %d -> %d -> %d; heap %.1f -> %.1f -> %.1f MiB", baseG, peakG, afterG,
		hardening.MiB(baseHeap), hardening.MiB(peakHeap), hardening.MiB(afterHeap))
	if afterHeap > baseHeap+32<<20 {
		t.Errorf("heap %.1f MiB after the load, %.1f MiB before", hardening.MiB(afterHeap), hardening.MiB(baseHeap))
	}
}

// TestSoak churns a gateway for 25 s (run with -soak, or FEEDGATE_SOAK=1
// for 3 minutes; not part of the default go test ./...): 20 users open and
// close streams, ask for quotes and option chains (each about 5 times a
// second, within Upstox's per-user rates), and every 2 s one of them is
// revoked at the broker and logs in again at its next AuthRequired. No
// call may fail other than with AuthRequired for a revoked user;
// afterwards no goroutine is left (goleak) and the heap returns near its
// baseline, so nothing accumulates per request, stream or login.
func TestSoak(t *testing.T) {
	if !*soak && !hardening.Soak() {
		t.Skip("the soak runs with -soak (25 s) or FEEDGATE_SOAK=1 (3 min)")
	}
	d := 25 * time.Second
	if hardening.Soak() {
		d = 3 * time.Minute
	}
	const users = 20
	ignore := goleak.IgnoreCurrent()
	baseG, baseHeap := runtime.NumGoroutine(), hardening.HeapAlloc()
	e := gatewaytest.Start(t, gatewaytest.Options{})
	e.Sandbox().SetRateLimits(false)
	expiry := nearestExpiry(t, e)
	clients := make([]gatewaytest.Clients, users)
	var relogin [users]sync.Mutex
	for i := range users {
		name := fmt.Sprintf("soak-%02d", i)
		clients[i] = e.Clients(e.NewUser(name, false), gatewaytest.Protocols[i%2])
		e.Login(clients[i], upstox, name)
	}
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	var streamsOpened, unary, authReq, revocations atomic.Int64
	var mu sync.Mutex
	var failures []string
	fail := func(s string) {
		mu.Lock()
		if len(failures) < 20 {
			failures = append(failures, s)
		}
		mu.Unlock()
	}
	var peakG atomic.Int64
	var wg sync.WaitGroup
	for i := range users {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := clients[i]
			for n := 0; ctx.Err() == nil; n++ {
				relogin[i].Lock()
				var err error
				switch n % 3 {
				case 0:
					var w *watched
					if w, err = watch(c, []string{nifty}); err == nil {
						streamsOpened.Add(1)
						waitFor(300*time.Millisecond, func() bool { return w.ticks.Load() > 0 || w.ended() })
						w.cancel()
						<-w.done
						if p := w.err.Load(); p != nil && *p != nil && connect.CodeOf(*p) != connect.CodeCanceled {
							err = *p
						}
					}
				case 1:
					// Each call gets its own deadline: the soak's own would let a
					// call that starts just before the end fail for want of time.
					cctx, ccancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
					_, err = c.MarketData.GetQuotes(cctx, connect.NewRequest(&feedgatev1.GetQuotesRequest{Broker: upstox, InstrumentKeys: []string{nifty, "NSE_INDEX|Nifty Bank"}}))
					ccancel()
					unary.Add(1)
				case 2:
					cctx, ccancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
					_, err = c.MarketData.GetOptionChain(cctx, connect.NewRequest(&feedgatev1.GetOptionChainRequest{Broker: upstox, UnderlyingKey: nifty, ExpiryDate: expiry}))
					ccancel()
					unary.Add(1)
				}
				relogin[i].Unlock()
				switch {
				case err == nil, ctx.Err() != nil:
				case connect.CodeOf(err) == connect.CodeUnauthenticated:
					authReq.Add(1)
					relogin[i].Lock()
					e.Login(c, upstox, fmt.Sprintf("soak-%02d", i))
					relogin[i].Unlock()
				default:
					fail(fmt.Sprintf("user %d, %s: %v", i, [...]string{"stream", "quotes", "option chain"}[n%3], err))
				}
				if g := int64(runtime.NumGoroutine()); g > peakG.Load() {
					peakG.Store(g)
				}
				// About 5 calls a second per user: inside Upstox's
				// published per-user rates (500/min, 2000/30 min), which
				// the gateway enforces with ResourceExhausted.
				select {
				case <-ctx.Done():
				case <-time.After(200 * time.Millisecond):
				}
			}
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(2 * time.Second)
		defer tick.Stop()
		for n := 0; ; n++ {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
				e.Revoke("upstox", fmt.Sprintf("soak-%02d", n%users))
				revocations.Add(1)
			}
		}
	}()
	var midHeap uint64
	time.AfterFunc(d/2, func() {
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		midHeap = ms.HeapAlloc
	})
	wg.Wait()
	for _, f := range failures {
		t.Error(f)
	}
	e.Stop()
	closeIdle()
	goleak.VerifyNone(t, ignore)
	afterG := runtime.NumGoroutine()
	afterHeap := hardening.HeapAlloc()
	t.Logf("soak %v: %d streams opened and closed, %d unary calls, %d revocations, %d AuthRequired answered by a new login",
		d, streamsOpened.Load(), unary.Load(), revocations.Load(), authReq.Load())
	t.Logf("goroutines %d -> peak %d -> %d; heap %.1f -> %.1f (mid-run) -> %.1f MiB",
		baseG, peakG.Load(), afterG, hardening.MiB(baseHeap), hardening.MiB(midHeap), hardening.MiB(afterHeap))
	if afterHeap > baseHeap+16<<20 {
		t.Errorf("heap %.1f MiB after the soak, %.1f MiB before", hardening.MiB(afterHeap), hardening.MiB(baseHeap))
	}
	if streamsOpened.Load() == 0 || unary.Load() == 0 || authReq.Load() == 0 {
		t.Error("the soak did not exercise streams, unary calls and revocations")
	}
}
