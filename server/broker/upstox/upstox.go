// Package upstox is feedgate's adapter for the Upstox API (v2 and v3): the
// OAuth login, the profile probe, option chains and last-traded prices, with
// every failure classified by one error table (classify.go).
package upstox

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/feedgate/feedgate/server/broker"
	"github.com/feedgate/feedgate/server/ratelimit"
	"github.com/feedgate/feedgate/server/secret"
)

// DefaultBaseURL is the production REST host.
const DefaultBaseURL = "https://api.upstox.com"

// apiVersionHeader is sent on v2 calls as the SDK does. UNCONFIRMED whether
// it is still needed (docs/brokers/upstox.md §3.1).
const apiVersionHeader = "2.0"

// DefaultLimits are the per-user rates of the standard APIs. UNCONFIRMED
// (docs/brokers/upstox.md §5): the rate-limiting page could not be read.
var DefaultLimits = []ratelimit.Window{
	{N: 50, Per: time.Second},
	{N: 500, Per: time.Minute},
	{N: 2000, Per: 30 * time.Minute},
}

// Config configures a Client.
type Config struct {
	ClientID     string
	ClientSecret secret.Value
	RedirectURL  string
	// BaseURL defaults to DefaultBaseURL; the sandbox is http://HOST/upstox.
	BaseURL string
	// HTTPClient defaults to a client with a 30 s timeout.
	HTTPClient *http.Client
	// Now is the clock (time.Now by default).
	Now func() time.Time
	// Limits are the per-user rate limits (DefaultLimits by default).
	Limits []ratelimit.Window
}

// Client is the Upstox implementation of broker.Client. It is safe for
// concurrent use.
type Client struct {
	cfg    Config
	base   string
	caller *broker.Caller
}

var _ broker.Client = (*Client)(nil)

// New validates cfg and returns a Client.
func New(cfg Config) (*Client, error) {
	if err := broker.RequireAppID(broker.Upstox, "ClientID", cfg.ClientID); err != nil {
		return nil, err
	}
	if cfg.BaseURL == "" {
		cfg.BaseURL = DefaultBaseURL
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Limits == nil {
		cfg.Limits = DefaultLimits
	}
	caller, base, err := broker.NewCaller(broker.CallerConfig{
		Broker: broker.Upstox, Classify: classify, BaseURL: cfg.BaseURL, HTTPClient: cfg.HTTPClient, Now: cfg.Now, Limits: cfg.Limits,
	})
	if err != nil {
		return nil, err
	}
	return &Client{cfg: cfg, base: base, caller: caller}, nil
}

// Caller returns the client's HTTP caller, so tests and metrics can set its
// hooks (OnAttempt, Sleep, Jitter) before the first call.
func (c *Client) Caller() *broker.Caller { return c.caller }

// Kind implements broker.Client.
func (c *Client) Kind() broker.Kind { return broker.Upstox }

// LoginURL implements broker.Client.
func (c *Client) LoginURL(state string) string {
	q := url.Values{
		"client_id":     {c.cfg.ClientID},
		"redirect_uri":  {c.cfg.RedirectURL},
		"response_type": {"code"},
		"state":         {state},
	}
	return c.base + "/v2/login/authorization/dialog?" + q.Encode()
}

// tokenResponse is the bare (unwrapped) answer of the token exchange.
type tokenResponse struct {
	AccessToken string `json:"access_token"`
	UserID      string `json:"user_id"`
	UserName    string `json:"user_name"`
}

// ExchangeCode implements broker.Client. The code is single-use, so the call
// is never repeated.
func (c *Client) ExchangeCode(ctx context.Context, code string) (broker.Token, error) {
	const op = "exchange code"
	if code == "" {
		return broker.Token{}, badInput(op, "code", "auth code is empty")
	}
	form := url.Values{
		"code":          {code},
		"client_id":     {c.cfg.ClientID},
		"client_secret": {c.cfg.ClientSecret.Reveal()},
		"redirect_uri":  {c.cfg.RedirectURL},
		"grant_type":    {"authorization_code"},
	}
	h := http.Header{
		"Accept":       {"application/json"},
		"Content-Type": {"application/x-www-form-urlencoded"},
		"Api-Version":  {apiVersionHeader},
	}
	var tr tokenResponse
	err := c.caller.Do(ctx, broker.Request{
		Op: op, Method: http.MethodPost, URL: c.base + "/v2/login/authorization/token",
		Header: h, Body: []byte(form.Encode()), Once: true,
	}, func(b []byte) error {
		if err := json.Unmarshal(b, &tr); err != nil {
			return err
		}
		if tr.AccessToken == "" {
			// A 2xx error envelope, or something else without a token.
			var env envelope[json.RawMessage]
			if json.Unmarshal(b, &env) == nil && env.failed() {
				return classifyProblems(http.StatusOK, env.Errors)
			}
			return errors.New("no access_token in response")
		}
		return nil
	})
	if err != nil {
		return broker.Token{}, err
	}
	return broker.Token{
		Access:       secret.New(tr.AccessToken),
		ExpiresAt:    TokenExpiry(c.cfg.Now()),
		BrokerUserID: tr.UserID,
		UserName:     tr.UserName,
	}, nil
}

// ist is India Standard Time, UTC+05:30 all year (no daylight saving), so a
// fixed zone needs no time-zone database.
var ist = time.FixedZone("IST", 5*3600+30*60)

// TokenExpiry returns when an access token issued at issued dies: the first
// 03:30 IST after issue (a token issued at 02:30 IST dies an hour later).
func TokenExpiry(issued time.Time) time.Time {
	t := issued.In(ist)
	exp := time.Date(t.Year(), t.Month(), t.Day(), 3, 30, 0, 0, ist)
	if !t.Before(exp) {
		exp = exp.AddDate(0, 0, 1)
	}
	return exp
}

// Profile implements broker.Client.
func (c *Client) Profile(ctx context.Context, cr broker.Credentials) (broker.Profile, error) {
	var env envelope[struct {
		UserID   string `json:"user_id"`
		UserName string `json:"user_name"`
	}]
	err := c.get(ctx, cr, "profile", "/v2/user/profile", nil, func(b []byte) error { return decodeInto(b, &env) })
	if err != nil {
		return broker.Profile{}, err
	}
	return broker.Profile{BrokerUserID: env.Data.UserID, UserName: env.Data.UserName}, nil
}

// Logout implements broker.Client.
func (c *Client) Logout(ctx context.Context, cr broker.Credentials) error {
	var env envelope[json.RawMessage]
	return c.caller.Do(ctx, c.request(cr, "logout", http.MethodDelete, "/v2/logout", nil),
		func(b []byte) error { return decodeInto(b, &env) })
}

// get makes an authenticated GET of path?query.
func (c *Client) get(ctx context.Context, cr broker.Credentials, op, path string, q url.Values, decode func([]byte) error) error {
	return c.caller.Do(ctx, c.request(cr, op, http.MethodGet, path, q), decode)
}

// request builds an authenticated call with Upstox's headers.
func (c *Client) request(cr broker.Credentials, op, method, path string, q url.Values) broker.Request {
	u := c.base + path
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	h := http.Header{
		"Authorization": {"Bearer " + cr.Token.Reveal()},
		"Accept":        {"application/json"},
	}
	if strings.HasPrefix(path, "/v2/") {
		h.Set("Api-Version", apiVersionHeader)
	}
	return broker.Request{Op: op, Method: method, URL: u, Header: h, UserID: cr.UserID}
}

// badInput is a ClassBadInput failure found before any call.
func badInput(op, field, msg string) *broker.Error {
	return &broker.Error{Broker: broker.Upstox, Class: broker.ClassBadInput, Op: op, Field: field, Message: msg}
}
