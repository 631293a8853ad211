package upstox

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/feedgate/feedgate/server/broker"
)

// classifySeeds are the response shapes of TestClassification (docs/brokers/upstox.md
// §4) plus success bodies of every call, as (status, Retry-After,
// body).
func classifySeeds(f *testing.F) {
	seeds := []struct {
		status int
		ra     string
		body   string
	}{
		{401, "", `{"status":"error","errors":[{"errorCode":"UDAPI100050","message":"Invalid token used to access API","propertyPath":null,"invalidValue":null}]}`},
		{401, "", problemBody("UDAPI100050", "", true)},
		{401, "", ``},
		{400, "", problemBody("UDAPI100050", "", false)},
		{403, "", problemBody("UDAPI100067", "", false)},
		{429, "1", problemBody("UDAPI10005", "", false)},
		{200, "", problemBody("UDAPI10005", "", true)},
		{400, "", problemBody("UDAPI1009", "", false)},
		{400, "", problemBody("UDAPI1011", "", true)},
		{400, "", problemBody("UDAPI100036", "expiry_date", false)},
		{423, "", problemBody("UDAPI100072", "", false)},
		{404, "", problemBody("UDAPI10000", "", false)},
		{500, "", problemBody("UDAPI100500", "", false)},
		{503, "", `<html>Service Unavailable</html>`},
		{200, "", `<html>` + testToken + `</html>`},
		{200, "", `{"status":"success","data":{"user_id":"SB1","user_name":"A"}}`},
		{200, "", `{"access_token":"` + testToken + `","user_id":"SB1"}`},
		{200, "", `{"status":"success","data":{"authorized_redirect_uri":"wss://x/feed"}}`},
		{200, "", `{"status":"success","data":{"NSE_INDEX:Nifty 50":{"last_price":1.5,"instrument_token":"NSE_INDEX|Nifty 50"}}}`},
		{200, "", chainBody(3)},
		{200, "", `{"status":"success","data":[{"strike_price":1e308,"call_options":null,"put_options":{}}]}`},
		{200, "", `{"status":"error","errors":[]}`},
		{200, "", `{"status":"success","errors":[{"errorCode":"UDAPI100050"}]}`},
		{502, "Wed, 21 Oct 2015 07:28:00 GMT", `{"errors":[{"error_code":"UDAPI100050","property_path":"instrument_key"}]}`},
	}
	for _, s := range seeds {
		f.Add(s.status, s.ra, []byte(s.body))
	}
}

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

// hasCode reports whether body's error envelope carries code.
func hasCode(body []byte, code string) bool {
	var env envelope[json.RawMessage]
	if json.Unmarshal(body, &env) != nil {
		return false
	}
	for _, p := range env.Errors {
		if p.code() == code {
			return true
		}
	}
	return false
}

// FuzzClassify feeds arbitrary statuses, Retry-After headers and bodies to
// the Upstox error table and, through a fake transport, to every call the
// adapter makes. It proves: nothing panics; every non-2xx is classified;
// a 401 or a UDAPI100050 answer is auth-dead and auth-dead is never
// retryable nor retried (exactly one call); bad input is never retried;
// no operation makes more than broker.MaxAttempts calls; a rate-limited
// failure never carries a negative wait (Retry-After: 0 is taken at its
// word); errors never hold the token.
func FuzzClassify(f *testing.F) {
	classifySeeds(f)
	f.Fuzz(func(t *testing.T, status int, retryAfter string, body []byte) {
		status = 100 + (status%500+500)%500 // 100..599
		r := &broker.Response{Status: status, Header: http.Header{"Retry-After": {retryAfter}}, Body: body}
		e := classify(r)
		switch {
		case status >= 200 && status <= 299:
			if e != nil {
				t.Fatalf("2xx classified before decoding: %+v", e)
			}
		case e == nil:
			t.Fatalf("HTTP %d not classified", status)
		case (status == http.StatusUnauthorized || hasCode(body, "UDAPI100050")) && e.Class != broker.ClassAuthDead:
			t.Fatalf("dead-token answer (HTTP %d) classified %v", status, e.Class)
		}
		if e != nil && e.Class == broker.ClassAuthDead && e.Class.Retryable() {
			t.Fatal("auth-dead is retryable")
		}

		ft := &fakeTransport{status: status, header: http.Header{"Retry-After": {retryAfter}, "Content-Type": {"application/json"}}, body: string(body)}
		c := newTestClient(t, ft, time.Now())
		fakeTime(c.Caller())
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		calls := []struct {
			name string
			run  func() error
		}{
			{"profile", func() error { _, err := c.Profile(ctx, cred); return err }},
			{"option chain", func() error {
				_, err := c.OptionChain(ctx, cred, "NSE_INDEX|Nifty 50", "2026-11-24")
				return err
			}},
			{"quotes", func() error {
				_, err := c.Quotes(ctx, cred, []string{"NSE_INDEX|Nifty 50", "NSE_EQ|INE002A01018"})
				return err
			}},
			{"exchange code", func() error { _, err := c.ExchangeCode(ctx, "code-1"); return err }},
			{"feed authorize", func() error { _, err := c.authorizeFeed(ctx, cred); return err }},
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
			if be.Class == broker.ClassRateLimited && be.RetryAfter < 0 {
				t.Fatalf("%s: rate limited with RetryAfter %v", call.name, be.RetryAfter)
			}
			if call.name != "exchange code" && hasCode(body, "UDAPI100050") && be.Class != broker.ClassAuthDead {
				t.Fatalf("%s: dead-token envelope under HTTP %d classified %v", call.name, status, be.Class)
			}
			if strings.Contains(err.Error(), testToken) {
				t.Fatalf("%s: error holds the token: %v", call.name, err)
			}
		}
	})
}
