package sandbox

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeClock is an injected clock tests move by hand.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }

func (c *fakeClock) Set(t time.Time) { c.mu.Lock(); c.t = t; c.mu.Unlock() }

func (c *fakeClock) Advance(d time.Duration) { c.mu.Lock(); c.t = c.t.Add(d); c.mu.Unlock() }

// testStart is a Wednesday morning in IST.
var testStart = time.Date(2026, 3, 18, 11, 0, 0, 0, ist)

type env struct {
	t      *testing.T
	sb     *Sandbox
	srv    *httptest.Server
	clock  *fakeClock
	client *http.Client
}

func newEnv(t *testing.T, cfg Config) *env {
	t.Helper()
	clock := &fakeClock{t: testStart}
	if cfg.Now == nil {
		cfg.Now = clock.Now
	}
	sb, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(sb.Handler())
	t.Cleanup(func() {
		_ = sb.Close()
		srv.Close()
	})
	return &env{t: t, sb: sb, srv: srv, clock: clock, client: &http.Client{
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}}
}

type response struct {
	status int
	header http.Header
	raw    []byte
	body   map[string]any
}

func (e *env) do(method, path string, header map[string]string, body io.Reader) response {
	e.t.Helper()
	req, err := http.NewRequest(method, e.srv.URL+path, body)
	if err != nil {
		e.t.Fatal(err)
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := e.client.Do(req)
	if err != nil {
		e.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		e.t.Fatal(err)
	}
	r := response{status: resp.StatusCode, header: resp.Header, raw: raw}
	_ = json.Unmarshal(raw, &r.body)
	return r
}

func (e *env) upstox(method, path, token string) response {
	e.t.Helper()
	return e.do(method, "/upstox"+path, map[string]string{"Authorization": "Bearer " + token, "Accept": "application/json"}, nil)
}

func (e *env) fyers(method, path, token string) response {
	e.t.Helper()
	return e.do(method, "/fyers"+path, map[string]string{"Authorization": FyersAppID + ":" + token}, nil)
}

func (e *env) control(method, path, body string) response {
	e.t.Helper()
	return e.do(method, path, map[string]string{"Content-Type": "application/json"}, strings.NewReader(body))
}

const redirect = "http://127.0.0.1:9/callback"

// upstoxCode runs the dialog and returns the code from the redirect.
func (e *env) upstoxCode(account string) string {
	e.t.Helper()
	q := url.Values{"client_id": {UpstoxClientID}, "redirect_uri": {redirect}, "response_type": {"code"}, "state": {"st8"}}
	if account != "" {
		q.Set("account", account)
	}
	r := e.do("GET", "/upstox/v2/login/authorization/dialog?"+q.Encode(), nil, nil)
	if r.status != http.StatusFound {
		e.t.Fatalf("dialog: %d %s", r.status, r.raw)
	}
	loc, err := url.Parse(r.header.Get("Location"))
	if err != nil {
		e.t.Fatal(err)
	}
	if got := loc.Query().Get("state"); got != "st8" {
		e.t.Fatalf("state = %q", got)
	}
	return loc.Query().Get("code")
}

func (e *env) upstoxExchange(code, secret, redirectURI string) response {
	e.t.Helper()
	f := url.Values{"code": {code}, "client_id": {UpstoxClientID}, "client_secret": {secret},
		"redirect_uri": {redirectURI}, "grant_type": {"authorization_code"}}
	return e.do("POST", "/upstox/v2/login/authorization/token",
		map[string]string{"Content-Type": "application/x-www-form-urlencoded", "Accept": "application/json"}, strings.NewReader(f.Encode()))
}

func (e *env) upstoxLogin(account string) string {
	e.t.Helper()
	r := e.upstoxExchange(e.upstoxCode(account), UpstoxClientSecret, redirect)
	tok, _ := r.body["access_token"].(string)
	if r.status != http.StatusOK || tok == "" {
		e.t.Fatalf("token: %d %s", r.status, r.raw)
	}
	return tok
}

func (e *env) fyersCode(account string) string {
	e.t.Helper()
	q := url.Values{"client_id": {FyersAppID}, "redirect_uri": {redirect}, "response_type": {"code"}, "state": {"st8"}, "account": {account}}
	r := e.do("GET", "/fyers/api/v3/generate-authcode?"+q.Encode(), nil, nil)
	if r.status != http.StatusFound {
		e.t.Fatalf("generate-authcode: %d %s", r.status, r.raw)
	}
	loc, _ := url.Parse(r.header.Get("Location"))
	lq := loc.Query()
	if lq.Get("s") != "ok" || lq.Get("code") != "200" || lq.Get("state") != "st8" {
		e.t.Fatalf("redirect %s", loc)
	}
	return lq.Get("auth_code")
}

func (e *env) fyersExchange(code, hash, grantType string) response {
	e.t.Helper()
	b, _ := json.Marshal(map[string]string{"grant_type": grantType, "appIdHash": hash, "code": code})
	return e.do("POST", "/fyers/api/v3/validate-authcode", map[string]string{"Content-Type": "application/json"}, strings.NewReader(string(b)))
}

func (e *env) fyersLogin(account string) string {
	e.t.Helper()
	r := e.fyersExchange(e.fyersCode(account), fyersAppIDHash(), "authorization_code")
	tok, _ := r.body["access_token"].(string)
	if r.status != http.StatusOK || tok == "" {
		e.t.Fatalf("validate-authcode: %d %s", r.status, r.raw)
	}
	return tok
}

// wantUpstoxError checks an Upstox error answer.
func wantUpstoxError(t *testing.T, r response, status int, code string) {
	t.Helper()
	if r.status != status {
		t.Fatalf("status = %d, want %d: %s", r.status, status, r.raw)
	}
	errs, _ := r.body["errors"].([]any)
	if r.body["status"] != "error" || len(errs) != 1 {
		t.Fatalf("not an Upstox error envelope: %s", r.raw)
	}
	e := errs[0].(map[string]any)
	if e["errorCode"] != code || e["error_code"] != code {
		t.Fatalf("error code = %v/%v, want %s: %s", e["errorCode"], e["error_code"], code, r.raw)
	}
}

// wantFyersError checks a Fyers error answer.
func wantFyersError(t *testing.T, r response, status int, code float64) {
	t.Helper()
	if r.status != status || r.body["s"] != "error" || r.body["code"] != code {
		t.Fatalf("got %d %s, want %d code %v", r.status, r.raw, status, code)
	}
}

func list(v any) []any { l, _ := v.([]any); return l }

func obj(v any) map[string]any { m, _ := v.(map[string]any); return m }
