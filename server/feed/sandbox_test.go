package feed

import (
	"context"
	"crypto/rand"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"sync"
	"testing"
	"time"

	feedgatev1 "github.com/feedgate/feedgate/gen/go/feedgate/v1"
	"github.com/feedgate/feedgate/server/broker"
	"github.com/feedgate/feedgate/server/broker/fyers"
	"github.com/feedgate/feedgate/server/broker/upstox"
	"github.com/feedgate/feedgate/server/connections"
	"github.com/feedgate/feedgate/server/sandbox"
	"github.com/feedgate/feedgate/server/seal"
	"github.com/feedgate/feedgate/server/secret"
	"github.com/feedgate/feedgate/server/store"
	"github.com/feedgate/feedgate/server/store/sqlitestore"
)

// trackingListener remembers accepted connections so a test can cut them
// all, hijacked WebSockets included (a transport loss).
type trackingListener struct {
	net.Listener
	mu    sync.Mutex
	conns []net.Conn
}

func (l *trackingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.mu.Lock()
		l.conns = append(l.conns, c)
		l.mu.Unlock()
	}
	return c, err
}

func (l *trackingListener) cutAll() {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, c := range l.conns {
		c.Close()
	}
	l.conns = nil
}

// sbEnv is the sandbox broker, a real connections manager on SQLite, and
// a hub with the real Upstox and Fyers feed adapters.
type sbEnv struct {
	sb  *sandbox.Sandbox
	srv *httptest.Server
	ln  *trackingListener
	m   *connections.Manager
	hub *Hub
}

func newSandboxEnv(t *testing.T) *sbEnv {
	t.Helper()
	sb, err := sandbox.New(sandbox.Config{FeedInterval: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(sb.Handler())
	ln := &trackingListener{Listener: srv.Listener}
	srv.Listener = ln
	srv.Start()
	ctx := context.Background()
	st, err := sqlitestore.Open(ctx, filepath.Join(t.TempDir(), "feedgate.db"))
	if err != nil {
		t.Fatal(err)
	}
	for _, u := range []string{"alice", "bob", "carol"} {
		var h [32]byte
		_, _ = rand.Read(h[:])
		if err := st.CreateUser(ctx, store.User{ID: u, Name: u, KeyHash: h, CreatedAt: time.Now()}); err != nil {
			t.Fatal(err)
		}
	}
	key := make([]byte, 32)
	_, _ = rand.Read(key)
	sealer, err := seal.New(key)
	if err != nil {
		t.Fatal(err)
	}
	up, err := upstox.New(upstox.Config{ClientID: sandbox.UpstoxClientID, ClientSecret: secret.New(sandbox.UpstoxClientSecret),
		RedirectURL: "http://127.0.0.1/cb", BaseURL: srv.URL + "/upstox"})
	if err != nil {
		t.Fatal(err)
	}
	fy, err := fyers.New(fyers.Config{AppID: sandbox.FyersAppID, Secret: secret.New(sandbox.FyersSecret),
		RedirectURL: "http://127.0.0.1/cb", BaseURL: srv.URL + "/fyers"})
	if err != nil {
		t.Fatal(err)
	}
	m, err := connections.New(connections.Config{Store: st, Sealer: sealer,
		Brokers: map[broker.Kind]broker.Client{broker.Upstox: up, broker.Fyers: fy}})
	if err != nil {
		t.Fatal(err)
	}
	hub, err := New(Config{Conns: m, Dialers: map[broker.Kind]broker.FeedDialer{broker.Upstox: up, broker.Fyers: fy},
		FeedOptions: broker.FeedOptions{PollInterval: 50 * time.Millisecond, IdleTimeout: 2 * time.Second}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		hub.Close()
		m.Close()
		_ = sb.Close()
		srv.Close()
		_ = st.Close()
	})
	return &sbEnv{sb: sb, srv: srv, ln: ln, m: m, hub: hub}
}

// login connects user to b as sandbox account user, through the real OAuth.
func (e *sbEnv) login(t *testing.T, user string, b broker.Kind) {
	t.Helper()
	u, state, _, err := e.m.LoginURL(context.Background(), user, b)
	if err != nil {
		t.Fatal(err)
	}
	hc := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := hc.Get(u + "&account=" + user)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	loc, err := url.Parse(resp.Header.Get("Location"))
	if err != nil {
		t.Fatal(err)
	}
	code := loc.Query().Get("auth_code") // Fyers; Upstox sends code
	if code == "" {
		code = loc.Query().Get("code")
	}
	if _, err := e.m.CompleteLogin(context.Background(), user, b, code, state); err != nil {
		t.Fatal(err)
	}
}

func (e *sbEnv) sub(t *testing.T, user string, b broker.Kind, keys ...string) *Stream {
	t.Helper()
	st, err := e.hub.Subscribe(context.Background(), user, b, keys, broker.ModeLTPC)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func (e *sbEnv) calls(path string) int64 {
	var n int64
	for _, c := range e.sb.Stats().Calls {
		if c.Path == path {
			n += c.Count
		}
	}
	return n
}

// waitAuthRequired reads st until its AuthRequired, then checks it ends.
func waitAuthRequired(t *testing.T, st *Stream, within time.Duration) *connections.AuthRequiredError {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	for {
		ev, err := st.Next(ctx)
		if err != nil {
			t.Fatalf("Next before AuthRequired: %v", err)
		}
		if ev.Kind == EventAuthRequired {
			var ae *connections.AuthRequiredError
			if _, err := st.Next(ctx); !errors.As(err, &ae) {
				t.Fatalf("stream did not end with AuthRequiredError: %v", err)
			}
			return ev.AuthRequired
		}
	}
}

const nifty, bank = "NSE_INDEX|Nifty 50", "NSE_INDEX|Nifty Bank"

func TestSandboxSharedUpstreamAndRevoke(t *testing.T) {
	checkLeaks(t)
	e := newSandboxEnv(t)
	e.login(t, "alice", broker.Upstox)
	e.login(t, "alice", broker.Fyers)
	e.login(t, "bob", broker.Upstox)
	var alice []*Stream
	for i := range 10 {
		keys := []string{nifty}
		if i%2 == 1 {
			keys = append(keys, bank)
		}
		alice = append(alice, e.sub(t, "alice", broker.Upstox, keys...))
	}
	bob := e.sub(t, "bob", broker.Upstox, nifty)
	aliceFyers := e.sub(t, "alice", broker.Fyers, "NSE:NIFTY50-INDEX")
	for _, st := range append(alice, bob, aliceFyers) {
		if ev := nextTicks(t, st); ev.Ticks.Ticks[0].GetLtp() <= 0 {
			t.Fatalf("bad tick %v", ev.Ticks)
		}
	}
	if n := e.calls("/v3/feed/market-data-feed/authorize"); n != 2 {
		t.Fatalf("%d feed authorizations for two users, want 2", n)
	}
	if e.hub.Upstreams() != 3 {
		t.Fatalf("%d upstreams, want 3 (alice upstox, alice fyers, bob upstox)", e.hub.Upstreams())
	}

	start := time.Now()
	e.sb.Revoke(sandbox.Upstox, "alice")
	for _, st := range alice {
		ae := waitAuthRequired(t, st, 5*time.Second)
		if ae.Broker != broker.Upstox || ae.Reason != store.ReasonTokenRevoked {
			t.Fatalf("AuthRequired %+v", ae)
		}
	}
	t.Logf("10 streams got AuthRequired %v after the revoke", time.Since(start))
	// Bob and alice's Fyers stream keep going.
	for range 3 {
		nextTicks(t, bob)
		nextTicks(t, aliceFyers)
	}
	for _, st := range append(alice, bob, aliceFyers) {
		st.Close()
	}
}

func TestSandboxTransportLossReconnects(t *testing.T) {
	checkLeaks(t)
	e := newSandboxEnv(t)
	e.login(t, "alice", broker.Upstox)
	st := e.sub(t, "alice", broker.Upstox, nifty)
	nextTicks(t, st)
	e.ln.cutAll()
	want := []feedgatev1.UpstreamState{feedgatev1.UpstreamState_UPSTREAM_STATE_RECONNECTING, feedgatev1.UpstreamState_UPSTREAM_STATE_LIVE}
	for len(want) > 0 {
		ev, err := nextWithin(t, st, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if ev.Kind == EventUpstreamStatus {
			if ev.UpstreamState != want[0] {
				t.Fatalf("status %v, want %v", ev.UpstreamState, want[0])
			}
			want = want[1:]
		}
	}
	nextTicks(t, st)
	if n := e.calls("/v3/feed/market-data-feed/authorize"); n != 2 {
		t.Fatalf("%d authorizations, want a fresh one for the reconnect", n)
	}
	if s, last := st.Upstream(); s != feedgatev1.UpstreamState_UPSTREAM_STATE_LIVE || last.IsZero() {
		t.Fatalf("Upstream() = %v, %v", s, last)
	}
	st.Close()
}

func TestSandboxDisconnectAndNotConnected(t *testing.T) {
	checkLeaks(t)
	e := newSandboxEnv(t)
	e.login(t, "alice", broker.Upstox)
	st := e.sub(t, "alice", broker.Upstox, nifty)
	nextTicks(t, st)
	if _, _, err := e.m.Disconnect(context.Background(), "alice", broker.Upstox); err != nil {
		t.Fatal(err)
	}
	if ae := waitAuthRequired(t, st, 5*time.Second); ae.Reason != store.ReasonLoggedOut {
		t.Fatalf("reason %q", ae.Reason)
	}
	// carol never connected: AuthRequired at once (with no login URL: she
	// has no login state, and reading an AuthRequired creates none).
	start := time.Now()
	c := e.sub(t, "carol", broker.Upstox, nifty)
	if ae := waitAuthRequired(t, c, time.Second); ae.Reason != store.ReasonNotConnected || ae.LoginURL != "" {
		t.Fatalf("carol's AuthRequired %+v", ae)
	}
	if d := time.Since(start); d > 500*time.Millisecond {
		t.Fatalf("AuthRequired took %v", d)
	}
	// Logging in again makes streams work again.
	e.login(t, "alice", broker.Upstox)
	st2 := e.sub(t, "alice", broker.Upstox, nifty)
	nextTicks(t, st2)
	st.Close()
	c.Close()
	st2.Close()
}

func TestSandboxHubCloseEndsStreams(t *testing.T) {
	checkLeaks(t)
	e := newSandboxEnv(t)
	e.login(t, "alice", broker.Upstox)
	e.login(t, "bob", broker.Fyers)
	a := e.sub(t, "alice", broker.Upstox, nifty)
	b := e.sub(t, "bob", broker.Fyers, "NSE:NIFTY50-INDEX")
	nextTicks(t, a)
	nextTicks(t, b)
	e.hub.Close()
	for _, st := range []*Stream{a, b} {
		for {
			_, err := nextWithin(t, st, 5*time.Second)
			if errors.Is(err, ErrHubClosed) {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
		}
	}
}
