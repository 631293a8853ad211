package fyers

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/feedgate/feedgate/server/broker"
)

// fakeTime makes c sleep on a fake clock that its Now reads, so waits
// (Retry-After, backoff, the per-user rate limiter) take no real time but
// still run out the caller's deadline.
func fakeTime(c *broker.Caller) {
	var mu sync.Mutex
	now := time.Now()
	c.Now = func() time.Time {
		mu.Lock()
		defer mu.Unlock()
		return now
	}
	c.Sleep = func(ctx context.Context, d time.Duration) error {
		mu.Lock()
		now = now.Add(d)
		mu.Unlock()
		return ctx.Err()
	}
}

// deadCode returns the Fyers dead-token code (-8, -15, -16, -17) a body
// carries in a failed status ("s" not "ok"), or 0.
func deadCode(body []byte) int {
	var s status
	if json.Unmarshal(body, &s) != nil || s.S == "ok" {
		return 0
	}
	switch s.Code {
	case -8, -15, -16, -17:
		return s.Code
	}
	return 0
}

// FuzzClassify feeds arbitrary statuses, Retry-After headers and bodies to
// the Fyers error table and, through a fake transport, to every call the
// adapter makes. It proves: nothing panics; every non-2xx is classified;
// 401, 403 and the dead-token codes -8/-15/-16/-17 are auth-dead, and
// auth-dead is never retryable nor retried (exactly one call); bad input is
// never retried; no operation makes more than broker.MaxAttempts calls; a
// rate-limited failure never carries a negative wait; errors never hold the
// token.
func FuzzClassify(f *testing.F) {
	for _, s := range []struct {
		status int
		ra     string
		body   string
	}{
		{401, "", errBody(-16, "Could not authenticate the user")},
		{401, "", errBody(-8, "Your token has expired")},
		{400, "", errBody(-15, "Please provide valid token")},
		{200, "", errBody(-17, "token invalid or expired")},
		{401, "", ``},
		{403, "", errBody(-99, "forbidden")},
		{429, "60", errBody(-429, "rate limit")},
		{200, "60", errBody(-429, "rate limit")},
		{400, "", errBody(-50, "Invalid params")},
		{400, "", errBody(-300, "Invalid symbol")},
		{400, "", errBody(-352, "Invalid App ID")},
		{500, "", errBody(-500, "internal")},
		{502, "", `<html>bad gateway</html>`},
		{200, "", errBody(-99, "rejected")},
		{200, "", `{"code":200,"message":"","s":"error"}`},
		{200, "", `<html>` + testToken},
		{200, "", `{"s":"ok","code":200,"data":{"fy_id":"XA00001","name":"ALICE"}}`},
		{200, "", `{"s":"ok","code":200,"access_token":"a.eyJleHAiOjE3NzI1MzIwMDAsImZ5X2lkIjoiWEEwMDAwMSJ9.c"}`},
		{200, "", `{"s":"ok","code":200,"d":[{"n":"NSE:SBIN-EQ","s":"ok","v":{"lp":1.5,"tt":"1700000000"}},{"n":"NSE:NIFTY50-INDEX","s":"error"}]}`},
		{200, "", chainBody(2)},
		{200, "", `{"s":"error","code":-16,"data":"x","d":"y"}`},
	} {
		f.Add(s.status, s.ra, []byte(s.body))
	}
	f.Fuzz(func(t *testing.T, status int, retryAfter string, body []byte) {
		status = 100 + (status%500+500)%500 // 100..599
		e := classify(&broker.Response{Status: status, Header: http.Header{"Retry-After": {retryAfter}}, Body: body})
		switch {
		case status >= 200 && status <= 299:
			if e != nil {
				t.Fatalf("2xx classified before decoding: %+v", e)
			}
		case e == nil:
			t.Fatalf("HTTP %d not classified", status)
		case (status == 401 || status == 403 || deadCode(body) != 0) && e.Class != broker.ClassAuthDead:
			t.Fatalf("dead-token answer (HTTP %d) classified %v", status, e.Class)
		}
		if e != nil && e.Class == broker.ClassAuthDead && e.Class.Retryable() {
			t.Fatal("auth-dead is retryable")
		}

		ft := &fakeTransport{status: status, header: http.Header{"Retry-After": {retryAfter}}, body: string(body)}
		c := newTestClient(t, ft)
		fakeTime(c.Caller())
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		calls := []struct {
			name string
			run  func() error
		}{
			{"profile", func() error { _, err := c.Profile(ctx, cred); return err }},
			{"option chain", func() error { _, err := c.OptionChain(ctx, cred, "NSE:NIFTY50-INDEX", "2026-03-03"); return err }},
			{"quotes", func() error { _, err := c.Quotes(ctx, cred, []string{"NSE:SBIN-EQ", "NSE:NIFTY50-INDEX"}); return err }},
			{"exchange code", func() error { _, err := c.ExchangeCode(ctx, "code-1"); return err }},
			{"logout", func() error { return c.Logout(ctx, cred) }},
		}
		for _, call := range calls {
			ft.mu.Lock()
			ft.reqs = nil
			ft.mu.Unlock()
			err := call.run()
			ft.mu.Lock()
			n := len(ft.reqs)
			ft.mu.Unlock()
			if n > broker.MaxAttempts {
				t.Fatalf("%s: %d calls, more than %d", call.name, n, broker.MaxAttempts)
			}
			if err == nil {
				if status < 200 || status > 299 {
					t.Fatalf("%s: HTTP %d accepted", call.name, status)
				}
				continue
			}
			be, ok := broker.AsError(err)
			if !ok {
				t.Fatalf("%s: %T %v is not a *broker.Error", call.name, err, err)
			}
			if (be.Class == broker.ClassAuthDead || be.Class == broker.ClassBadInput) && n != 1 {
				t.Fatalf("%s: %v answer was retried (%d calls)", call.name, be.Class, n)
			}
			if call.name != "exchange code" && deadCode(body) != 0 && be.Class != broker.ClassAuthDead {
				t.Fatalf("%s: dead-token body under HTTP %d classified %v", call.name, status, be.Class)
			}
			if be.Class == broker.ClassRateLimited && be.RetryAfter < 0 {
				t.Fatalf("%s: rate limited with RetryAfter %v", call.name, be.RetryAfter)
			}
			if strings.Contains(err.Error(), testToken) {
				t.Fatalf("%s: error holds the token: %v", call.name, err)
			}
		}
	})
}

// FuzzJWTClaims feeds arbitrary access tokens to the JWT payload reader the
// code exchange uses for the token's expiry: it never panics, and an expiry
// it reports is a real time after 1970.
func FuzzJWTClaims(f *testing.F) {
	enc := base64.RawURLEncoding.EncodeToString
	f.Add("a." + enc([]byte(`{"exp":1772532000,"fy_id":"XA00001"}`)) + ".c")
	f.Add("a." + enc([]byte(`{"exp":-1}`)) + ".c")
	f.Add("a." + enc([]byte(`{"exp":1e300}`)) + ".c")
	f.Add("a.." + enc([]byte(`{}`)))
	f.Add("not a jwt")
	f.Fuzz(func(t *testing.T, tok string) {
		c, ok := jwtClaims(tok)
		if !ok {
			return
		}
		if exp := c.expiry(); !exp.IsZero() && exp.Unix() <= 0 {
			t.Fatalf("expiry %v from %q", exp, tok)
		}
	})
}

// FuzzEpochMs feeds arbitrary "tt" values of the quotes poller: never a
// panic.
func FuzzEpochMs(f *testing.F) {
	for _, s := range []string{`"1700000000"`, `1700000000`, `null`, `""`, `"1e400"`, `-5`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		_ = epochMs(json.RawMessage(raw))
	})
}
