package api_test

import (
	"context"
	"io"
	"net/http"
	"runtime"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	feedgatev1 "github.com/feedgate/feedgate/gen/go/feedgate/v1"
	"github.com/feedgate/feedgate/server/broker"
	"github.com/feedgate/feedgate/server/gateway/gatewaytest"
	"github.com/feedgate/feedgate/server/sandbox"
)

// feedStream is an open StreamMarketFeed with its messages pumped into a
// channel, so a test can wait with a timeout.
type feedStream struct {
	msgs   chan *feedgatev1.StreamMarketFeedResponse
	done   chan error
	cancel context.CancelFunc
}

func openFeed(t *testing.T, c gatewaytest.Clients, b feedgatev1.Broker, keys []string, mode feedgatev1.FeedMode) *feedStream {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	s, err := c.MarketData.StreamMarketFeed(ctx, connect.NewRequest(&feedgatev1.StreamMarketFeedRequest{Broker: b, InstrumentKeys: keys, Mode: mode}))
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	f := &feedStream{msgs: make(chan *feedgatev1.StreamMarketFeedResponse, 1024), done: make(chan error, 1), cancel: cancel}
	go func() {
		defer s.Close()
		for s.Receive() {
			select {
			case f.msgs <- s.Msg():
			default: // the test is not reading: drop, like a slow client
			}
		}
		f.done <- s.Err()
	}()
	t.Cleanup(cancel)
	return f
}

// next returns the next message for which keep is true, or fails.
func (f *feedStream) next(t *testing.T, within time.Duration, keep func(*feedgatev1.StreamMarketFeedResponse) bool) *feedgatev1.StreamMarketFeedResponse {
	t.Helper()
	deadline := time.After(within)
	for {
		select {
		case m := <-f.msgs:
			if keep(m) {
				return m
			}
		case err := <-f.done:
			t.Fatalf("stream ended: %v", err)
		case <-deadline:
			t.Fatalf("nothing within %v", within)
		}
	}
}

func isTicks(m *feedgatev1.StreamMarketFeedResponse) bool { return len(m.GetTicks().GetTicks()) > 0 }

func (f *feedStream) waitEnd(t *testing.T, within time.Duration) (*feedgatev1.AuthRequired, error) {
	t.Helper()
	var ar *feedgatev1.AuthRequired
	deadline := time.After(within)
	for {
		select {
		case m := <-f.msgs:
			if a := m.GetAuthRequired(); a != nil {
				ar = a
			}
		case err := <-f.done:
			for len(f.msgs) > 0 {
				if a := (<-f.msgs).GetAuthRequired(); a != nil {
					ar = a
				}
			}
			return ar, err
		case <-deadline:
			t.Fatalf("stream did not end within %v", within)
		}
	}
}

func optionKeys(e *gatewaytest.Env, b broker.Kind, underlying string, n int) []string {
	return e.Sandbox().OptionKeys(sandbox.Broker(b), underlying, "", n)
}

func TestStreamRevocationEndsOnlyThatUsersStreams(t *testing.T) {
	t.Parallel()
	e := gatewaytest.Start(t, gatewaytest.Options{})
	keys := append(optionKeys(e, broker.Upstox, "NSE_INDEX|Nifty 50", 4), optionKeys(e, broker.Upstox, "NSE_INDEX|Nifty Bank", 4)...)
	fyKeys := optionKeys(e, broker.Fyers, "NSE:NIFTY50-INDEX", 2)
	for _, p := range gatewaytest.Protocols {
		t.Run(p.Name, func(t *testing.T) {
			alice := e.Clients(e.NewUser("sa-"+p.Name, false), p)
			bob := e.Clients(e.NewUser("sb-"+p.Name, false), p)
			e.Login(alice, upstox, "sa-"+p.Name)
			e.Login(alice, fyers, "sa-"+p.Name)
			e.Login(bob, upstox, "sb-"+p.Name)
			as := openFeed(t, alice, upstox, keys, feedgatev1.FeedMode_FEED_MODE_OPTION_GREEKS)
			as2 := openFeed(t, alice, upstox, keys[:2], feedgatev1.FeedMode_FEED_MODE_LTPC)
			af := openFeed(t, alice, fyers, fyKeys, feedgatev1.FeedMode_FEED_MODE_LTPC)
			bs := openFeed(t, bob, upstox, keys, feedgatev1.FeedMode_FEED_MODE_FULL)
			m := as.next(t, 5*time.Second, isTicks)
			if tk := m.GetTicks().Ticks[0]; tk.Ltp <= 0 || tk.BrokerTimeUnixNanos == 0 || tk.Greeks == nil {
				t.Errorf("option-greeks tick: %v", tk)
			}
			as2.next(t, 5*time.Second, isTicks)
			bs.next(t, 5*time.Second, isTicks)

			revoked := time.Now()
			e.Revoke("upstox", "sa-"+p.Name)
			for _, s := range []*feedStream{as, as2} {
				ar, err := s.waitEnd(t, 3*time.Second)
				if ar == nil || ar.Broker != upstox || ar.Reason != feedgatev1.DisconnectReason_DISCONNECT_REASON_TOKEN_REVOKED {
					t.Errorf("auth_required message = %v", ar)
				}
				if d := authRequired(t, err); d.Reason != ar.GetReason() || d.Broker != upstox {
					t.Errorf("end detail %v differs from the message %v", d, ar)
				}
			}
			if d := time.Since(revoked); d > time.Second {
				t.Errorf("AUTH_REQUIRED took %v to reach alice's streams", d)
			}
			// Bob's stream and alice's Fyers stream go on.
			for i := 0; i < 3; i++ {
				bs.next(t, 3*time.Second, isTicks)
			}
			af.next(t, 5*time.Second, isTicks)
			// A stream opened now gets the same at once.
			late := openFeed(t, alice, upstox, keys[:1], feedgatev1.FeedMode_FEED_MODE_LTPC)
			ar, err := late.waitEnd(t, 2*time.Second)
			if ar == nil || ar.Reason != feedgatev1.DisconnectReason_DISCONNECT_REASON_TOKEN_REVOKED {
				t.Errorf("late stream's auth_required = %v", ar)
			}
			authRequired(t, err)
		})
	}
}

func TestUnaryDeathEndsStreamsToo(t *testing.T) {
	t.Parallel()
	e := gatewaytest.Start(t, gatewaytest.Options{})
	p := gatewaytest.Protocols[0]
	c := e.Clients(e.NewUser("unary-death", false), p)
	e.Login(c, upstox, "unary-death")
	s := openFeed(t, c, upstox, optionKeys(e, broker.Upstox, "NSE_INDEX|Nifty 50", 2), feedgatev1.FeedMode_FEED_MODE_LTPC)
	s.next(t, 5*time.Second, isTicks)
	// The option-chain call is the one that finds the token dead.
	e.Sandbox().AddFault(sandbox.Fault{Broker: sandbox.Upstox, PathPrefix: "/v2/option/chain", Status: 401, Count: 1})
	_, err := c.MarketData.GetOptionChain(context.Background(), connect.NewRequest(&feedgatev1.GetOptionChainRequest{Broker: upstox, UnderlyingKey: nifty, ExpiryDate: nearestExpiry(t, e)}))
	authRequired(t, err)
	ar, err := s.waitEnd(t, 2*time.Second)
	if ar == nil {
		t.Error("no auth_required message on the open stream")
	}
	authRequired(t, err)
}

func metricValue(t *testing.T, e *gatewaytest.Env, series string) string {
	t.Helper()
	res, err := http.Get(e.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, series+" ") {
			return strings.TrimPrefix(line, series+" ")
		}
	}
	return ""
}

func TestTenStreamsShareOneUpstreamAndCancelClosesIt(t *testing.T) {
	t.Parallel()
	e := gatewaytest.Start(t, gatewaytest.Options{Args: []string{"--heartbeat-interval", "300ms"}})
	p := gatewaytest.Protocols[1]
	c := e.Clients(e.NewUser("ten", false), p)
	e.Login(c, upstox, "ten")
	keys := optionKeys(e, broker.Upstox, "NSE_INDEX|Nifty Bank", 10)
	baseline := runtime.NumGoroutine()
	var streams []*feedStream
	for i := 0; i < 10; i++ {
		streams = append(streams, openFeed(t, c, upstox, keys[i:i+1], feedgatev1.FeedMode_FEED_MODE_LTPC))
	}
	for _, s := range streams {
		s.next(t, 5*time.Second, isTicks)
	}
	hb := streams[0].next(t, 3*time.Second, func(m *feedgatev1.StreamMarketFeedResponse) bool { return m.GetHeartbeat() != nil }).GetHeartbeat()
	if hb.UpstreamState != feedgatev1.UpstreamState_UPSTREAM_STATE_LIVE || hb.LastTickAt == nil || hb.ServerTime == nil {
		t.Errorf("heartbeat = %v", hb)
	}
	if v := metricValue(t, e, `feedgate_feed_upstreams{broker="upstox",state="live"}`); v != "1" {
		t.Errorf("live upstreams metric = %q, want 1", v)
	}
	if v := metricValue(t, e, `feedgate_feed_streams_open{broker="upstox"}`); v != "10" {
		t.Errorf("open streams metric = %q, want 10", v)
	}
	feedStat := func() sandbox.FeedStat {
		for _, f := range e.Sandbox().Stats().FeedConnections {
			if f.Account == "ten" {
				return f
			}
		}
		return sandbox.FeedStat{}
	}
	if f := feedStat(); f.Open != 1 || f.Total != 1 {
		t.Errorf("sandbox feed sockets for the user: %+v, want one", f)
	}
	for _, s := range streams {
		s.cancel()
	}
	deadline := time.Now().Add(5 * time.Second)
	for feedStat().Open != 0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if f := feedStat(); f.Open != 0 {
		t.Errorf("the upstream stayed open after every stream was cancelled: %+v", f)
	}
	// No goroutine outlives the streams (the HTTP connection pool may keep
	// a few: allow them, not one per stream).
	for time.Now().Before(deadline) && runtime.NumGoroutine() > baseline+4 {
		time.Sleep(20 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > baseline+4 {
		t.Errorf("%d goroutines after the streams ended, %d before", n, baseline)
	}
}

func TestSlowClientDoesNotSlowOthers(t *testing.T) {
	t.Parallel()
	e := gatewaytest.Start(t, gatewaytest.Options{})
	p := gatewaytest.Protocols[0]
	c := e.Clients(e.NewUser("slow", false), p)
	e.Login(c, upstox, "slow")
	keys := optionKeys(e, broker.Upstox, "NSE_INDEX|Nifty 50", 20)
	// The slow client opens its stream and never reads it.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	slow, err := c.MarketData.StreamMarketFeed(ctx, connect.NewRequest(&feedgatev1.StreamMarketFeedRequest{Broker: upstox, InstrumentKeys: keys, Mode: feedgatev1.FeedMode_FEED_MODE_FULL}))
	if err != nil {
		t.Fatal(err)
	}
	defer slow.Close()
	fast := openFeed(t, c, upstox, keys, feedgatev1.FeedMode_FEED_MODE_FULL)
	start := time.Now()
	n := 0
	for time.Since(start) < 2*time.Second {
		n += len(fast.next(t, time.Second, isTicks).GetTicks().Ticks)
	}
	// 20 instruments every 50 ms for 2 s is about 800 ticks.
	if n < 200 {
		t.Errorf("the fast stream got %d ticks in 2 s beside a stalled one", n)
	}
}

func TestStreamInputErrors(t *testing.T) {
	t.Parallel()
	e := gatewaytest.Start(t, gatewaytest.Options{})
	tooMany := make([]string, 501)
	for i := range tooMany {
		tooMany[i] = "NSE_FO|1000" + string(rune('0'+i%10))
	}
	for _, p := range gatewaytest.Protocols {
		c := e.Clients(e.NewUser("sin-"+p.Name, false), p)
		cases := []struct {
			req   *feedgatev1.StreamMarketFeedRequest
			field string
		}{
			{&feedgatev1.StreamMarketFeedRequest{Broker: upstox}, "instrument_keys"},
			{&feedgatev1.StreamMarketFeedRequest{Broker: upstox, InstrumentKeys: []string{"bad"}}, "instrument_keys[0]"},
			{&feedgatev1.StreamMarketFeedRequest{Broker: upstox, InstrumentKeys: tooMany}, "instrument_keys"},
			{&feedgatev1.StreamMarketFeedRequest{InstrumentKeys: []string{nifty}}, "broker"},
			{&feedgatev1.StreamMarketFeedRequest{Broker: upstox, InstrumentKeys: []string{nifty}, Mode: 9}, "mode"},
		}
		for _, tc := range cases {
			s, err := c.MarketData.StreamMarketFeed(context.Background(), connect.NewRequest(tc.req))
			if err == nil {
				for s.Receive() {
				}
				err = s.Err()
				s.Close()
			}
			if connect.CodeOf(err) != connect.CodeInvalidArgument || !strings.Contains(err.Error(), tc.field) {
				t.Errorf("%s: %v, want InvalidArgument naming %s", p.Name, err, tc.field)
			}
		}
	}
}

// TestStreamOverJSON: clients of the JSON codec (buf curl, some browsers'
// Connect clients) get complete ticks too; binary clients get the hub's
// pre-encoded bytes, which must decode to the same fields.
func TestStreamOverJSONAndBinary(t *testing.T) {
	t.Parallel()
	e := gatewaytest.Start(t, gatewaytest.Options{})
	key := e.NewUser("json", false)
	e.Login(e.Clients(key, gatewaytest.Protocols[0]), upstox, "json")
	keys := optionKeys(e, broker.Upstox, "NSE_INDEX|Nifty 50", 2)
	for _, p := range []gatewaytest.Protocol{
		{Name: "connect-json", Opts: []connect.ClientOption{connect.WithProtoJSON()}},
		{Name: "connect-binary"},
		{Name: "grpc", Opts: []connect.ClientOption{connect.WithGRPC()}},
		{Name: "grpcweb", Opts: []connect.ClientOption{connect.WithGRPCWeb()}},
	} {
		s := openFeed(t, e.Clients(key, p), upstox, keys, feedgatev1.FeedMode_FEED_MODE_OPTION_GREEKS)
		tk := s.next(t, 5*time.Second, isTicks).GetTicks().Ticks[0]
		if tk.InstrumentKey == "" || tk.Ltp <= 0 || tk.BrokerTimeUnixNanos == 0 || tk.Greeks.GetDelta() == 0 || tk.Iv <= 0 {
			t.Errorf("%s: tick %v", p.Name, tk)
		}
		s.cancel()
	}
}
