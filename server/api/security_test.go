package api_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	feedgatev1 "github.com/feedgate/feedgate/gen/go/feedgate/v1"
	"github.com/feedgate/feedgate/server/broker"
	"github.com/feedgate/feedgate/server/clock"
	"github.com/feedgate/feedgate/server/gateway/gatewaytest"
	"github.com/feedgate/feedgate/server/hardening"
	"github.com/feedgate/feedgate/server/sandbox"
	"github.com/feedgate/feedgate/server/seal"
)

func codeOf(err error) connect.Code {
	if err == nil {
		return 0
	}
	return connect.CodeOf(err)
}

// hasDetail reports whether err carries any error detail.
func hasDetail(err error) bool {
	var ce *connect.Error
	return errors.As(err, &ce) && len(ce.Details()) > 0
}

// TestKeysAreScopedToTheirUser: bob's key sees and changes only bob's
// connections, whatever alice has; no RPC takes a user id except admin
// ones, and every AdminService RPC refuses a non-admin key.
func TestKeysAreScopedToTheirUser(t *testing.T) {
	t.Parallel()
	e := gatewaytest.Start(t, gatewaytest.Options{})
	ctx := context.Background()
	for _, p := range gatewaytest.Protocols {
		t.Run(p.Name, func(t *testing.T) {
			alice := e.Clients(e.NewUser("scope-alice-"+p.Name, false), p)
			bob := e.Clients(e.NewUser("scope-bob-"+p.Name, false), p)
			e.Login(alice, upstox, "scope-alice-"+p.Name)
			before := e.Calls("upstox", "/", 0, "scope-alice-"+p.Name)

			st, err := bob.Connection.GetConnectionStatus(ctx, connect.NewRequest(&feedgatev1.GetConnectionStatusRequest{}))
			if err != nil {
				t.Fatal(err)
			}
			for _, c := range st.Msg.Connections {
				if c.State == feedgatev1.ConnectionState_CONNECTION_STATE_CONNECTED || c.BrokerUserId != "" {
					t.Errorf("bob sees a connection he never made: %v", c)
				}
			}
			_, err = bob.MarketData.GetQuotes(ctx, connect.NewRequest(&feedgatev1.GetQuotesRequest{Broker: upstox, InstrumentKeys: []string{nifty}}))
			if ar := authRequired(t, err); ar.Reason != feedgatev1.DisconnectReason_DISCONNECT_REASON_NOT_CONNECTED {
				t.Errorf("bob's quotes: %v", ar)
			}
			f := openFeed(t, bob, upstox, []string{nifty}, feedgatev1.FeedMode_FEED_MODE_LTPC)
			if ar, err := f.waitEnd(t, 5*time.Second); ar == nil || codeOf(err) != connect.CodeUnauthenticated {
				t.Errorf("bob's stream: %v, %v", ar, err)
			}
			if _, err := bob.Connection.Disconnect(ctx, connect.NewRequest(&feedgatev1.DisconnectRequest{Broker: upstox})); err != nil {
				t.Errorf("bob's Disconnect: %v", err)
			}
			if _, err := bob.Connection.ClearValidationCache(ctx, connect.NewRequest(&feedgatev1.ClearValidationCacheRequest{})); err != nil {
				t.Errorf("bob's ClearValidationCache: %v", err)
			}
			// None of that touched alice or used her token.
			if st := connState(t, alice, upstox); st.State != feedgatev1.ConnectionState_CONNECTION_STATE_CONNECTED {
				t.Errorf("alice after bob's calls: %v", st)
			}
			if n := e.Calls("upstox", "/", 0, "scope-alice-"+p.Name); n != before {
				t.Errorf("bob's calls made %d broker calls with alice's token", n-before)
			}

			admin := []struct {
				name string
				call func() error
			}{
				{"ValidateAllTokens", func() error {
					_, err := bob.Admin.ValidateAllTokens(ctx, connect.NewRequest(&feedgatev1.ValidateAllTokensRequest{}))
					return err
				}},
				{"GetValidationCacheStats", func() error {
					_, err := bob.Admin.GetValidationCacheStats(ctx, connect.NewRequest(&feedgatev1.GetValidationCacheStatsRequest{}))
					return err
				}},
				{"ClearValidationCache", func() error {
					_, err := bob.Admin.ClearValidationCache(ctx, connect.NewRequest(&feedgatev1.AdminServiceClearValidationCacheRequest{}))
					return err
				}},
				{"ListConnections", func() error {
					_, err := bob.Admin.ListConnections(ctx, connect.NewRequest(&feedgatev1.ListConnectionsRequest{}))
					return err
				}},
			}
			for _, a := range admin {
				if err := a.call(); codeOf(err) != connect.CodePermissionDenied || hasDetail(err) {
					t.Errorf("bob on AdminService.%s: %v, want PermissionDenied", a.name, err)
				}
			}
		})
	}
}

// TestRevokedKey: a revoked API key is refused on every new call, unary
// and streaming, with Unauthenticated and no detail (so a client knows to
// get a new feedgate key, not to reconnect a broker). Keys are revoked from
// the CLI, in another process, so the server re-checks the keys of open
// streams (--key-recheck-interval) and ends those of a revoked key too.
func TestRevokedKey(t *testing.T) {
	t.Parallel()
	e := gatewaytest.Start(t, gatewaytest.Options{Args: []string{"--key-recheck-interval", "100ms"}})
	ctx := context.Background()
	c := e.Clients(e.NewUser("revoked", false), gatewaytest.Protocols[0])
	e.Login(c, upstox, "revoked")
	open := openFeed(t, c, upstox, []string{nifty}, feedgatev1.FeedMode_FEED_MODE_LTPC)
	open.next(t, 5*time.Second, isTicks)
	u, err := e.G.Store().UserByName(ctx, "revoked")
	if err != nil {
		t.Fatal(err)
	}
	if err := e.G.Store().RevokeUser(ctx, u.ID, time.Now()); err != nil {
		t.Fatal(err)
	}
	_, err = c.MarketData.GetQuotes(ctx, connect.NewRequest(&feedgatev1.GetQuotesRequest{Broker: upstox, InstrumentKeys: []string{nifty}}))
	if codeOf(err) != connect.CodeUnauthenticated || hasDetail(err) {
		t.Errorf("unary with a revoked key: %v", err)
	}
	s, err := c.MarketData.StreamMarketFeed(ctx, connect.NewRequest(&feedgatev1.StreamMarketFeedRequest{Broker: upstox, InstrumentKeys: []string{nifty}}))
	if err == nil {
		for s.Receive() {
			t.Errorf("new stream with a revoked key got %v", s.Msg())
			break
		}
		err = s.Err()
		s.Close()
	}
	if codeOf(err) != connect.CodeUnauthenticated || hasDetail(err) {
		t.Errorf("stream with a revoked key: %v", err)
	}
	// A stream opened before the revocation ends too, within the recheck
	// interval, with Unauthenticated and no AuthRequired detail: it is the
	// feedgate key, not the broker token, that is gone.
	_, err = open.waitEnd(t, 5*time.Second)
	if codeOf(err) != connect.CodeUnauthenticated || hasDetail(err) {
		t.Errorf("open stream after its key was revoked: %v", err)
	}
}

// TestLoginStateExpires: a login state is refused after its 10-minute
// lifetime, by CompleteLogin and by the browser callback, and a state
// issued for one broker does not complete the other's callback.
func TestLoginStateExpires(t *testing.T) {
	t.Parallel()
	fake := clock.NewFake(time.Now())
	e := gatewaytest.Start(t, gatewaytest.Options{Clock: fake, Args: []string{"--validation-interval", "10000h"}})
	ctx := context.Background()
	c, browser := e.BrowserClients(e.NewUser("stale", false), gatewaytest.Protocols[0])
	login := func() *url.URL {
		lu, err := c.Connection.GetLoginURL(ctx, connect.NewRequest(&feedgatev1.GetLoginURLRequest{Broker: upstox}))
		if err != nil {
			t.Fatal(err)
		}
		return gatewaytest.Approve(t, lu.Msg.Url, "stale")
	}
	loc := login()
	fake.Advance(10*time.Minute + time.Second)
	_, err := c.Connection.CompleteLogin(ctx, connect.NewRequest(&feedgatev1.CompleteLoginRequest{Broker: upstox, Code: loc.Query().Get("code"), State: loc.Query().Get("state")}))
	if codeOf(err) != connect.CodeInvalidArgument || !strings.Contains(err.Error(), "state") || !strings.Contains(err.Error(), "expired") {
		t.Errorf("expired state: %v", err)
	}
	loc = login()
	fake.Advance(10*time.Minute + time.Second)
	res, err := browser.Get(loc.String())
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if l := res.Header.Get("Location"); !strings.Contains(l, "login_error=state") || strings.Contains(l, "connected=") {
		t.Errorf("callback with an expired state redirected to %q", l)
	}
	// An Upstox state on the Fyers callback.
	loc = login()
	cross := e.URL + "/oauth/fyers/callback?auth_code=" + loc.Query().Get("code") + "&state=" + url.QueryEscape(loc.Query().Get("state"))
	res, err = browser.Get(cross)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	// This browser holds no Fyers binding: refused before the state is
	// even looked at.
	if res.StatusCode != http.StatusForbidden {
		t.Errorf("cross-broker callback answered %d %q", res.StatusCode, res.Header.Get("Location"))
	}
	if st := connState(t, c, upstox); st.State == feedgatev1.ConnectionState_CONNECTION_STATE_CONNECTED {
		t.Errorf("connected by a stale or foreign state: %v", st)
	}
}

// TestOversizedRequests: bodies beyond the 1 MiB read limit are refused
// with ResourceExhausted before they are decoded, over both protocols and
// on the stream too; too many or too long keys are InvalidArgument naming
// the field; a huge header is refused by the HTTP server; the gateway
// keeps serving after all of it.
func TestOversizedRequests(t *testing.T) {
	t.Parallel()
	e := gatewaytest.Start(t, gatewaytest.Options{})
	ctx := context.Background()
	long := strings.Repeat("A", 4<<10)
	huge := make([]string, 500) // 2 MiB of keys
	for i := range huge {
		huge[i] = "NSE_EQ|" + long
	}
	for _, p := range gatewaytest.Protocols {
		c := e.Clients(e.NewUser("big-"+p.Name, false), p)
		e.Login(c, upstox, "big-"+p.Name)
		_, err := c.MarketData.GetQuotes(ctx, connect.NewRequest(&feedgatev1.GetQuotesRequest{Broker: upstox, InstrumentKeys: huge}))
		if codeOf(err) != connect.CodeResourceExhausted {
			t.Errorf("%s: 2 MiB GetQuotes: %v, want ResourceExhausted", p.Name, err)
		}
		s, err := c.MarketData.StreamMarketFeed(ctx, connect.NewRequest(&feedgatev1.StreamMarketFeedRequest{Broker: upstox, InstrumentKeys: huge}))
		if err == nil {
			for s.Receive() {
			}
			err = s.Err()
			s.Close()
		}
		if codeOf(err) != connect.CodeResourceExhausted {
			t.Errorf("%s: 2 MiB StreamMarketFeed: %v, want ResourceExhausted", p.Name, err)
		}
		_, err = c.MarketData.GetQuotes(ctx, connect.NewRequest(&feedgatev1.GetQuotesRequest{Broker: upstox, InstrumentKeys: []string{"NSE_EQ|" + long}}))
		if codeOf(err) != connect.CodeInvalidArgument || !strings.Contains(err.Error(), "instrument_keys[0]") {
			t.Errorf("%s: a 4 KiB key: %v", p.Name, err)
		}
		many := make([]string, 2000)
		for i := range many {
			many[i] = nifty
		}
		s, err = c.MarketData.StreamMarketFeed(ctx, connect.NewRequest(&feedgatev1.StreamMarketFeedRequest{Broker: upstox, InstrumentKeys: many}))
		if err == nil {
			for s.Receive() {
			}
			err = s.Err()
			s.Close()
		}
		if codeOf(err) != connect.CodeInvalidArgument || !strings.Contains(err.Error(), "instrument_keys") {
			t.Errorf("%s: 2000 stream keys: %v", p.Name, err)
		}
		if _, err := c.MarketData.GetQuotes(ctx, connect.NewRequest(&feedgatev1.GetQuotesRequest{Broker: upstox, InstrumentKeys: []string{nifty}})); err != nil {
			t.Errorf("%s: the gateway stopped serving: %v", p.Name, err)
		}
	}
	req, _ := http.NewRequest(http.MethodPost, e.URL+"/feedgate.v1.ConnectionService/GetConnectionStatus", strings.NewReader("{}"))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+strings.Repeat("k", 128<<10))
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Errorf("128 KiB header: HTTP %d", res.StatusCode)
	}
}

// TestNoSecretInLogsErrorsMetricsOrStats captures every log line of the
// gateway (debug level, JSON) through a full life: users, logins over the
// RPC and the browser callback, market data, a stream, a refused code, a
// revocation, a validation sweep, a logout, bad keys. It then checks that
// no broker access token, API key, app secret, auth code or the token key
// appears in the logs, in any error a client received, in GET /metrics or
// in the sandbox's stats, and that /metrics names no user.
func TestNoSecretInLogsErrorsMetricsOrStats(t *testing.T) {
	t.Parallel()
	var logs hardening.LogBuffer
	dir := t.TempDir()
	e := gatewaytest.Start(t, gatewaytest.Options{DataDir: dir,
		Logger: slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	ctx := context.Background()
	secrets := map[string]string{
		"admin API key":        e.AdminKey,
		"upstox client secret": sandbox.UpstoxClientSecret,
		"fyers app secret":     sandbox.FyersSecret,
	}
	var errs []string
	note := func(err error) {
		if err != nil {
			errs = append(errs, err.Error())
		}
	}
	key := e.NewUser("leak-alice", false)
	secrets["alice API key"] = key
	c, browser := e.BrowserClients(key, gatewaytest.Protocols[0])
	// Upstox over the RPC; Fyers through the browser callback.
	lu, err := c.Connection.GetLoginURL(ctx, connect.NewRequest(&feedgatev1.GetLoginURLRequest{Broker: upstox}))
	if err != nil {
		t.Fatal(err)
	}
	loc := gatewaytest.Approve(t, lu.Msg.Url, "leak-alice")
	secrets["upstox auth code"] = loc.Query().Get("code")
	_, err = c.Connection.CompleteLogin(ctx, connect.NewRequest(&feedgatev1.CompleteLoginRequest{Broker: upstox, Code: loc.Query().Get("code"), State: loc.Query().Get("state")}))
	if err != nil {
		t.Fatal(err)
	}
	lu, err = c.Connection.GetLoginURL(ctx, connect.NewRequest(&feedgatev1.GetLoginURLRequest{Broker: fyers}))
	if err != nil {
		t.Fatal(err)
	}
	loc = gatewaytest.Approve(t, lu.Msg.Url, "leak-alice")
	secrets["fyers auth code"] = loc.Query().Get("auth_code")
	res, err := browser.Get(loc.String())
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	// The broker tokens, as feedgate holds them.
	k, err := seal.ReadKeyFile(filepath.Join(dir, seal.KeyFileName))
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := os.ReadFile(filepath.Join(dir, seal.KeyFileName))
	secrets["token key"] = strings.TrimSpace(string(raw))
	sealer, _ := seal.New(k)
	u, _ := e.G.Store().UserByName(ctx, "leak-alice")
	for _, b := range broker.Kinds {
		conn, err := e.G.Store().GetConnection(ctx, u.ID, b)
		if err != nil {
			t.Fatalf("%s: %v", b, err)
		}
		tok, err := sealer.Open(conn.SealedToken, u.ID+"/"+string(b))
		if err != nil {
			t.Fatal(err)
		}
		secrets[string(b)+" access token"] = string(tok)
	}

	_, err = c.MarketData.GetOptionChain(ctx, connect.NewRequest(&feedgatev1.GetOptionChainRequest{Broker: upstox, UnderlyingKey: nifty, ExpiryDate: nearestExpiry(t, e)}))
	note(err)
	_, err = c.MarketData.GetQuotes(ctx, connect.NewRequest(&feedgatev1.GetQuotesRequest{Broker: fyers, InstrumentKeys: []string{"NSE:NIFTY50-INDEX"}}))
	note(err)
	f := openFeed(t, c, upstox, []string{nifty}, feedgatev1.FeedMode_FEED_MODE_FULL)
	f.next(t, 5*time.Second, isTicks)
	// A refused code, a bad key, a key with a typo.
	_, err = c.Connection.CompleteLogin(ctx, connect.NewRequest(&feedgatev1.CompleteLoginRequest{Broker: upstox, Code: "WRONG", State: "nope"}))
	note(err)
	_, err = e.Clients(key+"x", gatewaytest.Protocols[1]).Connection.GetConnectionStatus(ctx, connect.NewRequest(&feedgatev1.GetConnectionStatusRequest{}))
	note(err)
	e.Revoke("upstox", "leak-alice")
	_, err = c.MarketData.GetQuotes(ctx, connect.NewRequest(&feedgatev1.GetQuotesRequest{Broker: upstox, InstrumentKeys: []string{nifty}}))
	authRequired(t, err)
	note(err)
	_, err = f.waitEnd(t, 5*time.Second)
	note(err)
	admin := e.Clients(e.AdminKey, gatewaytest.Protocols[0])
	_, err = admin.Admin.ValidateAllTokens(ctx, connect.NewRequest(&feedgatev1.ValidateAllTokensRequest{}))
	note(err)
	_, err = c.Connection.Disconnect(ctx, connect.NewRequest(&feedgatev1.DisconnectRequest{Broker: fyers}))
	note(err)

	get := func(u string) string {
		res, err := http.Get(u)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		return string(b)
	}
	metricsText := get(e.URL + "/metrics")
	stats := get(e.SandboxURL() + "/sandbox/stats")
	logText := logs.String()
	if !strings.Contains(logText, "broker connection connected") {
		t.Fatal("no log captured")
	}
	for where, text := range map[string]string{"logs": logText, "client errors": strings.Join(errs, "\n"), "/metrics": metricsText, "sandbox stats": stats} {
		if leaks := hardening.Leaks(text, secrets); len(leaks) > 0 {
			t.Errorf("%s hold: %v", where, leaks)
		}
	}
	if leaks := hardening.Leaks(metricsText, map[string]string{"user id": u.ID, "user name": "leak-alice"}); len(leaks) > 0 {
		t.Errorf("/metrics names a user: %v", leaks)
	}
	t.Logf("%d log bytes, %d client errors, %d metrics bytes checked for %d secrets", len(logText), len(errs), len(metricsText), len(secrets))
}

// TestDashboardHeaders checks what the gateway sends for "/" once the web
// dashboard is mounted (skipped while it is not): a CSP that forbids
// framing, nosniff, no referrer, GET/HEAD only, and no file outside the
// embedded build.
func TestDashboardHeaders(t *testing.T) {
	t.Parallel()
	e := gatewaytest.Start(t, gatewaytest.Options{})
	res, err := http.Get(e.URL + "/")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode == http.StatusNotFound {
		t.Skip("no dashboard at / on this gateway")
	}
	h := res.Header
	if res.StatusCode != http.StatusOK || !strings.HasPrefix(h.Get("Content-Type"), "text/html") {
		t.Fatalf("GET /: %d %q", res.StatusCode, h.Get("Content-Type"))
	}
	if csp := h.Get("Content-Security-Policy"); !strings.Contains(csp, "frame-ancestors 'none'") || !strings.Contains(csp, "default-src 'self'") {
		t.Errorf("CSP %q", csp)
	}
	for k, v := range map[string]string{"X-Content-Type-Options": "nosniff", "X-Frame-Options": "DENY", "Referrer-Policy": "no-referrer"} {
		if h.Get(k) != v {
			t.Errorf("%s: %q, want %q", k, h.Get(k), v)
		}
	}
	res, err = http.Post(e.URL+"/", "text/plain", bytes.NewReader(nil))
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("POST /: %d", res.StatusCode)
	}
	for _, p := range []string{"/../../../../etc/passwd", "/%2e%2e/%2e%2e/etc/passwd", "/..%2f..%2fgo.mod"} {
		res, err := http.Get(e.URL + p)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if strings.Contains(string(b), "root:") || strings.Contains(string(b), "module github.com") {
			t.Errorf("GET %s served a file outside the dashboard", p)
		}
		if res.StatusCode == http.StatusOK && !bytes.Equal(b, body) {
			t.Errorf("GET %s: 200 with something other than the dashboard", p)
		}
	}
}
