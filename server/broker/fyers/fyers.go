// Package fyers is feedgate's adapter for the Fyers API v3: the OAuth login,
// the profile probe, option chains and quotes, with every failure
// classified by one error table (classify.go).
package fyers

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"time"

	"github.com/feedgate/feedgate/server/broker"
	"github.com/feedgate/feedgate/server/ratelimit"
	"github.com/feedgate/feedgate/server/secret"
)

// DefaultBaseURL is the production REST host (trading and data).
const DefaultBaseURL = "https://api-t1.fyers.in"

// DefaultLimits are the per-user rates shared by all REST endpoints
// (brokers.md §2.9).
var DefaultLimits = []ratelimit.Window{
	{N: 10, Per: time.Second},
	{N: 200, Per: time.Minute},
	{N: 100000, Per: 24 * time.Hour},
}

// Config configures a Client.
type Config struct {
	AppID       string
	Secret      secret.Value
	RedirectURL string
	// BaseURL defaults to DefaultBaseURL; the sandbox is http://HOST/fyers.
	BaseURL string
	// HTTPClient defaults to a client with a 30 s timeout.
	HTTPClient *http.Client
	// Now is the clock (time.Now by default).
	Now func() time.Time
	// Limits are the per-user rate limits (DefaultLimits by default).
	Limits []ratelimit.Window
}

// Client is the Fyers implementation of broker.Client. It is safe for
// concurrent use.
type Client struct {
	cfg    Config
	base   string
	caller *broker.Caller
}

var _ broker.Client = (*Client)(nil)

// New validates cfg and returns a Client.
func New(cfg Config) (*Client, error) {
	if err := broker.RequireAppID(broker.Fyers, "AppID", cfg.AppID); err != nil {
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
		Broker: broker.Fyers, Classify: classify, BaseURL: cfg.BaseURL, HTTPClient: cfg.HTTPClient, Now: cfg.Now, Limits: cfg.Limits,
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
func (c *Client) Kind() broker.Kind { return broker.Fyers }

// LoginURL implements broker.Client.
func (c *Client) LoginURL(state string) string {
	q := url.Values{
		"client_id":     {c.cfg.AppID},
		"redirect_uri":  {c.cfg.RedirectURL},
		"response_type": {"code"},
		"state":         {state},
	}
	return c.base + "/api/v3/generate-authcode?" + q.Encode()
}

// AppIDHash is validate-authcode's appIdHash: hex SHA-256 of "app_id:secret".
func AppIDHash(appID string, sec secret.Value) string {
	sum := sha256.Sum256([]byte(appID + ":" + sec.Reveal()))
	return hex.EncodeToString(sum[:])
}

// ExchangeCode implements broker.Client. The code is single-use, so the call
// is never repeated. ExpiresAt and BrokerUserID come from the token's JWT
// payload, read without verifying the signature (the token is only ever
// sent back to Fyers).
func (c *Client) ExchangeCode(ctx context.Context, code string) (broker.Token, error) {
	const op = "exchange code"
	if code == "" {
		return broker.Token{}, badInput(op, "code", "auth code is empty")
	}
	body, err := json.Marshal(map[string]string{
		"grant_type": "authorization_code",
		"appIdHash":  AppIDHash(c.cfg.AppID, c.cfg.Secret),
		"code":       code,
	})
	if err != nil {
		return broker.Token{}, err
	}
	var resp struct {
		status
		AccessToken string `json:"access_token"`
	}
	err = c.caller.Do(ctx, broker.Request{
		Op: op, Method: http.MethodPost, URL: c.base + "/api/v3/validate-authcode",
		Header: http.Header{"Content-Type": {"application/json"}, "Accept": {"application/json"}},
		Body:   body, Once: true,
	}, func(b []byte) error {
		if err := decodeBody(b, &resp); err != nil {
			return err
		}
		if err := resp.failure(http.StatusOK); err != nil {
			return err
		}
		if resp.AccessToken == "" {
			return errors.New("no access_token in response")
		}
		return nil
	})
	if err != nil {
		return broker.Token{}, err
	}
	tok := broker.Token{Access: secret.New(resp.AccessToken)}
	if claims, ok := jwtClaims(resp.AccessToken); ok {
		tok.ExpiresAt, tok.BrokerUserID = claims.expiry(), claims.FyID
	}
	return tok, nil
}

// Profile implements broker.Client.
func (c *Client) Profile(ctx context.Context, cr broker.Credentials) (broker.Profile, error) {
	var resp struct {
		status
		Data struct {
			Name  string `json:"name"`
			FyID  string `json:"fy_id"`
			Dname string `json:"display_name"`
		} `json:"data"`
	}
	err := c.caller.Do(ctx, c.request(cr, "profile", http.MethodGet, "/api/v3/profile", nil), func(b []byte) error {
		if err := decodeBody(b, &resp); err != nil {
			return err
		}
		return resp.failure(http.StatusOK)
	})
	if err != nil {
		return broker.Profile{}, err
	}
	name := resp.Data.Name
	if name == "" {
		name = resp.Data.Dname
	}
	return broker.Profile{BrokerUserID: resp.Data.FyID, UserName: name}, nil
}

// Logout implements broker.Client.
func (c *Client) Logout(ctx context.Context, cr broker.Credentials) error {
	return c.caller.Do(ctx, c.request(cr, "logout", http.MethodPost, "/api/v3/logout", nil), decodeStatus)
}

// decodeStatus decodes a body that carries nothing but its status.
func decodeStatus(b []byte) error {
	var s status
	if err := json.Unmarshal(b, &s); err != nil {
		return err
	}
	return s.failure(http.StatusOK)
}

// request builds an authenticated call with Fyers's headers.
func (c *Client) request(cr broker.Credentials, op, method, path string, q url.Values) broker.Request {
	u := c.base + path
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	h := http.Header{
		"Authorization": {c.cfg.AppID + ":" + cr.Token.Reveal()},
		"Version":       {"3"},
		"Accept":        {"application/json"},
	}
	return broker.Request{Op: op, Method: method, URL: u, Header: h, UserID: cr.UserID}
}

// badInput is a ClassBadInput failure found before any call.
func badInput(op, field, msg string) *broker.Error {
	return &broker.Error{Broker: broker.Fyers, Class: broker.ClassBadInput, Op: op, Field: field, Message: msg}
}
