package broker

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/feedgate/feedgate/internal/backoff"
	"github.com/feedgate/feedgate/server/ratelimit"
)

// MaxAttempts is the most calls one operation makes to a broker, the first
// included.
const MaxAttempts = 3

// Defaults of the Caller's knobs.
const (
	DefaultBaseBackoff       = 100 * time.Millisecond
	DefaultMaxBody           = 8 << 20
	DefaultRetryAfter        = time.Second
	DefaultMaxWaitNoDeadline = 10 * time.Second
)

// Request is one broker HTTP call, described as data so it can be sent again
// on a retry.
type Request struct {
	// Op names the operation in errors, e.g. "option chain".
	Op     string
	Method string
	URL    string
	// Header holds the headers to send, the credentials included.
	Header http.Header
	Body   []byte
	// UserID keys the per-user rate limiter. Empty skips the limiter, for
	// calls made before the user is known (the code exchange).
	UserID string
	// Once makes a single attempt, for calls that must not be repeated such
	// as exchanging a single-use auth code.
	Once bool
}

// Response is a broker's HTTP answer as a Classifier sees it.
type Response struct {
	Status int
	Header http.Header
	Body   []byte
}

// Classifier is a broker's error table: it returns the classified failure a
// response means, or nil when the body may be decoded as a success. It fills
// Class and, where known, Code, Field, Expired, RetryAfter and Message; the
// Caller fills Broker, Op, HTTPStatus and Attempts. It must return non-nil
// for every non-2xx status.
type Classifier func(r *Response) *Error

// Caller makes a broker's HTTP calls for every user: per-user rate limiting,
// classification, bounded retries with full jitter, Retry-After, a response
// size limit, all inside the caller's deadline. It is the one layer that
// retries. Set its fields before first use and not after; it is then safe
// for concurrent use. Zero fields take the defaults named on them.
type Caller struct {
	Broker   Kind
	Classify Classifier
	// HTTPClient sends the calls; nil means http.DefaultClient.
	HTTPClient *http.Client
	// Limiter, when set, holds each user to the broker's published rates.
	Limiter *ratelimit.Limiter
	// MaxAttempts defaults to the package's MaxAttempts.
	MaxAttempts int
	// BaseBackoff is the first retry's jitter ceiling (DefaultBaseBackoff);
	// it doubles on every retry.
	BaseBackoff time.Duration
	// MaxBody bounds the response size (DefaultMaxBody).
	MaxBody int64
	// DefaultRetryAfter is the wait after a rate-limited answer that names
	// none (DefaultRetryAfter).
	DefaultRetryAfter time.Duration
	// MaxWaitNoDeadline bounds all waiting of one call whose context has no
	// deadline (DefaultMaxWaitNoDeadline).
	MaxWaitNoDeadline time.Duration
	// Now and Sleep are the clock (time.Now and a timer by default); tests
	// inject fakes. Sleep returns early with ctx's error when ctx ends.
	Now   func() time.Time
	Sleep func(ctx context.Context, d time.Duration) error
	// Jitter returns a duration in [0, ceiling); math/rand/v2 by default.
	Jitter func(ceiling time.Duration) time.Duration
	// OnAttempt, if set, is called before every HTTP call with the
	// operation and the attempt number (1, 2, ...): a hook for metrics and
	// tests. It must be safe for concurrent use.
	OnAttempt func(op string, attempt int)
}

// Do runs req until it succeeds, fails in a way that is not retried, runs
// out of attempts or would wait past ctx's deadline. On a response the
// classifier accepts, decode (if non-nil) reads the body; a *Error it returns
// is used as the failure, any other error makes the response undecodable
// (ClassUpstream). Every failure Do returns is a *Error with Attempts set.
func (c *Caller) Do(ctx context.Context, req Request, decode func(body []byte) error) error {
	deadline, ok := ctx.Deadline()
	if !ok {
		deadline = c.now().Add(orDefault(c.MaxWaitNoDeadline, DefaultMaxWaitNoDeadline))
	}
	maxAttempts := c.MaxAttempts
	if maxAttempts <= 0 {
		maxAttempts = MaxAttempts
	}
	if req.Once {
		maxAttempts = 1
	}
	for attempt := 1; ; attempt++ {
		if e := c.takeSlot(ctx, &req, deadline, attempt-1); e != nil {
			return e
		}
		e := c.attempt(ctx, &req, decode, attempt)
		if e == nil {
			return nil
		}
		e.Broker, e.Op, e.Attempts = c.Broker, req.Op, attempt
		if attempt >= maxAttempts || ctx.Err() != nil {
			return e
		}
		var wait time.Duration
		switch {
		case e.Class == ClassRateLimited:
			wait = e.RetryAfter
		case e.Class == ClassUpstream && (e.HTTPStatus == 0 || e.HTTPStatus >= 500):
			base := orDefault(c.BaseBackoff, DefaultBaseBackoff)
			wait = backoff.Full(attempt-1, base, base<<MaxAttempts, c.Jitter)
		default:
			return e
		}
		if c.now().Add(wait).After(deadline) {
			return e
		}
		if err := c.sleep(ctx, wait); err != nil {
			return e
		}
	}
}

// takeSlot waits for the user's rate-limit slot if that fits the deadline.
func (c *Caller) takeSlot(ctx context.Context, req *Request, deadline time.Time, attempts int) *Error {
	if c.Limiter == nil || req.UserID == "" {
		return nil
	}
	for {
		now := c.now()
		wait := c.Limiter.Reserve(req.UserID, now)
		if wait == 0 {
			return nil
		}
		if now.Add(wait).After(deadline) {
			return &Error{Broker: c.Broker, Op: req.Op, Class: ClassRateLimited, RetryAfter: wait,
				Message: "per-user request rate reached", Attempts: attempts}
		}
		if err := c.sleep(ctx, wait); err != nil {
			return &Error{Broker: c.Broker, Op: req.Op, Class: ClassUpstream,
				Message: "canceled while waiting for the rate limit", Attempts: attempts, Err: err}
		}
	}
}

// attempt makes one call and classifies its outcome; nil means success.
func (c *Caller) attempt(ctx context.Context, req *Request, decode func([]byte) error, n int) *Error {
	var body io.Reader
	if req.Body != nil {
		body = bytes.NewReader(req.Body)
	}
	hr, err := http.NewRequestWithContext(ctx, req.Method, req.URL, body)
	if err != nil {
		return &Error{Class: ClassUpstream, Message: "cannot build request", Err: err}
	}
	hr.Header = req.Header.Clone()
	if hr.Header == nil {
		hr.Header = make(http.Header)
	}
	if c.OnAttempt != nil {
		c.OnAttempt(req.Op, n)
	}
	hc := c.HTTPClient
	if hc == nil {
		hc = http.DefaultClient
	}
	resp, err := hc.Do(hr)
	if err != nil {
		msg := "transport failure"
		if ctx.Err() != nil {
			msg = "deadline exceeded or canceled"
		}
		return &Error{Class: ClassUpstream, Message: msg, Err: err}
	}
	defer resp.Body.Close()
	limit := orDefault(c.MaxBody, DefaultMaxBody)
	b, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if err != nil {
		// A body cut off mid-way (a connection reset) is a transport
		// failure whatever the status line said, and retried as one.
		return &Error{Class: ClassUpstream, Message: "reading response failed", Err: err}
	}
	if int64(len(b)) > limit {
		return &Error{Class: ClassUpstream, HTTPStatus: resp.StatusCode, Message: "response too large"}
	}
	r := &Response{Status: resp.StatusCode, Header: resp.Header, Body: b}
	e := c.Classify(r)
	if e == nil && (r.Status < 200 || r.Status > 299) {
		e = &Error{Class: ClassUpstream, Message: "unexpected HTTP status"}
	}
	if e == nil && decode != nil {
		if err := decode(b); err != nil {
			var ok bool
			if e, ok = AsError(err); !ok {
				e = &Error{Class: ClassUpstream, Message: "undecodable response", Err: err}
			}
		}
	}
	if e == nil {
		return nil
	}
	e.HTTPStatus = r.Status
	if e.Class == ClassRateLimited && e.RetryAfter <= 0 {
		if d, ok := ParseRetryAfter(r.Header, c.now()); ok {
			e.RetryAfter = d
		} else {
			e.RetryAfter = orDefault(c.DefaultRetryAfter, DefaultRetryAfter)
		}
	}
	return e
}

// ParseRetryAfter reads a broker's requested wait from X-Retry-After-Ms
// (milliseconds, preferred for its precision) or Retry-After (seconds or an
// HTTP date, relative to now).
func ParseRetryAfter(h http.Header, now time.Time) (time.Duration, bool) {
	if v := h.Get("X-Retry-After-Ms"); v != "" {
		// The bound keeps the conversion to a Duration from overflowing
		// into a negative wait.
		if ms, err := strconv.ParseInt(v, 10, 64); err == nil && ms >= 0 && ms < 1e12 {
			return time.Duration(ms) * time.Millisecond, true
		}
	}
	v := h.Get("Retry-After")
	if v == "" {
		return 0, false
	}
	if s, err := strconv.ParseFloat(v, 64); err == nil && s >= 0 && s < 1e9 {
		return time.Duration(s * float64(time.Second)), true
	}
	if t, err := http.ParseTime(v); err == nil {
		return max(t.Sub(now), 0), true
	}
	return 0, false
}

func (c *Caller) now() time.Time {
	if c.Now != nil {
		return c.Now()
	}
	return time.Now()
}

func (c *Caller) sleep(ctx context.Context, d time.Duration) error {
	if c.Sleep != nil {
		return c.Sleep(ctx, d)
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

func orDefault[T comparable](v, def T) T {
	var zero T
	if v == zero {
		return def
	}
	return v
}
