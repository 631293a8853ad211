package upstox

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/feedgate/feedgate/server/broker"
	"github.com/feedgate/feedgate/server/secret"
)

const testToken = "upx-SECRET-7f9a2c"

var cred = broker.Credentials{UserID: "alice", Token: secret.New(testToken)}

// fakeTransport answers every request with one status, header and body and
// records the requests.
type fakeTransport struct {
	status int
	header http.Header
	body   string

	mu   sync.Mutex
	reqs []*http.Request
	form []url.Values
}

func (f *fakeTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.reqs = append(f.reqs, r)
	var form url.Values
	if r.Body != nil {
		b, _ := io.ReadAll(r.Body)
		form, _ = url.ParseQuery(string(b))
	}
	f.form = append(f.form, form)
	h := f.header
	if h == nil {
		h = http.Header{"Content-Type": {"application/json"}}
	}
	return &http.Response{StatusCode: f.status, Header: h, Body: io.NopCloser(strings.NewReader(f.body)), Request: r}, nil
}

func newTestClient(t testing.TB, ft *fakeTransport, now time.Time) *Client {
	t.Helper()
	c, err := New(Config{
		ClientID: "cid", ClientSecret: secret.New("csecret-SECRET"), RedirectURL: "http://localhost/cb",
		BaseURL: "http://sandbox.test/upstox", HTTPClient: &http.Client{Transport: ft},
		Now: func() time.Time { return now },
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

// problemBody is Upstox's error envelope, as seen in the wild (camelCase)
// or in the SDK model (snake_case).
func problemBody(code, prop string, snake bool) string {
	p := "null"
	if prop != "" {
		p = `"` + prop + `"`
	}
	if snake {
		return fmt.Sprintf(`{"status":"error","errors":[{"error_code":%q,"message":"m","property_path":%s,"invalid_value":null}]}`, code, p)
	}
	return fmt.Sprintf(`{"status":"error","errors":[{"errorCode":%q,"message":"m","propertyPath":%s,"invalidValue":null}]}`, code, p)
}

// TestClassification runs one call per row of the error table through a
// fake transport, with the response shapes of docs/brokers/upstox.md §3–§4.
func TestClassification(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		status    int
		body      string
		class     broker.Class
		code      string
		field     string
		wantCalls int
	}{
		{"dead token 401 UDAPI100050", 401, `{"status":"error","errors":[{"errorCode":"UDAPI100050","message":"Invalid token used to access API","propertyPath":null,"invalidValue":null}]}`, broker.ClassAuthDead, "UDAPI100050", "", 1},
		{"dead token snake_case", 401, problemBody("UDAPI100050", "", true), broker.ClassAuthDead, "UDAPI100050", "", 1},
		{"401 without body", 401, ``, broker.ClassAuthDead, "", "", 1},
		{"UDAPI100050 under 400", 400, problemBody("UDAPI100050", "", false), broker.ClassAuthDead, "UDAPI100050", "", 1},
		{"extended token not permitted", 403, problemBody("UDAPI100067", "", false), broker.ClassAuthDead, "UDAPI100067", "", 1},
		{"429 UDAPI10005", 429, problemBody("UDAPI10005", "", false), broker.ClassRateLimited, "UDAPI10005", "", 3}, // waits 1 s each time
		{"UDAPI10005 under 200", 200, problemBody("UDAPI10005", "", true), broker.ClassRateLimited, "UDAPI10005", "", 3},
		{"key missing UDAPI1009", 400, problemBody("UDAPI1009", "", false), broker.ClassBadInput, "UDAPI1009", "instrument_key", 1},
		{"key malformed UDAPI1011", 400, problemBody("UDAPI1011", "", true), broker.ClassBadInput, "UDAPI1011", "instrument_key", 1},
		{"key invalid UDAPI1087", 400, problemBody("UDAPI1087", "", false), broker.ClassBadInput, "UDAPI1087", "instrument_key", 1},
		{"too many keys UDAPI100043", 400, problemBody("UDAPI100043", "", false), broker.ClassBadInput, "UDAPI100043", "instrument_key", 1},
		{"invalid input UDAPI100036 on expiry_date", 400, problemBody("UDAPI100036", "expiry_date", false), broker.ClassBadInput, "UDAPI100036", "expiry_date", 1},
		{"invalid input UDAPI100038", 400, problemBody("UDAPI100038", "", true), broker.ClassBadInput, "UDAPI100038", "", 1},
		{"other 400", 400, problemBody("UDAPI100999", "", false), broker.ClassBadInput, "UDAPI100999", "", 1},
		{"423 service window", 423, problemBody("UDAPI100072", "", false), broker.ClassUpstream, "", "", 1},
		{"403 permission", 403, problemBody("UDAPI100999", "", false), broker.ClassUpstream, "", "", 1},
		{"404 unsupported URL", 404, problemBody("UDAPI10000", "", false), broker.ClassUpstream, "", "", 1},
		{"500 unexpected", 500, problemBody("UDAPI100500", "", false), broker.ClassUpstream, "", "", 3},
		{"503 html", 503, `<html>Service Unavailable</html>`, broker.ClassUpstream, "", "", 3},
		{"undecodable 200", 200, `<html>` + testToken + `</html>`, broker.ClassUpstream, "", "", 1},
		{"unknown code under 200", 200, problemBody("UDAPI999", "", false), broker.ClassUpstream, "", "", 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ft := &fakeTransport{status: tt.status, body: tt.body}
			c := newTestClient(t, ft, time.Now())
			_, err := c.Profile(ctx(t), cred)
			be, ok := broker.AsError(err)
			if !ok {
				t.Fatalf("err = %v", err)
			}
			if be.Class != tt.class || be.Field != tt.field || be.HTTPStatus != tt.status || be.Attempts != tt.wantCalls || len(ft.reqs) != tt.wantCalls {
				t.Errorf("got %+v after %d calls", be, len(ft.reqs))
			}
			if tt.code != "" && be.Code != tt.code {
				t.Errorf("code = %q, want %q", be.Code, tt.code)
			}
			if be.Class == broker.ClassRateLimited && be.RetryAfter <= 0 {
				t.Error("rate limited without RetryAfter")
			}
			if msg := err.Error(); strings.Contains(msg, testToken) || strings.Contains(msg, "SECRET") || strings.Contains(msg, "<html>") {
				t.Errorf("error message leaks: %s", msg)
			}
		})
	}
}

func TestLoginURL(t *testing.T) {
	t.Parallel()
	c := newTestClient(t, &fakeTransport{}, time.Now())
	got := c.LoginURL("st&ate")
	want := "http://sandbox.test/upstox/v2/login/authorization/dialog?client_id=cid&redirect_uri=http%3A%2F%2Flocalhost%2Fcb&response_type=code&state=st%26ate"
	if got != want {
		t.Fatalf("LoginURL = %s", got)
	}
}

func TestExchangeCode(t *testing.T) {
	t.Parallel()
	issued := time.Date(2026, 3, 2, 14, 0, 0, 0, time.UTC) // 19:30 IST
	ft := &fakeTransport{status: 200, body: `{"email":"a@b.c","exchanges":["NSE"],"products":["D"],"broker":"UPSTOX","user_id":"AB1234","user_name":"Alice","order_types":[],"user_type":"individual","poa":false,"is_active":true,"access_token":"` + testToken + `","extended_token":null}`}
	c := newTestClient(t, ft, issued)
	tok, err := c.ExchangeCode(ctx(t), "code1")
	if err != nil {
		t.Fatal(err)
	}
	if tok.Access.Reveal() != testToken || tok.BrokerUserID != "AB1234" || tok.UserName != "Alice" {
		t.Errorf("token = %+v", tok)
	}
	if want := time.Date(2026, 3, 2, 22, 0, 0, 0, time.UTC); !tok.ExpiresAt.Equal(want) {
		t.Errorf("ExpiresAt = %s, want %s", tok.ExpiresAt, want)
	}
	r, f := ft.reqs[0], ft.form[0]
	if r.Method != "POST" || r.URL.Path != "/upstox/v2/login/authorization/token" || r.Header.Get("Content-Type") != "application/x-www-form-urlencoded" {
		t.Errorf("request %s %s %v", r.Method, r.URL, r.Header)
	}
	if f.Get("code") != "code1" || f.Get("client_id") != "cid" || f.Get("client_secret") != "csecret-SECRET" || f.Get("redirect_uri") != "http://localhost/cb" || f.Get("grant_type") != "authorization_code" {
		t.Errorf("form = %v", f)
	}

	bad := &fakeTransport{status: 500, body: `{}`}
	_, err = newTestClient(t, bad, issued).ExchangeCode(ctx(t), "code1")
	if be, _ := broker.AsError(err); be == nil || len(bad.reqs) != 1 {
		t.Errorf("single-use code exchanged %d times: %v", len(bad.reqs), err)
	}
}

func TestTokenExpiry(t *testing.T) {
	t.Parallel()
	tests := []struct{ issuedIST, wantIST string }{
		{"2026-03-02 02:30", "2026-03-02 03:30"},
		{"2026-03-02 03:29", "2026-03-02 03:30"},
		{"2026-03-02 03:30", "2026-03-03 03:30"},
		{"2026-03-02 09:15", "2026-03-03 03:30"},
		{"2026-12-31 23:59", "2027-01-01 03:30"},
	}
	for _, tt := range tests {
		issued, _ := time.ParseInLocation("2006-01-02 15:04", tt.issuedIST, ist)
		want, _ := time.ParseInLocation("2006-01-02 15:04", tt.wantIST, ist)
		if got := TokenExpiry(issued.UTC()); !got.Equal(want) {
			t.Errorf("TokenExpiry(%s IST) = %s, want %s", tt.issuedIST, got.In(ist), tt.wantIST)
		}
	}
}

func TestProfileAndHeaders(t *testing.T) {
	t.Parallel()
	ft := &fakeTransport{status: 200, body: `{"status":"success","data":{"email":"x","exchanges":["NSE"],"products":[],"broker":"UPSTOX","user_id":"AB1234","user_name":"Alice","order_types":[],"user_type":"individual","poa":false,"is_active":true}}`}
	p, err := newTestClient(t, ft, time.Now()).Profile(ctx(t), cred)
	if err != nil || p.BrokerUserID != "AB1234" || p.UserName != "Alice" {
		t.Fatalf("Profile = %+v, %v", p, err)
	}
	h := ft.reqs[0].Header
	if h.Get("Authorization") != "Bearer "+testToken || h.Get("Accept") != "application/json" || h.Get("Api-Version") != "2.0" {
		t.Errorf("headers %v", h)
	}
}

func TestLogout(t *testing.T) {
	t.Parallel()
	ft := &fakeTransport{status: 200, body: `{"status":"success","data":true}`}
	if err := newTestClient(t, ft, time.Now()).Logout(ctx(t), cred); err != nil {
		t.Fatal(err)
	}
	if r := ft.reqs[0]; r.Method != http.MethodDelete || r.URL.Path != "/upstox/v2/logout" {
		t.Errorf("request %s %s", r.Method, r.URL)
	}
}

func TestOptionChain(t *testing.T) {
	t.Parallel()
	ft := &fakeTransport{status: 200, body: chainBody(3)}
	ch, err := newTestClient(t, ft, time.Now()).OptionChain(ctx(t), cred, "NSE_INDEX|Nifty 50", "2026-03-03")
	if err != nil {
		t.Fatal(err)
	}
	r := ft.reqs[0]
	if r.URL.Path != "/upstox/v2/option/chain" || r.URL.Query().Get("instrument_key") != "NSE_INDEX|Nifty 50" || r.URL.Query().Get("expiry_date") != "2026-03-03" {
		t.Errorf("request %s", r.URL)
	}
	if ch.UnderlyingKey != "NSE_INDEX|Nifty 50" || ch.ExpiryDate != "2026-03-03" || ch.UnderlyingSpot != 22500.5 || len(ch.Strikes) != 3 {
		t.Fatalf("chain = %+v", ch)
	}
	for i := 1; i < len(ch.Strikes); i++ {
		if ch.Strikes[i-1].StrikePrice >= ch.Strikes[i].StrikePrice {
			t.Fatal("strikes not sorted")
		}
	}
	s := ch.Strikes[0]
	if s.StrikePrice != 22400 || s.PCR != 1.25 || s.Call == nil || s.Put != nil {
		t.Fatalf("strike = %+v", s)
	}
	want := broker.OptionSide{InstrumentKey: "NSE_FO|10000", LTP: 150.5, ClosePrice: 140, Volume: 1000, OI: 5000, PrevOI: 4500,
		BidPrice: 150, BidQty: 75, AskPrice: 151, AskQty: 150, Delta: 0.5, Gamma: 0.001, Theta: -10.5, Vega: 12.1, IV: 14.2}
	if *s.Call != want {
		t.Errorf("call = %+v", *s.Call)
	}
}

func TestOptionChainNotAnExpiry(t *testing.T) {
	t.Parallel()
	ft := &fakeTransport{status: 200, body: `{"status":"success","data":[]}`}
	_, err := newTestClient(t, ft, time.Now()).OptionChain(ctx(t), cred, "NSE_INDEX|Nifty 50", "2026-03-04")
	be, ok := broker.AsError(err)
	if !ok || be.Class != broker.ClassBadInput || be.Field != "expiry_date" || be.Attempts != 1 {
		t.Fatalf("err = %+v", be)
	}
}

func TestOptionChainValidatesLocally(t *testing.T) {
	t.Parallel()
	ft := &fakeTransport{status: 200, body: chainBody(1)}
	c := newTestClient(t, ft, time.Now())
	for _, tt := range []struct{ key, expiry, field string }{
		{"Nifty 50", "2026-03-03", "instrument_key"},
		{"NSE_INDEX|Nifty 50", "03-03-2026", "expiry_date"},
	} {
		_, err := c.OptionChain(ctx(t), cred, tt.key, tt.expiry)
		if be, ok := broker.AsError(err); !ok || be.Class != broker.ClassBadInput || be.Field != tt.field {
			t.Errorf("OptionChain(%q, %q) = %v", tt.key, tt.expiry, err)
		}
	}
	if len(ft.reqs) != 0 {
		t.Errorf("bad input reached the broker")
	}
}

func TestQuotes(t *testing.T) {
	t.Parallel()
	ft := &fakeTransport{status: 200, body: `{"status":"success","data":{
		"NSE_EQ:NHPC":{"last_price":80.5,"instrument_token":"NSE_EQ|INE848E01016","ltq":10,"volume":123456,"cp":79.1},
		"NSE_INDEX:Nifty 50":{"last_price":22500.5,"instrument_token":"NSE_INDEX|Nifty 50","ltq":0,"volume":0,"cp":22400}}}`}
	keys := []string{"NSE_INDEX|Nifty 50", "NSE_FO|99999", "NSE_EQ|INE848E01016", "NSE_INDEX|Nifty 50"}
	q, err := newTestClient(t, ft, time.Now()).Quotes(ctx(t), cred, keys)
	if err != nil {
		t.Fatal(err)
	}
	if got := ft.reqs[0].URL.Query().Get("instrument_key"); got != "NSE_INDEX|Nifty 50,NSE_FO|99999,NSE_EQ|INE848E01016" || ft.reqs[0].URL.Path != "/upstox/v3/market-quote/ltp" {
		t.Errorf("asked %s", ft.reqs[0].URL)
	}
	if ft.reqs[0].Header.Get("Api-Version") != "" {
		t.Error("Api-Version sent on v3")
	}
	if len(q.Quotes) != 3 || len(q.Unknown) != 1 || q.Unknown[0] != "NSE_FO|99999" {
		t.Fatalf("quotes = %+v", q)
	}
	nhpc := q.Quotes[1]
	if nhpc.InstrumentKey != "NSE_EQ|INE848E01016" || nhpc.LTP != 80.5 || *nhpc.ClosePrice != 79.1 || *nhpc.Volume != 123456 || nhpc.OI != nil {
		t.Errorf("quote = %+v", nhpc)
	}
	if q.Quotes[0].InstrumentKey != "NSE_INDEX|Nifty 50" || q.Quotes[2].InstrumentKey != "NSE_INDEX|Nifty 50" {
		t.Error("order not preserved")
	}

	tooMany := make([]string, broker.MaxQuoteKeys+1)
	for i := range tooMany {
		tooMany[i] = fmt.Sprintf("NSE_FO|%d", i)
	}
	_, err = newTestClient(t, ft, time.Now()).Quotes(ctx(t), cred, tooMany)
	if be, ok := broker.AsError(err); !ok || be.Class != broker.ClassBadInput || be.Field != "instrument_keys" || len(ft.reqs) != 1 {
		t.Errorf("too many keys: %v", err)
	}
}

func TestValidateInstrumentKey(t *testing.T) {
	t.Parallel()
	good := []string{"NSE_INDEX|Nifty 50", "NSE_EQ|INE848E01016", "NSE_FO|51059", "MCX_FO|1234", "GLOBAL_INDICATOR|GIFT NIFTY", "BCD_FO|1"}
	bad := []string{"", "Nifty 50", "NSE|x", "nse_eq|INE848E01016", "NSE_EQ|", "NSE_EQ|a\nb", "NSE_EQ|a,b", "NSE_EQ|a|b", "NSE_EQ| x", "NSE_EQ|" + strings.Repeat("x", 65), "NSE_EQ|\xff"}
	c := newTestClient(t, &fakeTransport{}, time.Now())
	for _, k := range good {
		if err := c.ValidateInstrumentKey(k); err != nil {
			t.Errorf("%q: %v", k, err)
		}
	}
	for _, k := range bad {
		err := c.ValidateInstrumentKey(k)
		if be, ok := broker.AsError(err); !ok || be.Class != broker.ClassBadInput || be.Field != "instrument_key" {
			t.Errorf("%q accepted or unclassified: %v", k, err)
		}
	}
}

// chainBody is an /v2/option/chain answer with n strikes in reverse order;
// the lowest strike has only a call.
func chainBody(n int) string {
	var b strings.Builder
	b.WriteString(`{"status":"success","data":[`)
	for i := n - 1; i >= 0; i-- {
		strike := 22400 + 50*i
		side := func(tok int) string {
			return fmt.Sprintf(`{"instrument_key":"NSE_FO|%d","market_data":{"ltp":150.5,"volume":1000,"oi":5000,"close_price":140,"bid_price":150,"bid_qty":75,"ask_price":151,"ask_qty":150,"prev_oi":4500},"option_greeks":{"vega":12.1,"theta":-10.5,"gamma":0.001,"delta":0.5,"iv":14.2,"pop":45.2}}`, tok)
		}
		put := side(20000 + i)
		if i == 0 {
			put = "null"
		}
		fmt.Fprintf(&b, `{"expiry":"2026-03-03","pcr":1.25,"strike_price":%d,"underlying_key":"NSE_INDEX|Nifty 50","underlying_spot_price":22500.5,"call_options":%s,"put_options":%s}`, strike, side(10000+i), put)
		if i > 0 {
			b.WriteString(",")
		}
	}
	b.WriteString("]}")
	return b.String()
}

func BenchmarkDecodeOptionChain(b *testing.B) {
	body := []byte(chainBody(50))
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		var env envelope[[]strikeData]
		if err := decodeInto(body, &env); err != nil {
			b.Fatal(err)
		}
		chainFromData("NSE_INDEX|Nifty 50", "2026-03-03", env.Data)
	}
}

func BenchmarkClassify(b *testing.B) {
	r := &broker.Response{Status: 401, Body: []byte(problemBody("UDAPI100050", "", false))}
	b.ReportAllocs()
	for b.Loop() {
		if classify(r).Class != broker.ClassAuthDead {
			b.Fatal("wrong class")
		}
	}
}
