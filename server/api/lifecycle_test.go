package api_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"

	feedgatev1 "github.com/feedgate/feedgate/gen/go/feedgate/v1"
	"github.com/feedgate/feedgate/server/clock"
	"github.com/feedgate/feedgate/server/gateway/gatewaytest"
)

const nifty = "NSE_INDEX|Nifty 50"

// TestRevocationDisconnectsOnlyThatUserAndSurvivesRestart is the
// acceptance scenario of the lifecycle: alice and bob on both brokers;
// alice's Upstox account is revoked at the broker.
func TestRevocationDisconnectsOnlyThatUserAndSurvivesRestart(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	e := gatewaytest.Start(t, gatewaytest.Options{DataDir: dir})
	ctx := context.Background()
	expiry := nearestExpiry(t, e)
	aliceKey, bobKey := e.NewUser("alice", false), e.NewUser("bob", false)
	p := gatewaytest.Protocols[1] // gRPC here; the next test covers Connect
	alice, bob := e.Clients(aliceKey, p), e.Clients(bobKey, p)
	for _, b := range []feedgatev1.Broker{upstox, fyers} {
		e.Login(alice, b, "alice")
		e.Login(bob, b, "bob")
	}
	chain := func(c gatewaytest.Clients, b feedgatev1.Broker) error {
		_, err := c.MarketData.GetOptionChain(ctx, connect.NewRequest(&feedgatev1.GetOptionChainRequest{Broker: b, UnderlyingKey: underlyings[b], ExpiryDate: expiry}))
		return err
	}
	if err := chain(alice, upstox); err != nil {
		t.Fatal(err)
	}
	e.Revoke("upstox", "alice")

	ar := authRequired(t, chain(alice, upstox))
	if ar.Broker != upstox || ar.Reason != feedgatev1.DisconnectReason_DISCONNECT_REASON_TOKEN_REVOKED || ar.DisconnectedAt == nil ||
		ar.Message == "" || !strings.Contains(ar.LoginUrl, "/v2/login/authorization/dialog") {
		t.Fatalf("AuthRequired = %v", ar)
	}
	for i := 0; i < 20; i++ {
		authRequired(t, chain(alice, upstox))
		_, err := alice.MarketData.GetQuotes(ctx, connect.NewRequest(&feedgatev1.GetQuotesRequest{Broker: upstox, InstrumentKeys: []string{nifty}}))
		authRequired(t, err)
	}
	if n := e.Calls("upstox", "/", 401, "alice"); n != 1 {
		t.Errorf("the sandbox saw %d calls answered 401 for alice, want exactly 1", n)
	}
	if err := chain(bob, upstox); err != nil {
		t.Errorf("bob's Upstox: %v", err)
	}
	if err := chain(alice, fyers); err != nil {
		t.Errorf("alice's Fyers: %v", err)
	}
	status := func(c gatewaytest.Clients) map[feedgatev1.Broker]*feedgatev1.Connection {
		res, err := c.Connection.GetConnectionStatus(ctx, connect.NewRequest(&feedgatev1.GetConnectionStatusRequest{}))
		if err != nil {
			t.Fatal(err)
		}
		m := map[feedgatev1.Broker]*feedgatev1.Connection{}
		for _, c := range res.Msg.Connections {
			m[c.Broker] = c
		}
		return m
	}
	before := status(alice)
	up := before[upstox]
	if up.State != feedgatev1.ConnectionState_CONNECTION_STATE_DISCONNECTED || up.Reason != feedgatev1.DisconnectReason_DISCONNECT_REASON_TOKEN_REVOKED ||
		!up.DisconnectedAt.AsTime().Equal(ar.DisconnectedAt.AsTime()) || !strings.Contains(up.LastError, "401") {
		t.Errorf("alice's Upstox status: %v", up)
	}
	if before[fyers].State != feedgatev1.ConnectionState_CONNECTION_STATE_CONNECTED {
		t.Errorf("alice's Fyers status: %v", before[fyers])
	}

	// A restart keeps all of it.
	e.Stop()
	e2 := gatewaytest.Start(t, gatewaytest.Options{DataDir: dir})
	alice2, bob2 := e2.Clients(aliceKey, p), e2.Clients(bobKey, p)
	after := status(alice2)
	if a := after[upstox]; a.State != up.State || a.Reason != up.Reason || !a.DisconnectedAt.AsTime().Equal(up.DisconnectedAt.AsTime()) {
		t.Errorf("after restart: %v, before: %v", a, up)
	}
	ar2 := authRequired(t, chain(alice2, upstox))
	if ar2.Reason != feedgatev1.DisconnectReason_DISCONNECT_REASON_TOKEN_REVOKED {
		t.Errorf("after restart: %v", ar2)
	}
	// The sandbox persisted its revocation too; bob and alice's Fyers still work
	// with the tokens sealed in the database.
	if err := chain(bob2, upstox); err != nil {
		t.Errorf("bob after restart: %v", err)
	}
	if err := chain(alice2, fyers); err != nil {
		t.Errorf("alice's Fyers after restart: %v", err)
	}
	if n := e2.Calls("upstox", "/", 0, "alice"); n != 0 {
		t.Errorf("after restart alice's dead token reached the broker %d times", n)
	}
	// Logging in again restores everything, with no restart.
	conn := e2.Login(alice2, upstox, "alice")
	if conn.TokenGeneration != 2 {
		t.Errorf("generation after re-login = %d, want 2", conn.TokenGeneration)
	}
	if err := chain(alice2, upstox); err != nil {
		t.Errorf("after re-login: %v", err)
	}
}

func TestConcurrentBurstAtRevocation(t *testing.T) {
	t.Parallel()
	e := gatewaytest.Start(t, gatewaytest.Options{})
	ctx := context.Background()
	c := e.Clients(e.NewUser("burst", false), gatewaytest.Protocols[0])
	e.Login(c, upstox, "burst")
	e.Revoke("upstox", "burst")
	const n = 40
	var wg sync.WaitGroup
	errs := make([]error, n)
	start := make(chan struct{})
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			_, errs[i] = c.MarketData.GetQuotes(ctx, connect.NewRequest(&feedgatev1.GetQuotesRequest{Broker: upstox, InstrumentKeys: []string{nifty}}))
		}()
	}
	close(start)
	wg.Wait()
	for _, err := range errs {
		authRequired(t, err)
	}
	first := e.Calls("upstox", "/", 0, "burst") - e.Calls("upstox", "/v2/login", 0, "burst")
	if first < 1 || first > n {
		t.Errorf("burst made %d broker calls", first)
	}
	// Once the first 401 is known, nothing reaches the broker: a second
	// burst makes no call at all.
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := c.MarketData.GetQuotes(ctx, connect.NewRequest(&feedgatev1.GetQuotesRequest{Broker: upstox, InstrumentKeys: []string{nifty}}))
			authRequired(t, err)
		}()
	}
	wg.Wait()
	if again := e.Calls("upstox", "/", 0, "burst") - e.Calls("upstox", "/v2/login", 0, "burst"); again != first {
		t.Errorf("the second burst made %d broker calls, want 0", again-first)
	}
	if n401 := e.Calls("upstox", "/", 401, "burst"); n401 != first {
		t.Errorf("401s %d != calls %d", n401, first)
	}
}

func TestKnownExpiryDisconnectsWithoutABrokerCall(t *testing.T) {
	t.Parallel()
	fake := clock.NewFake(time.Now())
	// No validation sweep while the clock jumps: this test counts broker calls.
	e := gatewaytest.Start(t, gatewaytest.Options{Clock: fake, Args: []string{"--validation-interval", "10000h"}})
	ctx := context.Background()
	p := gatewaytest.Protocols[0]
	c := e.Clients(e.NewUser("exp", false), p)
	conn := e.Login(c, upstox, "exp")
	exp := conn.TokenExpiresAt.AsTime()
	// Upstox: 03:30 IST on the next day, whatever time the token was issued.
	ist := time.FixedZone("IST", 5*3600+30*60)
	if h, m := exp.In(ist).Hour(), exp.In(ist).Minute(); h != 3 || m != 30 || exp.Sub(fake.Now()) > 25*time.Hour || !exp.After(fake.Now()) {
		t.Fatalf("Upstox token expires at %v (IST %v)", exp, exp.In(ist))
	}
	watch, err := c.Connection.WatchConnectionStatus(ctx, connect.NewRequest(&feedgatev1.WatchConnectionStatusRequest{Broker: upstox}))
	if err != nil {
		t.Fatal(err)
	}
	defer watch.Close()
	if !watch.Receive() || watch.Msg().Event != feedgatev1.WatchEvent_WATCH_EVENT_SNAPSHOT {
		t.Fatalf("no snapshot: %v", watch.Err())
	}
	fake.Advance(exp.Sub(fake.Now()) - time.Second)
	calls := e.Calls("upstox", "/", 0, "exp")
	if st := connState(t, c, upstox); st.State != feedgatev1.ConnectionState_CONNECTION_STATE_CONNECTED {
		t.Fatalf("disconnected a second early: %v", st)
	}
	fake.Advance(time.Second)
	// Subscribers are told. (The half-hourly validation sweep also ran
	// while the clock moved; its changes come first.)
	var m *feedgatev1.WatchConnectionStatusResponse
	for m == nil || m.Changed.GetState() == feedgatev1.ConnectionState_CONNECTION_STATE_CONNECTED {
		if !watch.Receive() {
			t.Fatalf("watch ended: %v", watch.Err())
		}
		m = watch.Msg()
	}
	if m.Event != feedgatev1.WatchEvent_WATCH_EVENT_CHANGE || m.Changed.GetReason() != feedgatev1.DisconnectReason_DISCONNECT_REASON_TOKEN_EXPIRED {
		t.Fatalf("watch message: %v", m)
	}
	st := connState(t, c, upstox)
	if st.State != feedgatev1.ConnectionState_CONNECTION_STATE_DISCONNECTED || st.Reason != feedgatev1.DisconnectReason_DISCONNECT_REASON_TOKEN_EXPIRED || !st.DisconnectedAt.AsTime().Equal(exp) {
		t.Errorf("after expiry: %v", st)
	}
	if n := e.Calls("upstox", "/", 0, "exp"); n != calls {
		t.Errorf("expiry made %d broker calls", n-calls)
	}
	_, err = c.MarketData.GetOptionChain(ctx, connect.NewRequest(&feedgatev1.GetOptionChainRequest{Broker: upstox, UnderlyingKey: nifty, ExpiryDate: nearestExpiry(t, e)}))
	if ar := authRequired(t, err); ar.Reason != feedgatev1.DisconnectReason_DISCONNECT_REASON_TOKEN_EXPIRED {
		t.Errorf("AuthRequired = %v", ar)
	}
}

func connState(t *testing.T, c gatewaytest.Clients, b feedgatev1.Broker) *feedgatev1.Connection {
	t.Helper()
	res, err := c.Connection.GetConnectionStatus(context.Background(), connect.NewRequest(&feedgatev1.GetConnectionStatusRequest{Broker: b}))
	if err != nil || len(res.Msg.Connections) != 1 {
		t.Fatalf("GetConnectionStatus: %v %v", res, err)
	}
	return res.Msg.Connections[0]
}

func TestWatchPushesChangesPromptly(t *testing.T) {
	t.Parallel()
	e := gatewaytest.Start(t, gatewaytest.Options{Args: []string{"--heartbeat-interval", "200ms"}})
	for _, p := range gatewaytest.Protocols {
		t.Run(p.Name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			acct := "watch-" + p.Name
			c := e.Clients(e.NewUser(acct, false), p)
			w, err := c.Connection.WatchConnectionStatus(ctx, connect.NewRequest(&feedgatev1.WatchConnectionStatusRequest{}))
			if err != nil {
				t.Fatal(err)
			}
			defer w.Close()
			next := func(want feedgatev1.WatchEvent) *feedgatev1.WatchConnectionStatusResponse {
				t.Helper()
				for w.Receive() {
					if w.Msg().Event == want {
						return w.Msg()
					}
				}
				t.Fatalf("stream ended before %v: %v", want, w.Err())
				return nil
			}
			snap := next(feedgatev1.WatchEvent_WATCH_EVENT_SNAPSHOT)
			if len(snap.Connections) != 2 || snap.Connections[0].Reason != feedgatev1.DisconnectReason_DISCONNECT_REASON_NOT_CONNECTED {
				t.Errorf("snapshot: %v", snap)
			}
			next(feedgatev1.WatchEvent_WATCH_EVENT_HEARTBEAT)
			e.Login(c, upstox, acct)
			ch := next(feedgatev1.WatchEvent_WATCH_EVENT_CHANGE)
			if ch.Changed.State != feedgatev1.ConnectionState_CONNECTION_STATE_CONNECTED || ch.Changed.Broker != upstox {
				t.Errorf("login change: %v", ch)
			}
			e.Revoke("upstox", acct)
			_, err = c.MarketData.GetQuotes(ctx, connect.NewRequest(&feedgatev1.GetQuotesRequest{Broker: upstox, InstrumentKeys: []string{nifty}}))
			authRequired(t, err)
			start := time.Now()
			ch = next(feedgatev1.WatchEvent_WATCH_EVENT_CHANGE)
			if d := time.Since(start); d > time.Second {
				t.Errorf("the change took %v to arrive", d)
			}
			if ch.Changed.Reason != feedgatev1.DisconnectReason_DISCONNECT_REASON_TOKEN_REVOKED {
				t.Errorf("revocation change: %v", ch)
			}
		})
	}
}

func TestValidationSweepAndCache(t *testing.T) {
	t.Parallel()
	e := gatewaytest.Start(t, gatewaytest.Options{})
	ctx := context.Background()
	p := gatewaytest.Protocols[0]
	admin := e.Clients(e.AdminKey, p)
	for _, name := range []string{"v1", "v2", "v3"} {
		c := e.Clients(e.NewUser(name, false), p)
		e.Login(c, upstox, name)
		e.Login(c, fyers, name)
	}
	e.Revoke("fyers", "v2")
	res, err := admin.Admin.ValidateAllTokens(ctx, connect.NewRequest(&feedgatev1.ValidateAllTokensRequest{}))
	if err != nil {
		t.Fatal(err)
	}
	if m := res.Msg; m.Checked != 6 || m.Valid != 5 || m.Invalidated != 1 || m.Errors != 0 || m.Duration == nil {
		t.Errorf("sweep: %v", m)
	}
	// The probe is the profile endpoint, one per token.
	if n := e.Calls("upstox", "/v2/user/profile", 200, ""); n != 3 {
		t.Errorf("Upstox profile probes = %d, want 3", n)
	}
	list, err := admin.Admin.ListConnections(ctx, connect.NewRequest(&feedgatev1.ListConnectionsRequest{State: feedgatev1.ConnectionState_CONNECTION_STATE_DISCONNECTED}))
	if err != nil {
		t.Fatal(err)
	}
	if len(list.Msg.Connections) != 1 || list.Msg.Connections[0].UserName != "v2" || list.Msg.Connections[0].Connection.Broker != fyers ||
		list.Msg.Connections[0].Connection.LastError == "" {
		t.Errorf("disconnected list: %v", list.Msg)
	}
	// Forced sweeps skip the cache; the cache serves an unforced lookup.
	stats, err := admin.Admin.GetValidationCacheStats(ctx, connect.NewRequest(&feedgatev1.GetValidationCacheStatsRequest{}))
	if err != nil {
		t.Fatal(err)
	}
	if s := stats.Msg; s.Entries != 5 || s.Ttl.AsDuration() != 5*time.Minute {
		t.Errorf("cache stats: %v", s)
	}
	outcome, err := e.G.Conns().Sweep(ctx, "", false)
	if err != nil || outcome.Cached != 5 || outcome.Checked != 0 {
		t.Errorf("unforced sweep within the TTL: %+v, %v", outcome, err)
	}
	stats, _ = admin.Admin.GetValidationCacheStats(ctx, connect.NewRequest(&feedgatev1.GetValidationCacheStatsRequest{}))
	if s := stats.Msg; s.Hits != 5 || s.HitRatio <= 0 {
		t.Errorf("hits after a cached sweep: %v", s)
	}
	// A user clears their own entries; an admin clears anyone's.
	v1 := e.Clients(e.NewUser("v1b", false), p)
	cl, err := v1.Connection.ClearValidationCache(ctx, connect.NewRequest(&feedgatev1.ClearValidationCacheRequest{}))
	if err != nil || cl.Msg.Cleared != 0 {
		t.Errorf("a user without entries cleared %v, %v", cl, err)
	}
	ac, err := admin.Admin.ClearValidationCache(ctx, connect.NewRequest(&feedgatev1.AdminServiceClearValidationCacheRequest{Broker: upstox}))
	if err != nil || ac.Msg.Cleared != 3 {
		t.Errorf("admin clear upstox: %v, %v", ac, err)
	}
	// Paging covers every connection once.
	seen := 0
	req := &feedgatev1.ListConnectionsRequest{PageSize: 4}
	for {
		page, err := admin.Admin.ListConnections(ctx, connect.NewRequest(req))
		if err != nil {
			t.Fatal(err)
		}
		seen += len(page.Msg.Connections)
		if page.Msg.NextPageToken == "" {
			break
		}
		req.PageToken = page.Msg.NextPageToken
	}
	if seen != 6 {
		t.Errorf("paging saw %d connections, want 6", seen)
	}
	_, err = admin.Admin.ListConnections(ctx, connect.NewRequest(&feedgatev1.ListConnectionsRequest{PageToken: "garbage"}))
	if connect.CodeOf(err) != connect.CodeInvalidArgument {
		t.Errorf("bad page token: %v", err)
	}
}

func TestTokensAreSealedAtRest(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	e := gatewaytest.Start(t, gatewaytest.Options{DataDir: dir})
	c := e.Clients(e.NewUser("sealed", false), gatewaytest.Protocols[0])
	e.Login(c, upstox, "sealed")
	e.Login(c, fyers, "sealed")
	key, err := os.ReadFile(filepath.Join(dir, "token.key"))
	if err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(filepath.Join(dir, "token.key")); fi.Mode().Perm() != 0o600 {
		t.Errorf("key file mode %v", fi.Mode().Perm())
	}
	// Fyers tokens are JWTs: their header is recognisable in plaintext.
	e.Stop()
	for _, name := range []string{"feedgate.db", "feedgate.db-wal"} {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			continue
		}
		if strings.Contains(string(b), "eyJ") || strings.Contains(string(b), strings.TrimSpace(string(key))) {
			t.Errorf("%s holds a plaintext token or the key", name)
		}
	}
	// A wrong key at start-up is a clear error, not silent data loss.
	wrong := "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="
	_, err = startErr(t, dir, map[string]string{"FEEDGATE_TOKEN_KEY": wrong})
	if err == nil || !strings.Contains(err.Error(), "FEEDGATE_TOKEN_KEY") {
		t.Errorf("wrong key: %v", err)
	}
	// A missing key file with sealed tokens is refused too.
	if err := os.Rename(filepath.Join(dir, "token.key"), filepath.Join(dir, "token.key.bak")); err != nil {
		t.Fatal(err)
	}
	_, err = startErr(t, dir, nil)
	if err == nil || !strings.Contains(err.Error(), "missing") {
		t.Errorf("missing key file: %v", err)
	}
}

func TestTokenKeyRotation(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	const keyA = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="
	const keyB = "AQECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="
	e := gatewaytest.Start(t, gatewaytest.Options{DataDir: dir, Env: map[string]string{"FEEDGATE_TOKEN_KEY": keyA}})
	key := e.NewUser("rot", false)
	e.Login(e.Clients(key, gatewaytest.Protocols[0]), upstox, "rot")
	e.Stop()
	// Rotate: the new key first, the old one still opens existing tokens.
	e2 := gatewaytest.Start(t, gatewaytest.Options{DataDir: dir, Env: map[string]string{"FEEDGATE_TOKEN_KEY": keyB + "," + keyA}})
	c := e2.Clients(key, gatewaytest.Protocols[0])
	if st := connState(t, c, upstox); st.State != feedgatev1.ConnectionState_CONNECTION_STATE_CONNECTED {
		t.Fatalf("after rotation: %v", st)
	}
	_, err := c.MarketData.GetQuotes(context.Background(), connect.NewRequest(&feedgatev1.GetQuotesRequest{Broker: upstox, InstrumentKeys: []string{nifty}}))
	if err != nil {
		t.Fatalf("a token sealed with the old key no longer works: %v", err)
	}
	e2.Stop()
	// Dropping the old key while tokens still need it is refused at start.
	if _, err := startErr(t, dir, map[string]string{"FEEDGATE_TOKEN_KEY": keyB}); err == nil || !strings.Contains(err.Error(), "FEEDGATE_TOKEN_KEY") {
		t.Errorf("start without the old key: %v", err)
	}
}
