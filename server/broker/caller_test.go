package broker_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/feedgate/feedgate/server/broker"
	"github.com/feedgate/feedgate/server/ratelimit"
)

// reply is one scripted answer of the fake transport; err makes it a
// transport failure.
type reply struct {
	status int
	header http.Header
	body   string
	err    error
}

// script is a fake http.RoundTripper answering from a list; the last reply
// repeats.
type script struct {
	mu      sync.Mutex
	replies []reply
	calls   int
}

func (s *script) RoundTrip(r *http.Request) (*http.Response, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	rp := s.replies[min(s.calls, len(s.replies)-1)]
	s.calls++
	if rp.err != nil {
		return nil, rp.err
	}
	h := rp.header
	if h == nil {
		h = http.Header{}
	}
	return &http.Response{StatusCode: rp.status, Header: h, Body: io.NopCloser(strings.NewReader(rp.body)), Request: r}, nil
}

func (s *script) n() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.calls
}

// fakeClock is a clock whose Sleep advances time at once.
type fakeClock struct {
	mu    sync.Mutex
	t     time.Time
	slept time.Duration
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Sleep(ctx context.Context, d time.Duration) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
	c.slept += d
	return nil
}

// testClassify is a minimal table: 401 auth dead, 400 bad input, 429 rate
// limited, 2xx success, the rest upstream.
func testClassify(r *broker.Response) *broker.Error {
	switch {
	case r.Status >= 200 && r.Status < 300:
		return nil
	case r.Status == 401:
		return &broker.Error{Class: broker.ClassAuthDead}
	case r.Status == 400:
		return &broker.Error{Class: broker.ClassBadInput}
	case r.Status == 429:
		return &broker.Error{Class: broker.ClassRateLimited}
	}
	return &broker.Error{Class: broker.ClassUpstream}
}

const testToken = "tok-SECRET-c4f3b4b3"

type fixture struct {
	caller  *broker.Caller
	tr      *script
	clock   *fakeClock
	attempt []int
}

func newFixture(replies ...reply) *fixture {
	f := &fixture{tr: &script{replies: replies}, clock: &fakeClock{t: time.Now()}}
	var mu sync.Mutex
	f.caller = &broker.Caller{
		Broker:     broker.Upstox,
		Classify:   testClassify,
		HTTPClient: &http.Client{Transport: f.tr},
		Now:        f.clock.Now,
		Sleep:      f.clock.Sleep,
		Jitter:     func(c time.Duration) time.Duration { return c - 1 }, // worst case
		OnAttempt: func(op string, n int) {
			mu.Lock()
			f.attempt = append(f.attempt, n)
			mu.Unlock()
		},
	}
	return f
}

func (f *fixture) do(ctx context.Context) error {
	return f.caller.Do(ctx, broker.Request{
		Op: "test", Method: http.MethodGet, URL: "http://broker.test/x?k=v",
		Header: http.Header{"Authorization": {"Bearer " + testToken}}, UserID: "alice",
	}, func(b []byte) error {
		var v map[string]any
		return json.Unmarshal(b, &v)
	})
}

func ctxTimeout(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func asError(t *testing.T, err error) *broker.Error {
	t.Helper()
	be, ok := broker.AsError(err)
	if !ok {
		t.Fatalf("error %v (%T) is not a *broker.Error", err, err)
	}
	if strings.Contains(be.Error(), testToken) || strings.Contains(be.Error(), "SECRET") {
		t.Fatalf("error leaks the token: %s", be.Error())
	}
	return be
}

var (
	ok200  = reply{status: 200, body: `{"status":"success"}`}
	err503 = reply{status: 503, body: `<html>down ` + testToken + `</html>`}
)

func TestRetryPolicy(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		replies   []reply
		timeout   time.Duration
		wantCalls int
		wantClass broker.Class // when wantErr
		wantErr   bool
	}{
		{"two 503 then success", []reply{err503, err503, ok200}, 10 * time.Second, 3, 0, false},
		{"503 streak", []reply{err503}, 10 * time.Second, 3, broker.ClassUpstream, true},
		{"transport errors retried", []reply{{err: errors.New("connection reset")}, ok200}, 10 * time.Second, 2, 0, false},
		{"401 not retried", []reply{{status: 401, body: `{}`}, ok200}, 10 * time.Second, 1, broker.ClassAuthDead, true},
		{"400 not retried", []reply{{status: 400, body: `{}`}, ok200}, 10 * time.Second, 1, broker.ClassBadInput, true},
		{"404 not retried", []reply{{status: 404, body: `{}`}, ok200}, 10 * time.Second, 1, broker.ClassUpstream, true},
		{"undecodable 2xx not retried", []reply{{status: 200, body: `<html>` + testToken}, ok200}, 10 * time.Second, 1, broker.ClassUpstream, true},
		// Worst-case jitter: 100ms, then 200ms which passes a 250ms deadline.
		{"backoff stops at the deadline", []reply{err503}, 250 * time.Millisecond, 2, broker.ClassUpstream, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f := newFixture(tt.replies...)
			ctx := ctxTimeout(t, tt.timeout)
			dl, _ := ctx.Deadline()
			err := f.do(ctx)
			if got := f.tr.n(); got != tt.wantCalls {
				t.Errorf("calls = %d, want %d", got, tt.wantCalls)
			}
			if len(f.attempt) != tt.wantCalls {
				t.Errorf("OnAttempt saw %v", f.attempt)
			}
			if f.clock.Now().After(dl) {
				t.Errorf("slept past the deadline: %s", f.clock.slept)
			}
			if !tt.wantErr {
				if err != nil {
					t.Fatalf("err = %v", err)
				}
				return
			}
			be := asError(t, err)
			if be.Class != tt.wantClass || be.Attempts != tt.wantCalls || be.Broker != broker.Upstox || be.Op != "test" {
				t.Errorf("err = %+v", be)
			}
		})
	}
}

func TestRateLimitedRetryAfter(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		header    http.Header
		timeout   time.Duration
		wantCalls int
		wantWait  time.Duration
		wantErr   bool
	}{
		{"Retry-After fits", http.Header{"Retry-After": {"1"}}, 5 * time.Second, 2, time.Second, false},
		{"X-Retry-After-Ms preferred", http.Header{"Retry-After": {"1"}, "X-Retry-After-Ms": {"250"}}, 5 * time.Second, 2, 250 * time.Millisecond, false},
		{"no header uses the default", nil, 5 * time.Second, 2, broker.DefaultRetryAfter, false},
		{"Retry-After past the deadline", http.Header{"Retry-After": {"10"}}, 2 * time.Second, 1, 10 * time.Second, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f := newFixture(reply{status: 429, header: tt.header, body: `{}`}, ok200)
			err := f.do(ctxTimeout(t, tt.timeout))
			if got := f.tr.n(); got != tt.wantCalls {
				t.Errorf("calls = %d, want %d", got, tt.wantCalls)
			}
			if !tt.wantErr {
				if err != nil {
					t.Fatal(err)
				}
				if f.clock.slept != tt.wantWait {
					t.Errorf("slept %s, want %s", f.clock.slept, tt.wantWait)
				}
				return
			}
			be := asError(t, err)
			if be.Class != broker.ClassRateLimited || be.RetryAfter != tt.wantWait || be.Attempts != 1 || be.HTTPStatus != 429 {
				t.Errorf("err = %+v", be)
			}
			if f.clock.slept != 0 {
				t.Errorf("slept %s before giving up", f.clock.slept)
			}
		})
	}
}

func TestRateLimitedEveryAttempt(t *testing.T) {
	t.Parallel()
	f := newFixture(reply{status: 429, header: http.Header{"Retry-After": {"1"}}, body: `{}`})
	be := asError(t, f.do(ctxTimeout(t, time.Minute)))
	if f.tr.n() != broker.MaxAttempts || be.Class != broker.ClassRateLimited || be.Attempts != broker.MaxAttempts || be.RetryAfter != time.Second {
		t.Fatalf("calls %d, err %+v", f.tr.n(), be)
	}
}

func TestLimiterRefusesBeforeCalling(t *testing.T) {
	t.Parallel()
	f := newFixture(ok200)
	lim, err := ratelimit.New([]ratelimit.Window{{N: 1, Per: time.Second}})
	if err != nil {
		t.Fatal(err)
	}
	f.caller.Limiter = lim
	if err := f.do(ctxTimeout(t, time.Minute)); err != nil {
		t.Fatal(err)
	}
	// The second call fits only if it may wait about a second.
	be := asError(t, f.do(ctxTimeout(t, 100*time.Millisecond)))
	if be.Class != broker.ClassRateLimited || be.Attempts != 0 || be.RetryAfter <= 100*time.Millisecond || f.tr.n() != 1 {
		t.Fatalf("calls %d, err %+v", f.tr.n(), be)
	}
	if err := f.do(ctxTimeout(t, 5*time.Second)); err != nil {
		t.Fatal(err)
	}
	if f.tr.n() != 2 || f.clock.slept <= 0 {
		t.Fatalf("calls %d, slept %s", f.tr.n(), f.clock.slept)
	}
}

func TestCanceledContext(t *testing.T) {
	t.Parallel()
	f := newFixture(err503)
	ctx, cancel := context.WithCancel(context.Background())
	f.caller.OnAttempt = func(string, int) { cancel() }
	be := asError(t, f.do(ctx))
	if be.Class != broker.ClassUpstream || be.Attempts != 1 {
		t.Fatalf("err = %+v", be)
	}
}

func TestTransportErrorCarriesCause(t *testing.T) {
	t.Parallel()
	cause := errors.New("dial tcp: refused")
	f := newFixture(reply{err: cause})
	be := asError(t, f.do(ctxTimeout(t, time.Minute)))
	if !errors.Is(be, cause) || be.HTTPStatus != 0 || be.Attempts != broker.MaxAttempts {
		t.Fatalf("err = %+v", be)
	}
}

func TestResponseSizeLimit(t *testing.T) {
	t.Parallel()
	f := newFixture(reply{status: 200, body: `{"a":"` + strings.Repeat("x", 100) + `"}`})
	f.caller.MaxBody = 64
	be := asError(t, f.do(ctxTimeout(t, time.Minute)))
	if be.Class != broker.ClassUpstream || f.tr.n() != 1 || !strings.Contains(be.Message, "too large") {
		t.Fatalf("calls %d, err %+v", f.tr.n(), be)
	}
}

func TestOnceMakesOneAttempt(t *testing.T) {
	t.Parallel()
	f := newFixture(err503, ok200)
	err := f.caller.Do(ctxTimeout(t, time.Minute), broker.Request{Op: "exchange", Method: "POST", URL: "http://broker.test/t", Once: true}, nil)
	be := asError(t, err)
	if f.tr.n() != 1 || be.Attempts != 1 {
		t.Fatalf("calls %d, err %+v", f.tr.n(), be)
	}
}

func TestParseRetryAfter(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	tests := []struct {
		h    http.Header
		want time.Duration
		ok   bool
	}{
		{http.Header{"Retry-After": {"3"}}, 3 * time.Second, true},
		{http.Header{"X-Retry-After-Ms": {"1500"}}, 1500 * time.Millisecond, true},
		{http.Header{"Retry-After": {now.Add(7 * time.Second).Format(http.TimeFormat)}}, 7 * time.Second, true},
		{http.Header{"Retry-After": {"soon"}}, 0, false},
		{http.Header{}, 0, false},
	}
	for _, tt := range tests {
		got, ok := broker.ParseRetryAfter(tt.h, now)
		if got != tt.want || ok != tt.ok {
			t.Errorf("ParseRetryAfter(%v) = %s, %v", tt.h, got, ok)
		}
	}
}
