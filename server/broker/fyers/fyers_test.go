package fyers

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/feedgate/feedgate/server/broker"
	"github.com/feedgate/feedgate/server/secret"
)

const testToken = "fy-SECRET-91bd0e"

var cred = broker.Credentials{UserID: "alice", Token: secret.New(testToken)}

// fakeTransport answers through answer (or with a fixed status and body)
// and records requests and their bodies.
type fakeTransport struct {
	status int
	header http.Header
	body   string
	answer func(r *http.Request) (int, string)

	mu     sync.Mutex
	reqs   []*http.Request
	bodies []string
}

func (f *fakeTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	var reqBody []byte
	if r.Body != nil {
		reqBody, _ = io.ReadAll(r.Body)
	}
	f.mu.Lock()
	f.reqs = append(f.reqs, r)
	f.bodies = append(f.bodies, string(reqBody))
	f.mu.Unlock()
	status, body := f.status, f.body
	if f.answer != nil {
		status, body = f.answer(r)
	}
	h := f.header
	if h == nil {
		h = http.Header{}
	}
	return &http.Response{StatusCode: status, Header: h, Body: io.NopCloser(strings.NewReader(body)), Request: r}, nil
}

func newTestClient(t testing.TB, ft *fakeTransport) *Client {
	t.Helper()
	c, err := New(Config{
		AppID: "XXXX-100", Secret: secret.New("app-SECRET"), RedirectURL: "http://localhost/cb",
		BaseURL: "http://sandbox.test/fyers", HTTPClient: &http.Client{Transport: ft},
	})
	if err != nil {
		t.Fatal(err)
	}
	c.Caller().Sleep = func(context.Context, time.Duration) error { return nil }
	return c
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return c
}

func errBody(code int, msg string) string {
	return fmt.Sprintf(`{"code":%d,"message":%q,"s":"error"}`, code, msg)
}

// TestClassification runs one call per row of the error table through a
// fake transport, with the response shapes of brokers.md.
func TestClassification(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		status     int
		header     http.Header
		body       string
		class      broker.Class
		code       string
		expired    bool
		retryAfter time.Duration
		wantCalls  int
	}{
		{"401 -16 dead token", 401, nil, errBody(-16, "Could not authenticate the user"), broker.ClassAuthDead, "-16", false, 0, 1},
		{"401 -8 expired", 401, nil, errBody(-8, "Your token has expired"), broker.ClassAuthDead, "-8", true, 0, 1},
		{"-15 invalid token", 400, nil, errBody(-15, "Please provide valid token"), broker.ClassAuthDead, "-15", false, 0, 1},
		{"-17 under 200", 200, nil, errBody(-17, "token invalid or expired"), broker.ClassAuthDead, "-17", false, 0, 1},
		{"401 without body", 401, nil, ``, broker.ClassAuthDead, "", false, 0, 1},
		{"403 permission", 403, nil, errBody(-99, "forbidden"), broker.ClassAuthDead, "-99", false, 0, 1},
		{"429 Retry-After past deadline", 429, http.Header{"Retry-After": {"60"}}, errBody(-429, "rate limit"), broker.ClassRateLimited, "-429", false, time.Minute, 1},
		{"429 X-Retry-After-Ms", 429, http.Header{"Retry-After": {"60"}, "X-Retry-After-Ms": {"30000"}}, errBody(-429, "rate limit"), broker.ClassRateLimited, "-429", false, 30 * time.Second, 1},
		{"-429 under 200", 200, http.Header{"Retry-After": {"60"}}, errBody(-429, "rate limit"), broker.ClassRateLimited, "-429", false, time.Minute, 1},
		{"-50 invalid params", 400, nil, errBody(-50, "Invalid params"), broker.ClassBadInput, "-50", false, 0, 1},
		{"-300 invalid symbol", 400, nil, errBody(-300, "Invalid symbol"), broker.ClassBadInput, "-300", false, 0, 1},
		{"-352 invalid app id", 400, nil, errBody(-352, "Invalid App ID"), broker.ClassBadInput, "-352", false, 0, 1},
		{"400 other code", 400, nil, errBody(-441, "invalid grant type"), broker.ClassBadInput, "-441", false, 0, 1},
		{"500", 500, nil, errBody(-500, "internal"), broker.ClassUpstream, "-500", false, 0, 3},
		{"502 html", 502, nil, `<html>bad gateway</html>`, broker.ClassUpstream, "", false, 0, 3},
		{"s error unknown code under 200", 200, nil, errBody(-99, "rejected"), broker.ClassUpstream, "-99", false, 0, 1},
		{"success code but s error", 200, nil, `{"code":200,"message":"","s":"error"}`, broker.ClassUpstream, "200", false, 0, 1},
		{"undecodable 200", 200, nil, `<html>` + testToken, broker.ClassUpstream, "", false, 0, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ft := &fakeTransport{status: tt.status, header: tt.header, body: tt.body}
			_, err := newTestClient(t, ft).Profile(ctx(t), cred)
			be, ok := broker.AsError(err)
			if !ok {
				t.Fatalf("err = %v", err)
			}
			if be.Class != tt.class || be.Code != tt.code || be.Expired != tt.expired || be.HTTPStatus != tt.status || be.Attempts != tt.wantCalls || len(ft.reqs) != tt.wantCalls {
				t.Errorf("got %+v after %d calls", be, len(ft.reqs))
			}
			if tt.retryAfter != 0 && be.RetryAfter != tt.retryAfter {
				t.Errorf("RetryAfter = %s, want %s", be.RetryAfter, tt.retryAfter)
			}
			if msg := err.Error(); strings.Contains(msg, testToken) || strings.Contains(msg, "SECRET") || strings.Contains(msg, "<html>") {
				t.Errorf("error message leaks: %s", msg)
			}
		})
	}
}

func TestSuccessIsSOK(t *testing.T) {
	t.Parallel()
	ft := &fakeTransport{status: 200, body: `{"s":"ok","code":1101,"message":"you are successfully logged out"}`}
	if err := newTestClient(t, ft).Logout(ctx(t), cred); err != nil {
		t.Fatal(err)
	}
	r := ft.reqs[0]
	if r.Method != http.MethodPost || r.URL.Path != "/fyers/api/v3/logout" || r.Header.Get("Authorization") != "XXXX-100:"+testToken || r.Header.Get("version") != "3" {
		t.Errorf("request %s %s %v", r.Method, r.URL, r.Header)
	}
}

func TestLoginURL(t *testing.T) {
	t.Parallel()
	got := newTestClient(t, &fakeTransport{}).LoginURL("xyz")
	want := "http://sandbox.test/fyers/api/v3/generate-authcode?client_id=XXXX-100&redirect_uri=http%3A%2F%2Flocalhost%2Fcb&response_type=code&state=xyz"
	if got != want {
		t.Fatalf("LoginURL = %s", got)
	}
}

func fakeJWT(payload string) string {
	enc := base64.RawURLEncoding.EncodeToString
	return enc([]byte(`{"alg":"HS256","typ":"JWT"}`)) + "." + enc([]byte(payload)) + "." + enc([]byte("sig"))
}

func TestExchangeCode(t *testing.T) {
	t.Parallel()
	jwt := fakeJWT(`{"iss":"api.fyers.in","iat":1772410000,"exp":1772496000,"fy_id":"XA00001","hsm_key":"h"}`)
	ft := &fakeTransport{status: 200, body: `{"s":"ok","code":200,"message":"","access_token":"` + jwt + `","refresh_token":"r"}`}
	tok, err := newTestClient(t, ft).ExchangeCode(ctx(t), "authcode")
	if err != nil {
		t.Fatal(err)
	}
	if tok.Access.Reveal() != jwt || !tok.ExpiresAt.Equal(time.Unix(1772496000, 0)) || tok.BrokerUserID != "XA00001" {
		t.Errorf("token = %+v", tok)
	}
	var body map[string]string
	if err := json.Unmarshal([]byte(ft.bodies[0]), &body); err != nil {
		t.Fatal(err)
	}
	// sha256("XXXX-100:app-SECRET")
	if body["grant_type"] != "authorization_code" || body["code"] != "authcode" || body["appIdHash"] != AppIDHash("XXXX-100", secret.New("app-SECRET")) || len(body["appIdHash"]) != 64 {
		t.Errorf("body = %v", body)
	}
	if r := ft.reqs[0]; r.URL.Path != "/fyers/api/v3/validate-authcode" || r.Method != http.MethodPost {
		t.Errorf("request %s %s", r.Method, r.URL)
	}
	if strings.Contains(ft.bodies[0], "app-SECRET") {
		t.Error("secret sent in clear")
	}
}

func TestAppIDHash(t *testing.T) {
	t.Parallel()
	// echo -n 'a:b' | sha256sum
	if got := AppIDHash("a", secret.New("b")); got != "6783a31eabf68ccc0660f935c0826282bdd2241f3a80a9f2d10d59aea9ebb5d8" {
		t.Fatal(got)
	}
}

func TestProfile(t *testing.T) {
	t.Parallel()
	ft := &fakeTransport{status: 200, body: `{"s":"ok","code":200,"message":"","data":{"name":"ALICE","image":null,"display_name":"Al","email_id":"a***@x","PAN":"A****","fy_id":"XA00001","pin_change_date":"","mobile_number":"9***","totp":true,"pwd_change_date":null,"pwd_to_expire":90,"ddpi_enabled":false,"mtf_enabled":false}}`}
	p, err := newTestClient(t, ft).Profile(ctx(t), cred)
	if err != nil || p.BrokerUserID != "XA00001" || p.UserName != "ALICE" {
		t.Fatalf("Profile = %+v, %v", p, err)
	}
}

// chainBody is an options-chain-v3 answer: the underlying row, then n
// strikes of PE and CE rows in mixed order, expiring on 03-03-2026.
func chainBody(n int) string {
	var rows []string
	rows = append(rows, `{"description":"NIFTY50-INDEX","ex_symbol":"NIFTY","exchange":"NSE","fp":22510,"fpch":10,"fpchp":0.04,"fyToken":"101000000026000","ltp":22500.5,"ltpch":50.5,"ltpchp":0.22,"option_type":"","strike_price":-1,"symbol":"NSE:NIFTY50-INDEX"}`)
	for i := n - 1; i >= 0; i-- {
		strike := 22400 + 50*i
		for _, kind := range []string{"PE", "CE"} {
			oi := 5000
			if kind == "PE" {
				oi = 10000
			}
			rows = append(rows, fmt.Sprintf(`{"ask":151,"bid":150,"fyToken":"1011260303%d","ltp":150.5,"ltpch":10.5,"ltpchp":7.5,"oi":%d,"oich":100,"oichp":1,"option_type":%q,"prev_oi":4500,"strike_price":%d,"symbol":"NSE:NIFTY26303%d%s","volume":1000,"greeks":{"delta":0.5,"gamma":0.001,"theta":-10.5,"vega":12.1,"iv":14.2}}`, strike, oi, kind, strike, strike, kind))
		}
	}
	return `{"code":200,"message":"","s":"ok","data":{"callOi":100000,"putOi":120000,"expiryData":[{"date":"03-03-2026","expiry":"1772532000","expiry_flag":"W"},{"date":"10-03-2026","expiry":"1773136800","expiry_flag":"W"}],"indiavixData":{"ask":0,"bid":0,"description":"INDIAVIX-INDEX","ex_symbol":"INDIAVIX","exchange":"NSE","fyToken":"101000000026017","ltp":13.2,"ltpch":-0.1,"ltpchp":-0.7,"option_type":"","strike_price":-1,"symbol":"NSE:INDIAVIX-INDEX"},"optionsChain":[` + strings.Join(rows, ",") + `]}}`
}

func TestOptionChain(t *testing.T) {
	t.Parallel()
	ft := &fakeTransport{status: 200, body: chainBody(3)}
	ch, err := newTestClient(t, ft).OptionChain(ctx(t), cred, "NSE:NIFTY50-INDEX", "2026-03-03")
	if err != nil {
		t.Fatal(err)
	}
	q := ft.reqs[0].URL.Query()
	if ft.reqs[0].URL.Path != "/fyers/data/options-chain-v3" || q.Get("symbol") != "NSE:NIFTY50-INDEX" || q.Get("strikecount") != "50" || q.Get("greeks") != "1" || q.Get("timestamp") != "1772532000" {
		t.Errorf("request %s", ft.reqs[0].URL)
	}
	if ch.UnderlyingSpot != 22500.5 || len(ch.Strikes) != 3 || ch.Strikes[0].StrikePrice != 22400 || ch.Strikes[2].StrikePrice != 22500 {
		t.Fatalf("chain = %+v", ch)
	}
	s := ch.Strikes[0]
	if s.Call == nil || s.Put == nil || s.PCR != 2 || s.Call.InstrumentKey != "NSE:NIFTY2630322400CE" || s.Put.InstrumentKey != "NSE:NIFTY2630322400PE" {
		t.Fatalf("strike = %+v", s)
	}
	want := broker.OptionSide{InstrumentKey: "NSE:NIFTY2630322400CE", LTP: 150.5, ClosePrice: 140, Volume: 1000, OI: 5000, PrevOI: 4500,
		BidPrice: 150, AskPrice: 151, Delta: 0.5, Gamma: 0.001, Theta: -10.5, Vega: 12.1, IV: 14.2}
	if *s.Call != want {
		t.Errorf("call = %+v", *s.Call)
	}
}

func TestOptionChainNotAnExpiry(t *testing.T) {
	t.Parallel()
	ft := &fakeTransport{status: 200, body: chainBody(1)}
	_, err := newTestClient(t, ft).OptionChain(ctx(t), cred, "NSE:NIFTY50-INDEX", "2026-03-04")
	if be, ok := broker.AsError(err); !ok || be.Class != broker.ClassBadInput || be.Field != "expiry_date" || be.Attempts != 1 {
		t.Fatalf("err = %v", err)
	}
}

func TestExpiryTimestamp(t *testing.T) {
	t.Parallel()
	d, _ := time.Parse(time.DateOnly, "2026-03-03")
	if got := ExpiryTimestamp(d); got != time.Date(2026, 3, 3, 10, 0, 0, 0, time.UTC).Unix() {
		t.Fatalf("ExpiryTimestamp = %d", got)
	}
}

func TestQuotesBatches(t *testing.T) {
	t.Parallel()
	keys := make([]string, 120)
	for i := range keys {
		keys[i] = fmt.Sprintf("NSE:SYM%d-EQ", i)
	}
	ft := &fakeTransport{answer: func(r *http.Request) (int, string) {
		var d []string
		for _, s := range strings.Split(r.URL.Query().Get("symbols"), ",") {
			if s == "NSE:SYM7-EQ" {
				d = append(d, `{"n":"NSE:SYM7-EQ","s":"error","v":{"errmsg":"invalid symbol"}}`)
				continue
			}
			if s == "NSE:SYM99-EQ" {
				continue // left out of the answer
			}
			var n int
			fmt.Sscanf(s, "NSE:SYM%d-EQ", &n)
			d = append(d, fmt.Sprintf(`{"n":%q,"s":"ok","v":{"ch":1,"chp":0.1,"lp":%d.5,"prev_close_price":%d,"volume":%d,"short_name":"x","exchange":"NSE","symbol":%q}}`, s, n, n, n*10, s))
		}
		return 200, `{"s":"ok","code":200,"d":[` + strings.Join(d, ",") + `]}`
	}}
	q, err := newTestClient(t, ft).Quotes(ctx(t), cred, keys)
	if err != nil {
		t.Fatal(err)
	}
	if len(ft.reqs) != 3 {
		t.Fatalf("%d calls, want 3", len(ft.reqs))
	}
	for _, r := range ft.reqs {
		if n := len(strings.Split(r.URL.Query().Get("symbols"), ",")); n > 50 || r.URL.Path != "/fyers/data/quotes" {
			t.Errorf("call %s with %d symbols", r.URL.Path, n)
		}
	}
	if len(q.Quotes) != 118 || len(q.Unknown) != 2 || q.Unknown[0] != "NSE:SYM7-EQ" || q.Unknown[1] != "NSE:SYM99-EQ" {
		t.Fatalf("%d quotes, unknown %v", len(q.Quotes), q.Unknown)
	}
	for _, qt := range q.Quotes {
		var n int
		fmt.Sscanf(qt.InstrumentKey, "NSE:SYM%d-EQ", &n)
		if qt.LTP != float64(n)+0.5 || *qt.ClosePrice != float64(n) || *qt.Volume != int64(n*10) || qt.OI != nil {
			t.Fatalf("quote %+v", qt)
		}
	}
	for i := 1; i < len(q.Quotes); i++ {
		var a, b int
		fmt.Sscanf(q.Quotes[i-1].InstrumentKey, "NSE:SYM%d-EQ", &a)
		fmt.Sscanf(q.Quotes[i].InstrumentKey, "NSE:SYM%d-EQ", &b)
		if a >= b {
			t.Fatalf("order lost at %d: %d then %d", i, a, b)
		}
	}
}

func TestQuotesBatchFailure(t *testing.T) {
	t.Parallel()
	keys := make([]string, 60)
	for i := range keys {
		keys[i] = fmt.Sprintf("NSE:SYM%d-EQ", i)
	}
	ft := &fakeTransport{status: 401, body: errBody(-16, "Could not authenticate the user")}
	_, err := newTestClient(t, ft).Quotes(ctx(t), cred, keys)
	if !broker.IsAuthDead(err) || strings.Contains(err.Error(), testToken) {
		t.Fatalf("err = %v", err)
	}
}

func TestValidateInstrumentKey(t *testing.T) {
	t.Parallel()
	good := []string{"NSE:SBIN-EQ", "BSE:SBIN-A", "NSE:NIFTY50-INDEX", "NSE:M&M-EQ", "NSE:NIFTY2632423050PE", "MCX:CRUDEOIL26MARFUT", "NCD:USDINR26MARFUT", "BCD:X"}
	bad := []string{"", "SBIN-EQ", "NYSE:IBM", "nse:SBIN-EQ", "NSE:", "NSE:SB IN", "NSE:SBIN,EQ", "NSE:a\x00", "NSE:" + strings.Repeat("A", 65), "NSE|SBIN"}
	c := newTestClient(t, &fakeTransport{})
	for _, k := range good {
		if err := c.ValidateInstrumentKey(k); err != nil {
			t.Errorf("%q: %v", k, err)
		}
	}
	for _, k := range bad {
		if be, ok := broker.AsError(c.ValidateInstrumentKey(k)); !ok || be.Class != broker.ClassBadInput {
			t.Errorf("%q accepted", k)
		}
	}
}

func BenchmarkDecodeOptionChain(b *testing.B) {
	body := []byte(chainBody(50))
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		var d chainData
		if err := decodeChain(body, "03-03-2026", &d); err != nil {
			b.Fatal(err)
		}
		chainFromData("NSE:NIFTY50-INDEX", "2026-03-03", &d)
	}
}

func BenchmarkClassify(b *testing.B) {
	r := &broker.Response{Status: 401, Body: []byte(errBody(-16, "Could not authenticate the user"))}
	b.ReportAllocs()
	for b.Loop() {
		if classify(r).Class != broker.ClassAuthDead {
			b.Fatal("wrong class")
		}
	}
}
