package api_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"go.uber.org/goleak"

	feedgatev1 "github.com/feedgate/feedgate/gen/go/feedgate/v1"
	"github.com/feedgate/feedgate/server/broker"
	"github.com/feedgate/feedgate/server/clock"
	"github.com/feedgate/feedgate/server/gateway/gatewaytest"
	"github.com/feedgate/feedgate/server/sandbox"
)

// The fault tests are not parallel: each checks with goleak that no
// goroutine started while its gateway ran outlives it, which only means
// something while no other test of the package runs (parallel tests start
// after every serial one).

// faultEnv is a gateway with one user connected to both sandbox brokers.
type faultEnv struct {
	e      *gatewaytest.Env
	c      gatewaytest.Clients
	acct   string
	expiry string
}

func startFaultEnv(t *testing.T, acct string) *faultEnv {
	t.Helper()
	e := gatewaytest.Start(t, gatewaytest.Options{})
	// The sandbox's own per-token rate limits would add 429s of their own
	// to the exact call counts.
	e.Sandbox().SetRateLimits(false)
	c := e.Clients(e.NewUser(acct, false), gatewaytest.Protocols[0])
	e.Login(c, upstox, acct)
	e.Login(c, fyers, acct)
	return &faultEnv{e: e, c: c, acct: acct, expiry: nearestExpiry(t, e)}
}

// chain asks for an option chain within d and reports the error and the
// time it took.
func (f *faultEnv) chain(b feedgatev1.Broker, d time.Duration) (error, time.Duration) {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	start := time.Now()
	_, err := f.c.MarketData.GetOptionChain(ctx, connect.NewRequest(&feedgatev1.GetOptionChainRequest{
		Broker: b, UnderlyingKey: underlyings[b], ExpiryDate: f.expiry}))
	return err, time.Since(start)
}

// chainPath is the broker path of the option chain call.
var chainPath = map[feedgatev1.Broker]string{upstox: "/v2/option/chain", fyers: "/data/options-chain-v3"}

// calls counts the sandbox's calls of the option chain for the account.
func (f *faultEnv) calls(b feedgatev1.Broker, status int) int {
	return f.e.Calls(brokerName(b), chainPath[b], status, f.acct)
}

func (f *faultEnv) fault(b feedgatev1.Broker, ft sandbox.Fault) {
	ft.Broker = sandbox.Broker(brokerName(b))
	ft.PathPrefix = chainPath[b]
	f.e.Sandbox().ClearFaults()
	f.e.Sandbox().AddFault(ft)
}

// stopAndCheckLeaks stops the gateway and checks that no goroutine but
// those running before it started (ignore) is left.
func stopAndCheckLeaks(t *testing.T, e *gatewaytest.Env, ignore goleak.Option) {
	t.Helper()
	e.Stop()
	closeIdle()
	goleak.VerifyNone(t, ignore)
}

func rateLimited(err error) *feedgatev1.RateLimited {
	var ce *connect.Error
	if !errors.As(err, &ce) {
		return nil
	}
	for _, d := range ce.Details() {
		if v, _ := d.Value(); v != nil {
			if rl, ok := v.(*feedgatev1.RateLimited); ok {
				return rl
			}
		}
	}
	return nil
}

// TestFaultsUnary injects each broker fault of the retry policy into both
// brokers' option chain calls and checks the code the client gets, the
// number of broker calls (never more than 3), that the answer comes within
// a bound, and that nothing leaks once the gateway stops.
func TestFaultsUnary(t *testing.T) {
	ignore := goleak.IgnoreCurrent()
	f := startFaultEnv(t, "faults")
	for _, b := range []feedgatev1.Broker{upstox, fyers} {
		t.Run(brokerName(b), func(t *testing.T) {
			type want struct {
				code     connect.Code // 0: success
				calls    int          // exact broker calls; 0: at most MaxAttempts
				minTime  time.Duration
				maxTime  time.Duration
				deadline time.Duration
			}
			cases := []struct {
				name  string
				fault sandbox.Fault
				want  want
			}{
				{"two 503 then success", sandbox.Fault{Status: 503, Count: 2}, want{0, 3, 0, 3 * time.Second, 10 * time.Second}},
				{"500 streak", sandbox.Fault{Status: 500, Count: 100}, want{connect.CodeUnavailable, 3, 0, 3 * time.Second, 10 * time.Second}},
				{"502 streak", sandbox.Fault{Status: 502, Count: 100}, want{connect.CodeUnavailable, 3, 0, 3 * time.Second, 10 * time.Second}},
				{"429 whose Retry-After fits the deadline", sandbox.Fault{Status: 429, Count: 1, RetryAfterMS: 400}, want{0, 2, 400 * time.Millisecond, 3 * time.Second, 10 * time.Second}},
				{"429 whose Retry-After does not fit", sandbox.Fault{Status: 429, Count: 5, RetryAfterMS: 60_000}, want{connect.CodeResourceExhausted, 1, 0, time.Second, 2 * time.Second}},
				{"slow answer within the deadline", sandbox.Fault{LatencyMS: 300, Count: 1}, want{0, 1, 300 * time.Millisecond, 3 * time.Second, 10 * time.Second}},
				{"one connection reset mid-body", sandbox.Fault{Reset: true, Count: 1}, want{0, 2, 0, 3 * time.Second, 10 * time.Second}},
				{"connections reset mid-body", sandbox.Fault{Reset: true, Count: 100}, want{connect.CodeUnavailable, 3, 0, 3 * time.Second, 10 * time.Second}},
				// Last: the sandbox records a call cut off by the deadline
				// only once its handler notices, after the client has gone.
				{"slow answers beyond the deadline", sandbox.Fault{LatencyMS: 5_000, Count: 100}, want{connect.CodeDeadlineExceeded, 0, 0, 1500 * time.Millisecond, 500 * time.Millisecond}},
			}
			for _, tc := range cases {
				before := f.calls(b, 0)
				f.fault(b, tc.fault)
				err, took := f.chain(b, tc.want.deadline)
				f.e.Sandbox().ClearFaults()
				n := f.calls(b, 0) - before
				code := connect.CodeOf(err)
				if err == nil {
					code = 0
				}
				switch {
				case tc.want.code == connect.CodeDeadlineExceeded:
					// Past the caller's deadline the client sees either its
					// own DeadlineExceeded or the gateway's Unavailable.
					if code != connect.CodeDeadlineExceeded && code != connect.CodeUnavailable {
						t.Errorf("%s: %v, want DeadlineExceeded or Unavailable", tc.name, err)
					}
				case code != tc.want.code:
					t.Errorf("%s: %v (code %v), want code %v", tc.name, err, code, tc.want.code)
				}
				if tc.want.calls != 0 && n != tc.want.calls {
					t.Errorf("%s: %d broker calls, want %d", tc.name, n, tc.want.calls)
				}
				// A call cut off by the deadline is not counted by the
				// sandbox, so a slow streak may show 0.
				if n > broker.MaxAttempts || n < 1 && tc.fault.LatencyMS < 1000 {
					t.Errorf("%s: %d broker calls, want 1..%d", tc.name, n, broker.MaxAttempts)
				}
				if took < tc.want.minTime || took > tc.want.maxTime {
					t.Errorf("%s: answered after %v, want %v..%v", tc.name, took, tc.want.minTime, tc.want.maxTime)
				}
				if tc.want.code == connect.CodeResourceExhausted {
					if rl := rateLimited(err); rl == nil || rl.Broker != b || rl.RetryAfter.AsDuration() < 30*time.Second {
						t.Errorf("%s: RateLimited detail %v", tc.name, rl)
					}
				}
				t.Logf("%s: %v after %d call(s) in %v", tc.name, code, n, took.Round(time.Millisecond))
			}
			// After every fault the connection is still CONNECTED: no
			// transient fault is taken for a dead token.
			if st := connState(t, f.c, b); st.State != feedgatev1.ConnectionState_CONNECTION_STATE_CONNECTED {
				t.Errorf("after the faults: %v", st)
			}
		})
	}
	stopAndCheckLeaks(t, f.e, ignore)
}

// TestRevocationDuringABurst revokes alice's Upstox token while 16 of her
// calls and 8 of bob's are in flight in a loop. Every one of alice's calls
// either succeeds (before the revocation is seen) or fails with
// AuthRequired; once a goroutine has seen AuthRequired it never succeeds
// again; at most one 401 per in-flight call reaches the broker and none
// after; bob sees no error at all.
func TestRevocationDuringABurst(t *testing.T) {
	ignore := goleak.IgnoreCurrent()
	e := gatewaytest.Start(t, gatewaytest.Options{})
	e.Sandbox().SetRateLimits(false)
	alice := e.Clients(e.NewUser("burst-alice", false), gatewaytest.Protocols[1])
	bob := e.Clients(e.NewUser("burst-bob", false), gatewaytest.Protocols[0])
	e.Login(alice, upstox, "burst-alice")
	e.Login(bob, upstox, "burst-bob")
	const aliceWorkers, bobWorkers = 16, 8
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var mu sync.Mutex
	var aliceOK, aliceAuth, bobOK int
	var problems []string
	quote := func(c gatewaytest.Clients) error {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_, err := c.MarketData.GetQuotes(ctx, connect.NewRequest(&feedgatev1.GetQuotesRequest{Broker: upstox, InstrumentKeys: []string{nifty}}))
		return err
	}
	var aliceDead int // workers that have seen AuthRequired
	progress := make(chan struct{}, 1)
	for i := range aliceWorkers + bobWorkers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			isAlice := i < aliceWorkers
			dead := false
			for {
				select {
				case <-stop:
					return
				default:
				}
				var err error
				if isAlice {
					err = quote(alice)
				} else {
					err = quote(bob)
				}
				mu.Lock()
				switch {
				case !isAlice && err == nil:
					bobOK++
				case !isAlice:
					problems = append(problems, "bob: "+err.Error())
				case err == nil && dead:
					problems = append(problems, "alice succeeded after AuthRequired")
				case err == nil:
					aliceOK++
				default:
					var ce *connect.Error
					if errors.As(err, &ce) && ce.Code() == connect.CodeUnauthenticated && len(ce.Details()) == 1 {
						aliceAuth++
						if !dead {
							aliceDead++
						}
						dead = true
					} else {
						problems = append(problems, "alice: "+err.Error())
					}
				}
				mu.Unlock()
				select {
				case progress <- struct{}{}:
				default:
				}
			}
		}()
	}
	// until waits for the workers' counts to satisfy cond.
	until := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.After(20 * time.Second)
		for {
			mu.Lock()
			ok := cond()
			mu.Unlock()
			if ok {
				return
			}
			select {
			case <-progress:
			case <-deadline:
				t.Fatalf("timed out waiting for %s", what)
			}
		}
	}
	until("both users' calls to succeed", func() bool { return aliceOK >= aliceWorkers && bobOK >= bobWorkers })
	e.Revoke("upstox", "burst-alice")
	var bobAtRevoke int
	mu.Lock()
	bobAtRevoke = bobOK
	mu.Unlock()
	until("every alice worker to see AuthRequired, and bob to go on", func() bool {
		return aliceDead == aliceWorkers && bobOK >= bobAtRevoke+2*bobWorkers
	})
	close(stop)
	wg.Wait()
	for _, p := range problems {
		t.Error(p)
	}
	n401 := e.Calls("upstox", "/", 401, "burst-alice")
	t.Logf("alice: %d OK then %d AuthRequired; bob: %d OK; 401s at the broker: %d", aliceOK, aliceAuth, bobOK, n401)
	if aliceOK == 0 || aliceAuth == 0 || bobOK == 0 {
		t.Errorf("the burst did not straddle the revocation")
	}
	if n401 < 1 || n401 > aliceWorkers {
		t.Errorf("%d 401s reached the broker, want 1..%d (one per call in flight)", n401, aliceWorkers)
	}
	if err := quote(alice); connect.CodeOf(err) != connect.CodeUnauthenticated {
		t.Errorf("after the burst: %v", err)
	}
	if again := e.Calls("upstox", "/", 401, "burst-alice"); again != n401 {
		t.Errorf("a call after the disconnect reached the broker (%d more 401s)", again-n401)
	}
	if st := connState(t, alice, upstox); st.Reason != feedgatev1.DisconnectReason_DISCONNECT_REASON_TOKEN_REVOKED {
		t.Errorf("alice's connection: %v", st)
	}
	stopAndCheckLeaks(t, e, ignore)
}

// TestExpiryEndsOpenStreams opens Upstox streams for two users on a
// gateway with a fake clock, then moves the clock past the tokens' known
// expiry (03:30 IST): every stream receives AUTH_REQUIRED with reason
// TOKEN_EXPIRED and ends with Unauthenticated and the same detail, with no
// broker call; a second before the expiry they are still open.
func TestExpiryEndsOpenStreams(t *testing.T) {
	ignore := goleak.IgnoreCurrent()
	fake := clock.NewFake(time.Now())
	e := gatewaytest.Start(t, gatewaytest.Options{Clock: fake, Args: []string{"--validation-interval", "10000h"}})
	var streams []*feedStream
	var exp time.Time
	for _, name := range []string{"exp-alice", "exp-bob"} {
		c := e.Clients(e.NewUser(name, false), gatewaytest.Protocols[0])
		conn := e.Login(c, upstox, name)
		exp = conn.TokenExpiresAt.AsTime()
		for range 2 {
			streams = append(streams, openFeed(t, c, upstox, []string{nifty}, feedgatev1.FeedMode_FEED_MODE_LTPC))
		}
	}
	for _, s := range streams {
		s.next(t, 5*time.Second, isTicks)
	}
	fake.Advance(exp.Sub(fake.Now()) - time.Second)
	for _, s := range streams {
		s.next(t, 5*time.Second, isTicks) // still streaming
	}
	calls := e.Calls("upstox", "/", 0, "")
	fake.Advance(time.Second)
	for i, s := range streams {
		ar, err := s.waitEnd(t, 5*time.Second)
		if ar == nil || ar.Reason != feedgatev1.DisconnectReason_DISCONNECT_REASON_TOKEN_EXPIRED || ar.LoginUrl == "" {
			t.Errorf("stream %d: AUTH_REQUIRED %v", i, ar)
		}
		if got := authRequired(t, err); got.Reason != feedgatev1.DisconnectReason_DISCONNECT_REASON_TOKEN_EXPIRED {
			t.Errorf("stream %d ended with %v", i, got)
		}
	}
	// Only feed traffic may have happened since; no call was made to learn
	// about the expiry (no 401 at all).
	if n := e.Calls("upstox", "/", 401, ""); n != 0 {
		t.Errorf("%d 401s: the expiry was learnt from the broker", n)
	}
	if n := e.Calls("upstox", "/v2/user/profile", 0, ""); n != 0 {
		t.Errorf("%d profile probes", n)
	}
	t.Logf("%d streams ended with TOKEN_EXPIRED; broker calls before/after: %d/%d", len(streams), calls, e.Calls("upstox", "/", 0, ""))
	stopAndCheckLeaks(t, e, ignore)
}
