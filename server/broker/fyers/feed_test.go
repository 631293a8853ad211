package fyers

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"
	"time"

	"github.com/feedgate/feedgate/server/broker"
	"github.com/feedgate/feedgate/server/sandbox"
	"github.com/feedgate/feedgate/server/secret"
)

func TestPollInterval(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		n    int
		want time.Duration
	}{{0, time.Second}, {50, time.Second}, {51, 1200 * time.Millisecond}, {500, 6 * time.Second}, {5000, 60 * time.Second}} {
		if got := PollInterval(c.n); got != c.want {
			t.Errorf("PollInterval(%d) = %v, want %v", c.n, got, c.want)
		}
	}
}

func TestEpochMs(t *testing.T) {
	t.Parallel()
	for raw, want := range map[string]int64{`"1700000000"`: 1_700_000_000_000, `1700000000`: 1_700_000_000_000, `null`: 0, ``: 0, `"x"`: 0} {
		if got := epochMs([]byte(raw)); got != want {
			t.Errorf("epochMs(%s) = %d, want %d", raw, got, want)
		}
	}
}

// sandboxLogin drives the sandbox's Fyers OAuth as account.
func sandboxLogin(t *testing.T, base, account string) (*Client, broker.Credentials) {
	t.Helper()
	c, err := New(Config{AppID: sandbox.FyersAppID, Secret: secret.New(sandbox.FyersSecret),
		RedirectURL: "http://127.0.0.1/cb", BaseURL: base + "/fyers"})
	if err != nil {
		t.Fatal(err)
	}
	hc := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := hc.Get(c.LoginURL("st") + "&account=" + account)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	loc, err := url.Parse(resp.Header.Get("Location"))
	if err != nil {
		t.Fatal(err)
	}
	code := loc.Query().Get("auth_code")
	if code == "" {
		code = loc.Query().Get("code")
	}
	tok, err := c.ExchangeCode(context.Background(), code)
	if err != nil {
		t.Fatal(err)
	}
	return c, broker.Credentials{UserID: "u-" + account, Token: tok.Access}
}

func TestPollFeedAgainstSandbox(t *testing.T) {
	t.Parallel()
	sb, err := sandbox.New(sandbox.Config{})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(sb.Handler())
	defer srv.Close()
	defer sb.Close()
	c, cr := sandboxLogin(t, srv.URL, "alice")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	fc, err := c.DialFeed(ctx, cr, broker.FeedOptions{PollInterval: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer fc.Close()
	keys := []string{"NSE:NIFTY50-INDEX", "NSE:NIFTYBANK-INDEX"}
	if err := fc.Subscribe(ctx, keys, broker.ModeLTPC); err != nil {
		t.Fatal(err)
	}
	ticks, err := fc.Next(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(ticks) != 2 {
		t.Fatalf("first poll gave %d ticks, want one per symbol: %+v", len(ticks), ticks)
	}
	for _, tk := range ticks {
		if tk.LTP <= 0 || tk.BrokerTimeUnixNanos == 0 {
			t.Fatalf("implausible tick %+v", tk)
		}
	}
	if err := fc.Unsubscribe(ctx, keys[1:]); err != nil {
		t.Fatal(err)
	}
	sb.Revoke(sandbox.Fyers, "alice")
	for {
		_, err = fc.Next(ctx)
		if err != nil {
			break
		}
	}
	if !broker.IsAuthDead(err) {
		t.Fatalf("Next after revoke = %v, want auth dead", err)
	}
	fc.Close()
	if _, err := fc.Next(ctx); err == nil {
		t.Fatal("Next after Close returned no error")
	}
}
