package sandbox

import (
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const (
	nifty      = "NSE_INDEX|Nifty 50"
	fyNifty    = "NSE:NIFTY50-INDEX"
	upDeadBody = `{"errors":[{"errorCode":"UDAPI100050","error_code":"UDAPI100050","message":"Invalid token used to access API","propertyPath":null,"property_path":null,"invalidValue":null,"invalid_value":null}],"status":"error"}`
	fyRevoked  = `{"code":-16,"message":"Could not authenticate the user","s":"error"}`
	fyExpired  = `{"code":-8,"message":"Your token has expired","s":"error"}`
)

func TestUpstoxLogin(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Config{})
	code := e.upstoxCode("alice")
	r := e.upstoxExchange(code, UpstoxClientSecret, redirect)
	if r.status != http.StatusOK {
		t.Fatalf("%d %s", r.status, r.raw)
	}
	for _, f := range []string{"access_token", "extended_token", "user_id", "user_name", "email", "exchanges", "products", "order_types", "user_type", "poa", "is_active"} {
		if _, ok := r.body[f]; !ok {
			t.Errorf("token response lacks %q: %s", f, r.raw)
		}
	}
	if r.body["broker"] != "UPSTOX" || r.body["status"] != nil {
		t.Errorf("want bare JSON with broker UPSTOX: %s", r.raw)
	}
	// The code is single-use.
	wantUpstoxError(t, e.upstoxExchange(code, UpstoxClientSecret, redirect), 400, upCodeCredentials)
	// A failed exchange also burns the code.
	code = e.upstoxCode("alice")
	wantUpstoxError(t, e.upstoxExchange(code, "wrong", redirect), 400, upCodeCredentials)
	wantUpstoxError(t, e.upstoxExchange(code, UpstoxClientSecret, redirect), 400, upCodeCredentials)
	// redirect_uri must equal the dialog's.
	wantUpstoxError(t, e.upstoxExchange(e.upstoxCode(""), UpstoxClientSecret, "http://127.0.0.1:9/other"), 400, upCodeCredentials)
	// Bad client id at the dialog.
	q := url.Values{"client_id": {"nope"}, "redirect_uri": {redirect}, "response_type": {"code"}}
	wantUpstoxError(t, e.do("GET", "/upstox/v2/login/authorization/dialog?"+q.Encode(), nil, nil), 400, upCodeLoginApp)
	q.Set("client_id", UpstoxClientID)
	q.Del("redirect_uri")
	wantUpstoxError(t, e.do("GET", "/upstox/v2/login/authorization/dialog?"+q.Encode(), nil, nil), 400, upCodeLoginApp)

	// Profile belongs to the account that approved the dialog.
	tok := e.upstoxLogin("bob")
	p := e.upstox("GET", "/v2/user/profile", tok)
	if p.status != 200 || p.body["status"] != "success" || obj(p.body["data"])["user_name"] != "Sandbox bob" {
		t.Fatalf("profile: %d %s", p.status, p.raw)
	}
	wantUpstoxError(t, e.upstox("GET", "/v2/user/profile", "garbage"), 401, upCodeInvalidToken)
	// Logout kills the token.
	if r := e.upstox("DELETE", "/v2/logout", tok); r.status != 200 || r.body["data"] != true {
		t.Fatalf("logout: %d %s", r.status, r.raw)
	}
	if r := e.upstox("GET", "/v2/user/profile", tok); r.status != 401 || string(r.raw) != upDeadBody {
		t.Fatalf("after logout: %d %s", r.status, r.raw)
	}
}

func TestFyersLogin(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Config{})
	code := e.fyersCode("alice")
	r := e.fyersExchange(code, fyersAppIDHash(), "authorization_code")
	if r.status != 200 || r.body["s"] != "ok" || r.body["code"] != 200.0 || r.body["message"] != "" {
		t.Fatalf("%d %s", r.status, r.raw)
	}
	tok := r.body["access_token"].(string)
	if _, ok := r.body["refresh_token"].(string); !ok {
		t.Fatal("no refresh_token")
	}
	// The access token is a JWT whose exp is the next 06:00 IST.
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		t.Fatalf("not a JWT")
	}
	payload, _ := base64.RawURLEncoding.DecodeString(parts[1])
	var claims map[string]any
	if err := json.Unmarshal(payload, &claims); err != nil {
		t.Fatal(err)
	}
	wantExp := time.Date(2026, 3, 19, 6, 0, 0, 0, ist).Unix()
	if int64(claims["exp"].(float64)) != wantExp || claims["iat"].(float64) != float64(testStart.Unix()) {
		t.Errorf("claims = %v", claims)
	}
	for _, f := range []string{"hsm_key", "fy_id", "display_name", "sub"} {
		if claims[f] == nil {
			t.Errorf("claim %q missing", f)
		}
	}
	wantFyersError(t, e.fyersExchange(code, fyersAppIDHash(), "authorization_code"), 400, fyCodeAuthCode)
	code = e.fyersCode("alice")
	wantFyersError(t, e.fyersExchange(code, "00ff", "authorization_code"), 400, fyCodeAppIDHash)
	wantFyersError(t, e.fyersExchange(code, fyersAppIDHash(), "authorization_code"), 400, fyCodeAuthCode)
	wantFyersError(t, e.fyersExchange(e.fyersCode("alice"), fyersAppIDHash(), "password"), 400, fyCodeGrantType)
	q := url.Values{"client_id": {"OTHER-100"}, "redirect_uri": {redirect}, "response_type": {"code"}, "state": {"x"}}
	wantFyersError(t, e.do("GET", "/fyers/api/v3/generate-authcode?"+q.Encode(), nil, nil), 400, fyCodeAppID)

	p := e.fyers("GET", "/api/v3/profile", tok)
	if p.status != 200 || obj(p.body["data"])["display_name"] != "Sandbox alice" || obj(p.body["data"])["fy_id"] == nil {
		t.Fatalf("profile: %d %s", p.status, p.raw)
	}
	wantFyersError(t, e.fyers("GET", "/api/v3/profile", "not-a-jwt"), 401, fyCodeInvalid)
	if r := e.fyers("POST", "/api/v3/logout", tok); r.status != 200 || r.body["message"] != "you are successfully logged out" {
		t.Fatalf("logout: %d %s", r.status, r.raw)
	}
	if r := e.fyers("GET", "/api/v3/profile", tok); r.status != 401 || string(r.raw) != fyRevoked {
		t.Fatalf("after logout: %d %s", r.status, r.raw)
	}
}

func TestUpstoxOptionChain(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Config{})
	tok := e.upstoxLogin("")
	exps := e.sb.Expiries(nifty)
	if len(exps) < 7 || exps[0] != "2026-03-24" {
		t.Fatalf("expiries = %v", exps)
	}
	r := e.upstox("GET", "/v2/option/chain?"+url.Values{"instrument_key": {nifty}, "expiry_date": {exps[0]}}.Encode(), tok)
	if r.status != 200 || r.body["status"] != "success" {
		t.Fatalf("%d %s", r.status, r.raw)
	}
	data := list(r.body["data"])
	if len(data) != 2*strikesEachSide+1 {
		t.Fatalf("strikes = %d", len(data))
	}
	keys := map[string]bool{}
	for _, k := range e.sb.OptionKeys(Upstox, nifty, exps[0], 1000) {
		keys[k] = true
	}
	for _, s := range data {
		s := obj(s)
		if s["expiry"] != exps[0] || s["underlying_key"] != nifty || s["underlying_spot_price"].(float64) < 20000 {
			t.Fatalf("strike row %v", s)
		}
		for _, side := range []string{"call_options", "put_options"} {
			o := obj(s[side])
			if !keys[o["instrument_key"].(string)] || !strings.HasPrefix(o["instrument_key"].(string), "NSE_FO|") {
				t.Fatalf("bad key %v", o["instrument_key"])
			}
			md, g := obj(o["market_data"]), obj(o["option_greeks"])
			for _, f := range []string{"ltp", "volume", "oi", "close_price", "bid_price", "bid_qty", "ask_price", "ask_qty", "prev_oi"} {
				if _, ok := md[f]; !ok {
					t.Fatalf("market_data lacks %s", f)
				}
			}
			for _, f := range []string{"vega", "theta", "gamma", "delta", "iv", "pop"} {
				if _, ok := g[f]; !ok {
					t.Fatalf("option_greeks lacks %s", f)
				}
			}
			if iv := g["iv"].(float64); iv < 8 || iv > 40 {
				t.Errorf("iv %v", iv)
			}
			d := g["delta"].(float64)
			if (side == "call_options") != (d > 0) {
				t.Errorf("%s delta %v", side, d)
			}
		}
	}
	// A well-formed date that is not an expiry: success, empty data.
	r = e.upstox("GET", "/v2/option/chain?"+url.Values{"instrument_key": {nifty}, "expiry_date": {"2026-03-25"}}.Encode(), tok)
	if r.status != 200 || len(list(r.body["data"])) != 0 || r.body["data"] == nil {
		t.Fatalf("unlisted expiry: %d %s", r.status, r.raw)
	}
	wantUpstoxError(t, e.upstox("GET", "/v2/option/chain?"+url.Values{"instrument_key": {nifty}, "expiry_date": {"25-03-2026"}}.Encode(), tok), 400, upstoxExpiryMissing)
	wantUpstoxError(t, e.upstox("GET", "/v2/option/chain?"+url.Values{"instrument_key": {nifty}}.Encode(), tok), 400, upstoxExpiryMissing)
	wantUpstoxError(t, e.upstox("GET", "/v2/option/chain?expiry_date=2026-03-24", tok), 400, upCodeKeyMissing)
	wantUpstoxError(t, e.upstox("GET", "/v2/option/chain?instrument_key=Nifty&expiry_date=2026-03-24", tok), 400, upCodeKeyFormat)
}

func TestFyersOptionChain(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Config{})
	tok := e.fyersLogin("alice")
	r := e.fyers("GET", "/data/options-chain-v3?"+url.Values{"symbol": {fyNifty}, "strikecount": {"5"}, "greeks": {"1"}}.Encode(), tok)
	if r.status != 200 || r.body["s"] != "ok" {
		t.Fatalf("%d %s", r.status, r.raw)
	}
	d := obj(r.body["data"])
	rows := list(d["optionsChain"])
	if len(rows) != 1+2*11 {
		t.Fatalf("rows = %d", len(rows))
	}
	first := obj(rows[0])
	if first["strike_price"] != -1.0 || first["option_type"] != "" || first["symbol"] != fyNifty || first["fp"] == nil {
		t.Fatalf("underlying row %v", first)
	}
	for _, row := range rows[1:] {
		row := obj(row)
		g := obj(row["greeks"])
		if g == nil || g["delta"] == nil || g["iv"] == nil {
			t.Fatalf("row without greeks: %v", row)
		}
		if !strings.HasPrefix(row["symbol"].(string), "NSE:NIFTY26") {
			t.Fatalf("symbol %v", row["symbol"])
		}
	}
	// Weekly symbol format: NSE:NIFTY26 3 24 <strike> CE.
	if s := obj(rows[1])["symbol"].(string); !strings.HasPrefix(s, "NSE:NIFTY26324") {
		t.Errorf("weekly symbol %s", s)
	}
	exp := list(d["expiryData"])
	if len(exp) < 7 || obj(exp[0])["date"] != "24-03-2026" {
		t.Fatalf("expiryData %v", exp)
	}
	if obj(d["indiavixData"])["symbol"] != "NSE:INDIAVIX-INDEX" || d["callOi"].(float64) <= 0 || d["putOi"].(float64) <= 0 {
		t.Fatalf("data %v", d)
	}
	// The monthly expiry (last Tuesday of March) by its timestamp.
	var monthly map[string]any
	for _, x := range exp {
		if obj(x)["expiry_flag"] == "M" {
			monthly = obj(x)
			break
		}
	}
	r = e.fyers("GET", "/data/options-chain-v3?"+url.Values{"symbol": {fyNifty}, "strikecount": {"1"}, "timestamp": {monthly["expiry"].(string)}}.Encode(), tok)
	if r.status != 200 {
		t.Fatalf("%d %s", r.status, r.raw)
	}
	row := obj(list(obj(r.body["data"])["optionsChain"])[1])
	if s := row["symbol"].(string); !strings.HasPrefix(s, "NSE:NIFTY26MAR") || row["greeks"] != nil {
		t.Errorf("monthly row %v", row)
	}
	wantFyersError(t, e.fyers("GET", "/data/options-chain-v3?"+url.Values{"symbol": {fyNifty}, "strikecount": {"51"}}.Encode(), tok), 400, fyCodeParams)
	wantFyersError(t, e.fyers("GET", "/data/options-chain-v3?"+url.Values{"symbol": {"NSE:NOPE-INDEX"}}.Encode(), tok), 400, fyCodeSymbol)
}

func TestQuotes(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Config{})
	tok := e.upstoxLogin("")
	opt := e.sb.OptionKeys(Upstox, nifty, "", 1)[0]
	keys := []string{nifty, "NSE_EQ|INE002A01018", opt, "NSE_EQ|INE000000000"}
	r := e.upstox("GET", "/v3/market-quote/ltp?"+url.Values{"instrument_key": {strings.Join(keys, ",")}}.Encode(), tok)
	if r.status != 200 {
		t.Fatalf("%d %s", r.status, r.raw)
	}
	data := obj(r.body["data"])
	if len(data) != 3 {
		t.Fatalf("data = %v", data)
	}
	idx, eq := obj(data["NSE_INDEX:Nifty 50"]), obj(data["NSE_EQ:RELIANCE"])
	if idx["instrument_token"] != nifty || eq["instrument_token"] != "NSE_EQ|INE002A01018" {
		t.Fatalf("data %v", data)
	}
	var optEntry map[string]any
	for k, v := range data {
		if strings.HasPrefix(k, "NSE_FO:NIFTY26324") {
			optEntry = obj(v)
		}
	}
	if optEntry == nil || optEntry["instrument_token"] != opt {
		t.Fatalf("option entry missing: %v", data)
	}
	for _, f := range []string{"last_price", "ltq", "volume", "cp"} {
		if _, ok := eq[f]; !ok {
			t.Errorf("ltp v3 entry lacks %s", f)
		}
	}
	r = e.upstox("GET", "/v2/market-quote/quotes?"+url.Values{"instrument_key": {"NSE_EQ|INE002A01018," + opt}}.Encode(), tok)
	full := obj(obj(r.body["data"])["NSE_EQ:RELIANCE"])
	for _, f := range []string{"ohlc", "depth", "timestamp", "instrument_token", "symbol", "last_price", "volume", "average_price", "oi", "net_change", "total_buy_quantity", "total_sell_quantity", "lower_circuit_limit", "upper_circuit_limit", "last_trade_time", "oi_day_high", "oi_day_low"} {
		if _, ok := full[f]; !ok {
			t.Errorf("full quote lacks %s", f)
		}
	}
	if len(list(obj(full["depth"])["buy"])) != 5 {
		t.Errorf("depth %v", full["depth"])
	}
	wantUpstoxError(t, e.upstox("GET", "/v3/market-quote/ltp", tok), 400, upCodeKeyMissing)
	wantUpstoxError(t, e.upstox("GET", "/v3/market-quote/ltp?instrument_key=RELIANCE", tok), 400, upCodeKeyFormat)
	wantUpstoxError(t, e.upstox("GET", "/v3/market-quote/ltp?instrument_key=XX_EQ%7CA", tok), 400, upCodeKeyInvalid)
	many := strings.TrimSuffix(strings.Repeat(nifty+",", 501), ",")
	wantUpstoxError(t, e.upstox("GET", "/v3/market-quote/ltp?"+url.Values{"instrument_key": {many}}.Encode(), tok), 400, upCodeTooManyKeys)
	if r := e.upstox("GET", "/v2/market-quote/ltp?"+url.Values{"instrument_key": {nifty}}.Encode(), tok); len(obj(obj(r.body["data"])["NSE_INDEX:Nifty 50"])) != 2 {
		t.Errorf("v2 ltp: %s", r.raw)
	}

	ft := e.fyersLogin("alice")
	fyOpt := e.sb.OptionKeys(Fyers, fyNifty, "", 1)[0]
	fr := e.fyers("GET", "/data/quotes?"+url.Values{"symbols": {"NSE:SBIN-EQ,NSE:NOPE-EQ," + fyOpt}}.Encode(), ft)
	d := list(fr.body["d"])
	if fr.status != 200 || len(d) != 3 {
		t.Fatalf("%d %s", fr.status, fr.raw)
	}
	sbin, bad, o := obj(d[0]), obj(d[1]), obj(d[2])
	if sbin["s"] != "ok" || sbin["n"] != "NSE:SBIN-EQ" || obj(sbin["v"])["lp"].(float64) <= 0 || bad["s"] != "error" || o["s"] != "ok" {
		t.Fatalf("d = %v", d)
	}
	for _, f := range []string{"lp", "ch", "chp", "prev_close_price", "volume", "open_price", "high_price", "low_price", "bid", "ask", "atp", "tt", "symbol"} {
		if _, ok := obj(sbin["v"])[f]; !ok {
			t.Errorf("fyers quote lacks %s", f)
		}
	}
	many = strings.TrimSuffix(strings.Repeat("NSE:SBIN-EQ,", 51), ",")
	wantFyersError(t, e.fyers("GET", "/data/quotes?"+url.Values{"symbols": {many}}.Encode(), ft), 400, fyCodeParams)
	wantFyersError(t, e.fyers("GET", "/data/quotes?symbols=SBIN", ft), 400, fyCodeSymbol)
}

func TestRevokeAndExpire(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Config{})
	up, up2 := e.upstoxLogin("alice"), e.upstoxLogin("bob")
	fy, fy2 := e.fyersLogin("alice"), e.fyersLogin("bob")
	if r := e.control("POST", "/sandbox/revoke", `{"broker":"upstox","account":"alice"}`); r.status != 200 {
		t.Fatalf("%d %s", r.status, r.raw)
	}
	e.sb.Expire(Upstox, "bob")
	for _, tok := range []string{up, up2} {
		if r := e.upstox("GET", "/v2/user/profile", tok); r.status != 401 || string(r.raw) != upDeadBody {
			t.Fatalf("%d %s", r.status, r.raw)
		}
	}
	e.sb.Revoke(Fyers, "alice")
	if r := e.control("POST", "/sandbox/expire", `{"broker":"fyers","account":"bob"}`); r.status != 200 {
		t.Fatalf("%d %s", r.status, r.raw)
	}
	if r := e.fyers("GET", "/api/v3/profile", fy); r.status != 401 || string(r.raw) != fyRevoked {
		t.Fatalf("%d %s", r.status, r.raw)
	}
	if r := e.fyers("GET", "/api/v3/profile", fy2); r.status != 401 || string(r.raw) != fyExpired {
		t.Fatalf("%d %s", r.status, r.raw)
	}
	// A fresh login works again.
	if r := e.upstox("GET", "/v2/user/profile", e.upstoxLogin("alice")); r.status != 200 {
		t.Fatalf("%d %s", r.status, r.raw)
	}
	for _, body := range []string{`{"broker":"kite","account":"a"}`, `{"broker":"upstox"}`, `{"broker":"upstox","account":"a","x":1}`, `nope`} {
		if r := e.control("POST", "/sandbox/revoke", body); r.status != 400 || r.body["error"] == nil {
			t.Errorf("%s: %d %s", body, r.status, r.raw)
		}
	}
}

func TestTokenExpiryByClock(t *testing.T) {
	t.Parallel()
	tests := []struct {
		issued, dies time.Time
	}{
		{time.Date(2026, 3, 18, 2, 30, 0, 0, ist), time.Date(2026, 3, 18, 3, 30, 0, 0, ist)},
		{time.Date(2026, 3, 18, 3, 30, 0, 0, ist), time.Date(2026, 3, 19, 3, 30, 0, 0, ist)},
		{time.Date(2026, 3, 18, 23, 59, 0, 0, ist), time.Date(2026, 3, 19, 3, 30, 0, 0, ist)},
	}
	for _, tc := range tests {
		t.Run(tc.issued.Format("15:04"), func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, Config{})
			e.clock.Set(tc.issued)
			tok := e.upstoxLogin("")
			e.clock.Set(tc.dies.Add(-time.Second))
			if r := e.upstox("GET", "/v2/user/profile", tok); r.status != 200 {
				t.Fatalf("a second before: %d %s", r.status, r.raw)
			}
			e.clock.Set(tc.dies)
			if r := e.upstox("GET", "/v2/user/profile", tok); r.status != 401 || string(r.raw) != upDeadBody {
				t.Fatalf("at expiry: %d %s", r.status, r.raw)
			}
		})
	}
	t.Run("fyers", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t, Config{})
		tok := e.fyersLogin("a")
		e.clock.Set(time.Date(2026, 3, 19, 5, 59, 59, 0, ist))
		if r := e.fyers("GET", "/api/v3/profile", tok); r.status != 200 {
			t.Fatalf("%d %s", r.status, r.raw)
		}
		e.clock.Set(time.Date(2026, 3, 19, 6, 0, 0, 0, ist))
		if r := e.fyers("GET", "/api/v3/profile", tok); string(r.raw) != fyExpired {
			t.Fatalf("%d %s", r.status, r.raw)
		}
	})
}

func TestRateLimits(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Config{})
	up := e.upstoxLogin("")
	for i := range 50 {
		if r := e.upstox("GET", "/v2/user/profile", up); r.status != 200 {
			t.Fatalf("call %d: %d", i, r.status)
		}
	}
	wantUpstoxError(t, e.upstox("GET", "/v2/user/profile", up), 429, upCodeRateLimit)
	e.clock.Advance(time.Second)
	if r := e.upstox("GET", "/v2/user/profile", up); r.status != 200 {
		t.Fatalf("next second: %d", r.status)
	}

	fy := e.fyersLogin("a")
	for range 10 {
		e.fyers("GET", "/api/v3/profile", fy)
	}
	e.clock.Advance(300 * time.Millisecond)
	r := e.fyers("GET", "/api/v3/profile", fy)
	wantFyersError(t, r, 429, fyCodeRateLimit)
	if r.header.Get("Retry-After") != "1" || r.header.Get("X-Retry-After-Ms") != "700" {
		t.Fatalf("headers %v", r.header)
	}
	if r := e.control("POST", "/sandbox/config", `{"rate_limits":false}`); r.status != 200 || r.body["rate_limits"] != false {
		t.Fatalf("%d %s", r.status, r.raw)
	}
	for range 20 {
		if r := e.fyers("GET", "/api/v3/profile", fy); r.status != 200 {
			t.Fatalf("limits off: %d", r.status)
		}
	}
	if r := e.control("POST", "/sandbox/config", `{"feed_interval_ms":-1}`); r.status != 400 {
		t.Fatalf("bad config accepted: %d", r.status)
	}
}

func TestFaults(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Config{})
	up := e.upstoxLogin("carol")
	chain := "/v2/option/chain?" + url.Values{"instrument_key": {nifty}, "expiry_date": {"2026-03-24"}}.Encode()
	if r := e.control("POST", "/sandbox/faults", `{"broker":"upstox","path_prefix":"/v2/option/","status":503,"count":2}`); r.status != 200 {
		t.Fatalf("%d %s", r.status, r.raw)
	}
	wantUpstoxError(t, e.upstox("GET", chain, up), 503, upCodeUnexpected)
	if r := e.upstox("GET", "/v2/user/profile", up); r.status != 200 {
		t.Fatalf("unmatched path failed: %d", r.status)
	}
	wantUpstoxError(t, e.upstox("GET", chain, up), 503, upCodeUnexpected)
	if r := e.upstox("GET", chain, up); r.status != 200 {
		t.Fatalf("after count: %d", r.status)
	}
	// 401 gives the dead-token body; 429 carries the retry headers.
	e.control("POST", "/sandbox/faults", `{"broker":"upstox","path_prefix":"/v2/user","status":401}`)
	if r := e.upstox("GET", "/v2/user/profile", up); string(r.raw) != upDeadBody {
		t.Fatalf("%s", r.raw)
	}
	e.control("POST", "/sandbox/faults", `{"broker":"upstox","path_prefix":"/v2/user","status":429}`)
	if r := e.upstox("GET", "/v2/user/profile", up); r.status != 429 || r.header.Get("Retry-After") != "" {
		t.Fatalf("%d %v", r.status, r.header)
	}
	fy := e.fyersLogin("dave")
	e.control("POST", "/sandbox/faults", `{"broker":"fyers","path_prefix":"/data/","status":429,"retry_after_ms":1500}`)
	r := e.fyers("GET", "/data/quotes?symbols=NSE:SBIN-EQ", fy)
	wantFyersError(t, r, 429, fyCodeRateLimit)
	if r.header.Get("Retry-After") != "2" || r.header.Get("X-Retry-After-Ms") != "1500" {
		t.Fatalf("headers %v", r.header)
	}
	// Latency alone.
	e.control("POST", "/sandbox/faults", `{"broker":"fyers","path_prefix":"/api/v3/profile","latency_ms":60}`)
	start := time.Now()
	if r := e.fyers("GET", "/api/v3/profile", fy); r.status != 200 || time.Since(start) < 60*time.Millisecond {
		t.Fatalf("latency: %d after %v", r.status, time.Since(start))
	}
	// Reset closes the connection mid-body.
	e.control("POST", "/sandbox/faults", `{"broker":"fyers","path_prefix":"/api/v3/profile","reset":true}`)
	req, _ := http.NewRequest("GET", e.srv.URL+"/fyers/api/v3/profile", nil)
	req.Header.Set("Authorization", FyersAppID+":"+fy)
	if resp, err := http.DefaultClient.Do(req); err == nil {
		_, err = readAll(resp)
		if err == nil {
			t.Fatal("reset fault: body read fine")
		}
	}
	// DELETE clears pending faults.
	e.control("POST", "/sandbox/faults", `{"broker":"fyers","path_prefix":"/","status":500,"count":5}`)
	e.control("DELETE", "/sandbox/faults", "")
	if r := e.fyers("GET", "/api/v3/profile", fy); r.status != 200 {
		t.Fatalf("after clear: %d", r.status)
	}
	for _, body := range []string{`{"broker":"upstox","status":200}`, `{"broker":"x","status":500}`, `{"broker":"upstox"}`} {
		if r := e.control("POST", "/sandbox/faults", body); r.status != 400 {
			t.Errorf("%s accepted", body)
		}
	}
	st := e.sb.Stats()
	if st.Count(Upstox, "/v2/option/chain", 503) != 2 || st.Count(Fyers, "/api/v3/profile", 0) < 3 {
		t.Fatalf("stats %+v", st.Calls)
	}
	var found bool
	for _, c := range st.Calls {
		if c.Broker == Upstox && c.Path == "/v2/option/chain" && c.Status == 503 && c.Account == "carol" {
			found = true
		}
	}
	if !found {
		t.Errorf("fault calls not attributed to carol: %+v", st.Calls)
	}
	hr := e.do("GET", "/sandbox/stats", nil, nil)
	if hr.status != 200 || len(list(hr.body["calls"])) == 0 {
		t.Fatalf("GET stats: %s", hr.raw)
	}
}

func readAll(resp *http.Response) ([]byte, error) {
	defer resp.Body.Close()
	var b strings.Builder
	buf := make([]byte, 512)
	for {
		n, err := resp.Body.Read(buf)
		b.Write(buf[:n])
		if err != nil {
			if err.Error() == "EOF" {
				return []byte(b.String()), nil
			}
			return nil, err
		}
	}
}

func TestPersistence(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	e := newEnv(t, Config{DataDir: dir})
	good, dead := e.upstoxLogin("keep"), e.upstoxLogin("gone")
	fy := e.fyersLogin("keep")
	e.sb.Revoke(Upstox, "gone")
	b, err := os.ReadFile(filepath.Join(dir, stateFile))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(b), good) || strings.Contains(string(b), fy) {
		t.Fatal("state file holds a plaintext token")
	}
	if err := e.sb.Close(); err != nil {
		t.Fatal(err)
	}
	e2 := newEnv(t, Config{DataDir: dir, Now: e.clock.Now})
	if r := e2.upstox("GET", "/v2/user/profile", good); r.status != 200 {
		t.Fatalf("restarted: %d %s", r.status, r.raw)
	}
	if r := e2.fyers("GET", "/api/v3/profile", fy); r.status != 200 {
		t.Fatalf("restarted fyers: %d %s", r.status, r.raw)
	}
	if r := e2.upstox("GET", "/v2/user/profile", dead); string(r.raw) != upDeadBody {
		t.Fatalf("revoked token honoured after restart: %s", r.raw)
	}
	e.clock.Set(time.Date(2026, 3, 19, 3, 30, 0, 0, ist))
	if r := e2.upstox("GET", "/v2/user/profile", good); r.status != 401 {
		t.Fatalf("expiry not kept: %d", r.status)
	}
}

func TestIndexPage(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Config{})
	e.upstoxLogin("zed")
	r := e.do("GET", "/", nil, nil)
	if r.status != 200 || !strings.Contains(string(r.raw), "zed") || !strings.Contains(string(r.raw), nifty) {
		t.Fatalf("%d %s", r.status, r.raw)
	}
	if r := e.upstox("GET", "/v9/nothing", "x"); r.status != 404 {
		t.Fatalf("%d", r.status)
	}
}
