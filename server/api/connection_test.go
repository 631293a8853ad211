package api_test

import (
	"context"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	feedgatev1 "github.com/feedgate/feedgate/gen/go/feedgate/v1"
	"github.com/feedgate/feedgate/server/broker"
	"github.com/feedgate/feedgate/server/gateway/gatewaytest"
	"github.com/feedgate/feedgate/server/loginbind"
)

var noRedirect = &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}

func TestBrowserCallbackCompletesLogin(t *testing.T) {
	t.Parallel()
	e := gatewaytest.Start(t, gatewaytest.Options{})
	ctx := context.Background()
	for _, b := range []feedgatev1.Broker{upstox, fyers} {
		c, browser := e.BrowserClients(e.NewUser("cb-"+brokerName(b), false), gatewaytest.Protocols[0])
		lu, err := c.Connection.GetLoginURL(ctx, connect.NewRequest(&feedgatev1.GetLoginURLRequest{Broker: b}))
		if err != nil {
			t.Fatal(err)
		}
		if lu.Msg.State == "" || !strings.Contains(lu.Msg.Url, url.QueryEscape(lu.Msg.State)) && !strings.Contains(lu.Msg.Url, lu.Msg.State) {
			t.Fatalf("login URL %q does not carry the state", lu.Msg.Url)
		}
		cb := gatewaytest.Approve(t, lu.Msg.Url, "browser-"+brokerName(b))
		if !strings.HasPrefix(cb.String(), e.URL+"/oauth/"+brokerName(b)+"/callback") {
			t.Fatalf("broker redirected to %s, not the gateway callback", cb)
		}
		res, err := browser.Get(cb.String())
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		loc := res.Header.Get("Location")
		if res.StatusCode != http.StatusSeeOther || loc != "/#/auth?connected="+brokerName(b) {
			t.Fatalf("callback answered %d %q", res.StatusCode, loc)
		}
		st, err := c.Connection.GetConnectionStatus(ctx, connect.NewRequest(&feedgatev1.GetConnectionStatusRequest{Broker: b}))
		if err != nil || len(st.Msg.Connections) != 1 || st.Msg.Connections[0].State != feedgatev1.ConnectionState_CONNECTION_STATE_CONNECTED {
			t.Fatalf("status after callback: %v, %v", st, err)
		}
		// The same callback again: the state was single-use. (The
		// browser's binding cookie was cleared on success: put it back.)
		u, _ := url.Parse(e.URL)
		browser.Jar.SetCookies(u, []*http.Cookie{loginbind.Cookie(kindOf(b), lu.Msg.State, time.Now().Add(time.Minute), false)})
		res, err = browser.Get(cb.String())
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if loc := res.Header.Get("Location"); !strings.HasPrefix(loc, "/#/auth?") || !strings.Contains(loc, "login_error=state_unknown") {
			t.Errorf("replayed callback: %q", loc)
		}
	}
	// A callback never redirects off the dashboard, whatever it is given.
	res, err := noRedirect.Get(e.URL + "/oauth/upstox/callback?code=x&state=y&redirect_uri=https://evil.example&next=//evil.example&error=x")
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if loc := res.Header.Get("Location"); !strings.HasPrefix(loc, "/#/auth?") || strings.Contains(loc, "evil") {
		t.Errorf("callback redirected to %q", loc)
	}
}

func kindOf(b feedgatev1.Broker) broker.Kind {
	if b == fyers {
		return broker.Fyers
	}
	return broker.Upstox
}

func TestLoginStateIsSingleUseBoundAndChecked(t *testing.T) {
	t.Parallel()
	e := gatewaytest.Start(t, gatewaytest.Options{})
	for _, p := range gatewaytest.Protocols {
		t.Run(p.Name, func(t *testing.T) {
			ctx := context.Background()
			alice := e.Clients(e.NewUser("st-alice-"+p.Name, false), p)
			bob := e.Clients(e.NewUser("st-bob-"+p.Name, false), p)
			lu, err := alice.Connection.GetLoginURL(ctx, connect.NewRequest(&feedgatev1.GetLoginURLRequest{Broker: upstox}))
			if err != nil {
				t.Fatal(err)
			}
			if lu.Msg.ExpiresAt.AsTime().Before(time.Now().Add(5 * time.Minute)) {
				t.Errorf("state expires too soon: %v", lu.Msg.ExpiresAt.AsTime())
			}
			loc := gatewaytest.Approve(t, lu.Msg.Url, "st-alice-"+p.Name)
			code, state := loc.Query().Get("code"), loc.Query().Get("state")
			complete := func(c gatewaytest.Clients, b feedgatev1.Broker, code, state string) error {
				_, err := c.Connection.CompleteLogin(ctx, connect.NewRequest(&feedgatev1.CompleteLoginRequest{Broker: b, Code: code, State: state}))
				return err
			}
			cases := []struct {
				name  string
				err   error
				field string
			}{
				// Bob cannot complete a login with Alice's state: no login CSRF,
				// no code injection into another account.
				{"another user's state", complete(bob, upstox, code, state), "state"},
				{"state of another broker", complete(alice, fyers, code, state), "state"},
				{"made-up state", complete(alice, upstox, code, "forged"), "state"},
				{"no state", complete(alice, upstox, code, ""), "state"},
				{"no code", complete(alice, upstox, "", state), "code"},
			}
			for _, c := range cases {
				if connect.CodeOf(c.err) != connect.CodeInvalidArgument || !strings.Contains(c.err.Error(), c.field) {
					t.Errorf("%s: %v, want InvalidArgument naming %s", c.name, c.err, c.field)
				}
			}
			if err := complete(alice, upstox, code, state); err != nil {
				t.Fatalf("the rightful login failed: %v", err)
			}
			if err := complete(alice, upstox, code, state); connect.CodeOf(err) != connect.CodeInvalidArgument || !strings.Contains(err.Error(), "state") {
				t.Errorf("reused state: %v", err)
			}
			// A fresh state with a code the broker already consumed.
			lu2, _ := alice.Connection.GetLoginURL(ctx, connect.NewRequest(&feedgatev1.GetLoginURLRequest{Broker: upstox}))
			u2, _ := url.Parse(lu2.Msg.Url)
			if err := complete(alice, upstox, code, u2.Query().Get("state")); connect.CodeOf(err) != connect.CodeInvalidArgument || !strings.Contains(err.Error(), "code") {
				t.Errorf("used code: %v", err)
			}
		})
	}
}

func TestDisconnectLogsOutAndForgetsTheToken(t *testing.T) {
	t.Parallel()
	e := gatewaytest.Start(t, gatewaytest.Options{})
	ctx := context.Background()
	expiry := nearestExpiry(t, e)
	for _, p := range gatewaytest.Protocols {
		acct := "dc-" + p.Name
		c := e.Clients(e.NewUser(acct, false), p)
		e.Login(c, upstox, acct)
		res, err := c.Connection.Disconnect(ctx, connect.NewRequest(&feedgatev1.DisconnectRequest{Broker: upstox}))
		if err != nil {
			t.Fatal(err)
		}
		conn := res.Msg.Connection
		if !res.Msg.BrokerLogoutConfirmed || conn.State != feedgatev1.ConnectionState_CONNECTION_STATE_DISCONNECTED ||
			conn.Reason != feedgatev1.DisconnectReason_DISCONNECT_REASON_LOGGED_OUT || conn.DisconnectedAt == nil {
			t.Fatalf("after Disconnect: %v", res.Msg)
		}
		if n := e.Calls("upstox", "/v2/logout", 200, acct); n != 1 {
			t.Errorf("broker logout calls = %d, want 1", n)
		}
		before := e.Calls("upstox", "/", 0, acct)
		_, err = c.MarketData.GetOptionChain(ctx, connect.NewRequest(&feedgatev1.GetOptionChainRequest{Broker: upstox, UnderlyingKey: "NSE_INDEX|Nifty 50", ExpiryDate: expiry}))
		ar := authRequired(t, err)
		if ar.Reason != feedgatev1.DisconnectReason_DISCONNECT_REASON_LOGGED_OUT || ar.Broker != upstox || !strings.Contains(ar.LoginUrl, "/v2/login/authorization/dialog") {
			t.Errorf("AuthRequired = %v", ar)
		}
		if after := e.Calls("upstox", "/", 0, acct); after != before {
			t.Errorf("a call after logout reached the broker (%d calls)", after-before)
		}
	}
}

func TestRealBrokerModeUsesRealHosts(t *testing.T) {
	t.Parallel()
	e := gatewaytest.Start(t, gatewaytest.Options{
		Args: []string{"--upstox-client-id", "my-upstox-key", "--fyers-app-id", "ABCD-100", "--public-url", "https://feedgate.example.com"},
		Env:  map[string]string{"FEEDGATE_UPSTOX_CLIENT_SECRET": "upstox-secret-value", "FEEDGATE_FYERS_SECRET": "fyers-secret-value"},
	})
	if e.G.Sandbox() != nil {
		t.Error("the sandbox runs although both brokers have real credentials")
	}
	c := e.Clients(e.NewUser("real", false), gatewaytest.Protocols[0])
	for b, want := range map[feedgatev1.Broker]string{
		upstox: "https://api.upstox.com/v2/login/authorization/dialog?",
		fyers:  "https://api-t1.fyers.in/api/v3/generate-authcode?",
	} {
		lu, err := c.Connection.GetLoginURL(context.Background(), connect.NewRequest(&feedgatev1.GetLoginURLRequest{Broker: b}))
		if err != nil {
			t.Fatal(err)
		}
		u, _ := url.Parse(lu.Msg.Url)
		if !strings.HasPrefix(lu.Msg.Url, want) || u.Query().Get("redirect_uri") != "https://feedgate.example.com/oauth/"+brokerName(b)+"/callback" {
			t.Errorf("%v login URL = %s", b, lu.Msg.Url)
		}
		if strings.Contains(lu.Msg.Url, "secret-value") {
			t.Error("a secret is in the login URL")
		}
	}
}
