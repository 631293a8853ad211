package client_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/feedgate/feedgate/client"
	feedgatev1 "github.com/feedgate/feedgate/gen/go/feedgate/v1"
	"github.com/feedgate/feedgate/gen/go/feedgate/v1/feedgatev1connect"
	"github.com/feedgate/feedgate/server/gateway/gatewaytest"
	"github.com/feedgate/feedgate/server/sandbox"
)

const (
	upstox = feedgatev1.Broker_BROKER_UPSTOX
	nifty  = "NSE_INDEX|Nifty 50"
)

// protocols are the wire protocols every end-to-end case runs over.
var protocols = []struct {
	name string
	opts []client.Option
}{
	{"connect", nil},
	{"grpc", []client.Option{client.WithGRPC()}},
}

// clients adapts a Client to gatewaytest's Login.
func clients(c *client.Client) gatewaytest.Clients {
	return gatewaytest.Clients{MarketData: c.MarketData, Connection: c.Connection, Admin: c.Admin}
}

// streamCounter counts StreamMarketFeed calls the client makes.
type streamCounter struct{ n atomic.Int64 }

func (s *streamCounter) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc { return next }

func (s *streamCounter) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return func(ctx context.Context, spec connect.Spec) connect.StreamingClientConn {
		if spec.Procedure == feedgatev1connect.MarketDataServiceStreamMarketFeedProcedure {
			s.n.Add(1)
		}
		return next(ctx, spec)
	}
}

func (s *streamCounter) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return next
}

// subscription runs Subscribe in a goroutine and records what it delivers.
type subscription struct {
	ticks  chan *feedgatev1.TickBatch
	done   chan error
	cancel context.CancelFunc

	mu         sync.Mutex
	auth       []*feedgatev1.AuthRequired
	reconnects []client.Reconnect
}

func subscribe(t *testing.T, c *client.Client, req *feedgatev1.StreamMarketFeedRequest, o client.SubscribeOptions) *subscription {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	s := &subscription{ticks: make(chan *feedgatev1.TickBatch, 1024), done: make(chan error, 1), cancel: cancel}
	o.OnTicks = func(b *feedgatev1.TickBatch) {
		select {
		case s.ticks <- b:
		default:
		}
	}
	o.OnAuthRequired = func(ar *feedgatev1.AuthRequired) {
		s.mu.Lock()
		defer s.mu.Unlock()
		s.auth = append(s.auth, ar)
	}
	o.OnReconnect = func(r client.Reconnect) {
		s.mu.Lock()
		defer s.mu.Unlock()
		s.reconnects = append(s.reconnects, r)
	}
	go func() { s.done <- c.Subscribe(ctx, req, o) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-s.done:
		case <-time.After(5 * time.Second):
			t.Error("Subscribe did not return after its context was cancelled")
		}
	})
	return s
}

func (s *subscription) waitTicks(t *testing.T, within time.Duration) *feedgatev1.TickBatch {
	t.Helper()
	select {
	case b := <-s.ticks:
		return b
	case err := <-s.done:
		s.done <- err
		t.Fatalf("Subscribe returned before any tick: %v", err)
	case <-time.After(within):
		t.Fatalf("no ticks within %v", within)
	}
	return nil
}

func (s *subscription) wait(t *testing.T, within time.Duration) error {
	t.Helper()
	select {
	case err := <-s.done:
		s.done <- err
		return err
	case <-time.After(within):
		t.Fatalf("Subscribe did not return within %v", within)
	}
	return nil
}

// clientGoroutines counts goroutines of this package or of connect's
// client side (the gateway's handler goroutines run in this process too
// and are not counted).
func clientGoroutines() (int, string) {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	n := 0
	var found []string
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, "feedgate/client.") || strings.Contains(g, "connect.(*duplexHTTPCall)") {
			n++
			found = append(found, g)
		}
	}
	return n, strings.Join(found, "\n\n")
}

func checkNoLeak(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		n, stacks := clientGoroutines()
		if n == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d client goroutines left after Subscribe returned:\n%s", n, stacks)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestKeyAndKeyRejected(t *testing.T) {
	t.Parallel()
	e := gatewaytest.Start(t, gatewaytest.Options{})
	for _, p := range protocols {
		t.Run(p.name, func(t *testing.T) {
			key := e.NewUser("key-"+p.name, false)
			c := client.New(e.URL+"/", key, p.opts...)
			res, err := c.Connection.GetConnectionStatus(context.Background(), connect.NewRequest(&feedgatev1.GetConnectionStatusRequest{}))
			if err != nil {
				t.Fatalf("GetConnectionStatus: %v", err)
			}
			if len(res.Msg.Connections) == 0 {
				t.Error("no connections listed")
			}
			if s := fmt.Sprintf("%v %+v %#v %s", c, c, c, c); strings.Contains(s, key) {
				t.Errorf("the key shows in the Client's formatted form: %s", s)
			}

			wrong := client.New(e.URL, key+"x", p.opts...)
			_, err = wrong.Connection.GetConnectionStatus(context.Background(), connect.NewRequest(&feedgatev1.GetConnectionStatusRequest{}))
			if !client.IsKeyRejected(err) {
				t.Fatalf("wrong key: err = %v, want IsKeyRejected", err)
			}
			if _, ok := client.AuthRequired(err); ok {
				t.Error("a refused key reported AuthRequired")
			}
			if strings.Contains(err.Error(), key) {
				t.Error("the key shows in the error")
			}
			_, err = client.New(e.URL, "", p.opts...).Connection.GetConnectionStatus(context.Background(), connect.NewRequest(&feedgatev1.GetConnectionStatusRequest{}))
			if !client.IsKeyRejected(err) {
				t.Errorf("no key: err = %v, want IsKeyRejected", err)
			}
			// A non-admin key on AdminService is PermissionDenied, not a
			// refused key.
			_, err = c.Admin.GetValidationCacheStats(context.Background(), connect.NewRequest(&feedgatev1.GetValidationCacheStatsRequest{}))
			if connect.CodeOf(err) != connect.CodePermissionDenied || client.IsKeyRejected(err) {
				t.Errorf("admin call with a user key: %v", err)
			}
			admin := client.New(e.URL, e.AdminKey, p.opts...)
			if _, err := admin.Admin.GetValidationCacheStats(context.Background(), connect.NewRequest(&feedgatev1.GetValidationCacheStatsRequest{})); err != nil {
				t.Errorf("admin call with the admin key: %v", err)
			}
		})
	}
}

func TestAuthRequiredAfterRevoke(t *testing.T) {
	t.Parallel()
	e := gatewaytest.Start(t, gatewaytest.Options{})
	for _, p := range protocols {
		t.Run(p.name, func(t *testing.T) {
			account := "ar-" + p.name
			c := client.New(e.URL, e.NewUser(account, false), p.opts...)
			ctx := context.Background()
			req := connect.NewRequest(&feedgatev1.GetQuotesRequest{Broker: upstox, InstrumentKeys: []string{nifty}})

			// Never connected: NOT_CONNECTED.
			_, err := c.MarketData.GetQuotes(ctx, req)
			ar, ok := client.AuthRequired(err)
			if !ok || ar.Reason != feedgatev1.DisconnectReason_DISCONNECT_REASON_NOT_CONNECTED {
				t.Fatalf("before login: err = %v, detail %v", err, ar)
			}

			e.Login(clients(c), upstox, account)
			if _, err := c.MarketData.GetQuotes(ctx, req); err != nil {
				t.Fatalf("GetQuotes after login: %v", err)
			}
			e.Revoke("upstox", account)
			_, err = c.MarketData.GetQuotes(ctx, req)
			ar, ok = client.AuthRequired(fmt.Errorf("wrapped: %w", err))
			if !ok {
				t.Fatalf("after revoke: err = %v, want an AuthRequired detail", err)
			}
			if ar.Broker != upstox || ar.Reason != feedgatev1.DisconnectReason_DISCONNECT_REASON_TOKEN_REVOKED || ar.LoginUrl == "" || ar.Message == "" {
				t.Errorf("detail = %v", ar)
			}
			if client.IsKeyRejected(err) {
				t.Error("a dead broker token reported as a refused key")
			}
			if _, ok := client.AuthRequired(nil); ok {
				t.Error("AuthRequired(nil) reported true")
			}
			if _, ok := client.AuthRequired(errors.New("Unauthenticated")); ok {
				t.Error("AuthRequired of a plain error reported true")
			}
		})
	}
}

func TestSubscribeTicksThenAuthRequired(t *testing.T) {
	e := gatewaytest.Start(t, gatewaytest.Options{})
	keys := e.Sandbox().OptionKeys(sandbox.Upstox, nifty, "", 4)
	for _, p := range protocols {
		t.Run(p.name, func(t *testing.T) {
			account := "sub-" + p.name
			var calls streamCounter
			opts := append([]client.Option{client.WithConnectOptions(connect.WithInterceptors(&calls))}, p.opts...)
			c := client.New(e.URL, e.NewUser(account, false), opts...)
			e.Login(clients(c), upstox, account)

			s := subscribe(t, c, &feedgatev1.StreamMarketFeedRequest{Broker: upstox, InstrumentKeys: keys, Mode: feedgatev1.FeedMode_FEED_MODE_OPTION_GREEKS},
				client.SubscribeOptions{BackoffBase: 10 * time.Millisecond, BackoffCap: 50 * time.Millisecond})
			b := s.waitTicks(t, 10*time.Second)
			if tk := b.Ticks[0]; tk.Ltp <= 0 || tk.InstrumentKey == "" {
				t.Errorf("tick = %v", tk)
			}
			s.waitTicks(t, 5*time.Second)

			e.Revoke("upstox", account)
			err := s.wait(t, 5*time.Second)
			ar, ok := client.AuthRequired(err)
			if !ok || connect.CodeOf(err) != connect.CodeUnauthenticated {
				t.Fatalf("Subscribe returned %v, want Unauthenticated with AuthRequired", err)
			}
			if ar.Reason != feedgatev1.DisconnectReason_DISCONNECT_REASON_TOKEN_REVOKED || ar.Broker != upstox {
				t.Errorf("detail = %v", ar)
			}
			s.mu.Lock()
			hooks, reconnects := len(s.auth), len(s.reconnects)
			var hooked *feedgatev1.AuthRequired
			if hooks > 0 {
				hooked = s.auth[0]
			}
			s.mu.Unlock()
			if hooks != 1 {
				t.Errorf("OnAuthRequired called %d times, want 1", hooks)
			} else if hooked.Reason != ar.Reason || hooked.Broker != ar.Broker {
				t.Errorf("hook got %v, the error carries %v", hooked, ar)
			}
			if reconnects != 0 || calls.n.Load() != 1 {
				t.Errorf("%d reconnects, %d StreamMarketFeed calls; want 0 and 1", reconnects, calls.n.Load())
			}
			// It stays stopped.
			time.Sleep(200 * time.Millisecond)
			if n := calls.n.Load(); n != 1 {
				t.Errorf("%d StreamMarketFeed calls after AUTH_REQUIRED, want 1", n)
			}
			checkNoLeak(t)
		})
	}
}

func TestSubscribeAlreadyDisconnected(t *testing.T) {
	t.Parallel()
	e := gatewaytest.Start(t, gatewaytest.Options{})
	var calls streamCounter
	c := client.New(e.URL, e.NewUser("never", false), client.WithGRPC(), client.WithConnectOptions(connect.WithInterceptors(&calls)))
	var hooks atomic.Int64
	err := c.Subscribe(context.Background(), &feedgatev1.StreamMarketFeedRequest{Broker: upstox, InstrumentKeys: []string{nifty}},
		client.SubscribeOptions{OnAuthRequired: func(*feedgatev1.AuthRequired) { hooks.Add(1) }})
	ar, ok := client.AuthRequired(err)
	if !ok || ar.Reason != feedgatev1.DisconnectReason_DISCONNECT_REASON_NOT_CONNECTED {
		t.Fatalf("err = %v, detail %v", err, ar)
	}
	if hooks.Load() != 1 || calls.n.Load() != 1 {
		t.Errorf("%d hooks, %d calls; want 1 and 1", hooks.Load(), calls.n.Load())
	}
}

func TestSubscribePermanentErrorsAreNotRetried(t *testing.T) {
	t.Parallel()
	e := gatewaytest.Start(t, gatewaytest.Options{})
	key := e.NewUser("perm", false)
	for _, p := range protocols {
		t.Run(p.name, func(t *testing.T) {
			var calls streamCounter
			opts := append([]client.Option{client.WithConnectOptions(connect.WithInterceptors(&calls))}, p.opts...)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()

			c := client.New(e.URL, key, opts...)
			err := c.Subscribe(ctx, &feedgatev1.StreamMarketFeedRequest{Broker: upstox, InstrumentKeys: []string{""}}, client.SubscribeOptions{})
			if connect.CodeOf(err) != connect.CodeInvalidArgument {
				t.Errorf("empty key: err = %v, want InvalidArgument", err)
			}
			err = c.Subscribe(ctx, &feedgatev1.StreamMarketFeedRequest{Broker: feedgatev1.Broker_BROKER_UNSPECIFIED, InstrumentKeys: []string{nifty}}, client.SubscribeOptions{})
			if connect.CodeOf(err) != connect.CodeInvalidArgument {
				t.Errorf("no broker: err = %v, want InvalidArgument", err)
			}
			bad := client.New(e.URL, "fgk_nope", opts...)
			err = bad.Subscribe(ctx, &feedgatev1.StreamMarketFeedRequest{Broker: upstox, InstrumentKeys: []string{nifty}}, client.SubscribeOptions{})
			if !client.IsKeyRejected(err) {
				t.Errorf("bad key: err = %v, want IsKeyRejected", err)
			}
			if n := calls.n.Load(); n != 3 {
				t.Errorf("%d StreamMarketFeed calls for 3 permanent failures", n)
			}
		})
	}
}

// flakyProxy fronts the gateway: the first StreamMarketFeed call gets
// Unavailable (as from a gateway shutting down), the second has its
// HTTP/2 stream reset mid-response (a transport failure), and everything
// after is proxied to the gateway.
func flakyProxy(t *testing.T, gatewayURL string) (*httptest.Server, *atomic.Int64) {
	t.Helper()
	target, err := url.Parse(gatewayURL)
	if err != nil {
		t.Fatal(err)
	}
	proxy := httputil.NewSingleHostReverseProxy(target)
	proxy.Transport = client.DefaultHTTPClient().Transport
	proxy.FlushInterval = -1
	_, unavailable := feedgatev1connect.NewMarketDataServiceHandler(unavailableFeed{})
	var n atomic.Int64
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == feedgatev1connect.MarketDataServiceStreamMarketFeedProcedure {
			switch n.Add(1) {
			case 1:
				unavailable.ServeHTTP(w, r)
				return
			case 2:
				w.Header().Set("Content-Type", r.Header.Get("Content-Type"))
				w.WriteHeader(http.StatusOK)
				w.(http.Flusher).Flush()
				panic(http.ErrAbortHandler)
			}
		}
		proxy.ServeHTTP(w, r)
	})
	srv := httptest.NewUnstartedServer(h)
	var protos http.Protocols
	protos.SetHTTP1(true)
	protos.SetUnencryptedHTTP2(true)
	srv.Config.Protocols = &protos
	srv.Config.ErrorLog = nil
	srv.Start()
	t.Cleanup(srv.Close)
	return srv, &n
}

type unavailableFeed struct {
	feedgatev1connect.UnimplementedMarketDataServiceHandler
}

func (unavailableFeed) StreamMarketFeed(context.Context, *connect.Request[feedgatev1.StreamMarketFeedRequest], *connect.ServerStream[feedgatev1.StreamMarketFeedResponse]) error {
	return connect.NewError(connect.CodeUnavailable, errors.New("server is shutting down: reconnect"))
}

func TestSubscribeReconnectsAfterTransientFailures(t *testing.T) {
	e := gatewaytest.Start(t, gatewaytest.Options{})
	keys := e.Sandbox().OptionKeys(sandbox.Upstox, nifty, "", 2)
	for _, p := range protocols {
		t.Run(p.name, func(t *testing.T) {
			account := "flaky-" + p.name
			key := e.NewUser(account, false)
			e.Login(clients(client.New(e.URL, key)), upstox, account)
			proxy, proxied := flakyProxy(t, e.URL)
			var calls streamCounter
			opts := append([]client.Option{client.WithConnectOptions(connect.WithInterceptors(&calls))}, p.opts...)
			c := client.New(proxy.URL, key, opts...)

			s := subscribe(t, c, &feedgatev1.StreamMarketFeedRequest{Broker: upstox, InstrumentKeys: keys},
				client.SubscribeOptions{BackoffBase: 20 * time.Millisecond, BackoffCap: 100 * time.Millisecond})
			s.waitTicks(t, 10*time.Second)
			s.waitTicks(t, 5*time.Second)
			s.mu.Lock()
			reconnects := append([]client.Reconnect(nil), s.reconnects...)
			s.mu.Unlock()
			if len(reconnects) != 2 {
				t.Fatalf("reconnects = %v, want 2", reconnects)
			}
			if connect.CodeOf(reconnects[0].Err) != connect.CodeUnavailable {
				t.Errorf("first failure = %v, want Unavailable", reconnects[0].Err)
			}
			for i, r := range reconnects {
				if r.Attempt != i+1 || r.Delay < 0 || r.Delay > 100*time.Millisecond {
					t.Errorf("reconnect %d = %+v", i, r)
				}
			}
			if c, p := calls.n.Load(), proxied.Load(); c != 3 || p != 3 {
				t.Errorf("%d calls made, %d reached the proxy; want 3 and 3", c, p)
			}

			// Cancelling returns ctx.Err() and leaves nothing running.
			s.cancel()
			if err := s.wait(t, 5*time.Second); !errors.Is(err, context.Canceled) {
				t.Errorf("after cancel: %v, want context.Canceled", err)
			}
			checkNoLeak(t)
		})
	}
}

func TestSubscribeSurvivesGatewayRestart(t *testing.T) {
	dir := t.TempDir()
	e := gatewaytest.Start(t, gatewaytest.Options{DataDir: dir})
	addr := strings.TrimPrefix(e.URL, "http://")
	key := e.NewUser("restart", false)
	c := client.New(e.URL, key, client.WithGRPC())
	e.Login(clients(c), upstox, "restart")
	keys := e.Sandbox().OptionKeys(sandbox.Upstox, nifty, "", 2)

	s := subscribe(t, c, &feedgatev1.StreamMarketFeedRequest{Broker: upstox, InstrumentKeys: keys},
		client.SubscribeOptions{BackoffBase: 50 * time.Millisecond, BackoffCap: 200 * time.Millisecond})
	s.waitTicks(t, 10*time.Second)
	e.Stop()
	gatewaytest.Start(t, gatewaytest.Options{DataDir: dir, Args: []string{"--addr", addr}})
	// Drain what was queued before the restart, then expect fresh ticks.
	for len(s.ticks) > 0 {
		<-s.ticks
	}
	s.waitTicks(t, 15*time.Second)
	s.mu.Lock()
	n := len(s.reconnects)
	s.mu.Unlock()
	if n == 0 {
		t.Error("ticks after the restart without a reconnect")
	}
}

// silentFeed accepts streams and never sends anything.
type silentFeed struct {
	feedgatev1connect.UnimplementedMarketDataServiceHandler
}

func (silentFeed) StreamMarketFeed(ctx context.Context, _ *connect.Request[feedgatev1.StreamMarketFeedRequest], _ *connect.ServerStream[feedgatev1.StreamMarketFeedResponse]) error {
	<-ctx.Done()
	return nil
}

func TestSubscribeIdleTimeoutReconnects(t *testing.T) {
	t.Parallel()
	mux := http.NewServeMux()
	mux.Handle(feedgatev1connect.NewMarketDataServiceHandler(silentFeed{}))
	srv := httptest.NewUnstartedServer(mux)
	var protos http.Protocols
	protos.SetUnencryptedHTTP2(true)
	srv.Config.Protocols = &protos
	srv.Start()
	t.Cleanup(srv.Close)
	c := client.New(srv.URL, "k")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var reconnects []client.Reconnect
	err := c.Subscribe(ctx, &feedgatev1.StreamMarketFeedRequest{Broker: upstox, InstrumentKeys: []string{nifty}}, client.SubscribeOptions{
		IdleTimeout: 100 * time.Millisecond,
		BackoffBase: time.Millisecond,
		OnReconnect: func(r client.Reconnect) {
			reconnects = append(reconnects, r)
			if len(reconnects) == 3 {
				cancel()
			}
		},
	})
	if !errors.Is(err, context.Canceled) || len(reconnects) != 3 {
		t.Fatalf("err = %v after %d reconnects", err, len(reconnects))
	}
	for i, r := range reconnects {
		if connect.CodeOf(r.Err) != connect.CodeUnavailable || r.Attempt != i+1 {
			t.Errorf("reconnect %d = %+v", i, r)
		}
	}
}
