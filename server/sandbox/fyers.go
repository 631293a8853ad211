package sandbox

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Fyers error codes and messages the sandbox answers with (brokers.md §2.8).
const (
	fyCodeExpired     = -8
	fyCodeInvalid     = -15
	fyCodeAuth        = -16
	fyCodeParams      = -50
	fyCodeSymbol      = -300
	fyCodeAppID       = -352
	fyCodeRateLimit   = -429
	fyCodeAppIDHash   = -371 // v2-era sheet: bad appIdHash
	fyCodeAuthCode    = -374 // v2-era sheet: no auth code; used for unknown or used codes too (UNCONFIRMED)
	fyCodeGrantType   = -441
	fyMsgAuth         = "Could not authenticate the user"
	fyMsgExpired      = "Your token has expired"
	fyMsgInvalid      = "Please provide valid token"
	fyMsgRateLimit    = "request limit reached"
	fyersMaxQuotes    = 50
	fyersMaxStrikes   = 50
	fyersRefreshLife  = 15 * 24 * time.Hour
	fyersDefaultCount = 10
)

// fyersExpiryClock is the IST time of day a Fyers option-chain expiry epoch
// ("timestamp", expiryData[].expiry) stands for. UNCONFIRMED.
const fyersExpiryClock = 15*time.Hour + 30*time.Minute

// fyersExpiryEpoch is the epoch string Fyers uses for expiry e.
func fyersExpiryEpoch(e expiry) string {
	d, _ := time.ParseInLocation(time.DateOnly, e.date, ist)
	return strconv.FormatInt(d.Add(fyersExpiryClock).Unix(), 10)
}

// fyersAppIDHash is the appIdHash validate-authcode expects.
func fyersAppIDHash() string {
	h := sha256.Sum256([]byte(FyersAppID + ":" + FyersSecret))
	return hex.EncodeToString(h[:])
}

func fyersError(w http.ResponseWriter, status, code int, msg string) {
	writeJSON(w, status, map[string]any{"s": "error", "code": code, "message": msg})
}

func fyersOK(w http.ResponseWriter, body map[string]any) {
	body["s"], body["code"] = "ok", 200
	if _, ok := body["message"]; !ok {
		body["message"] = ""
	}
	writeJSON(w, http.StatusOK, body)
}

// fyersRateLimited writes the 429 answer with its retry headers.
func fyersRateLimited(w http.ResponseWriter, wait time.Duration) {
	setRetryAfter(w, wait)
	fyersError(w, http.StatusTooManyRequests, fyCodeRateLimit, fyMsgRateLimit)
}

// fyersFault answers an injected fault with Fyers' body for its status.
func fyersFault(w http.ResponseWriter, f Fault) {
	switch {
	case f.Status == http.StatusUnauthorized:
		fyersError(w, f.Status, fyCodeAuth, fyMsgAuth)
	case f.Status == http.StatusTooManyRequests:
		wait := time.Duration(f.RetryAfterMS) * time.Millisecond
		if wait <= 0 {
			wait = time.Second
		}
		fyersRateLimited(w, wait)
	case f.Status >= 500:
		fyersError(w, f.Status, -500, "Something went wrong. Please try again later.")
	default:
		fyersError(w, f.Status, fyCodeParams, "Invalid input")
	}
}

func (s *Sandbox) fyersNotFound(w http.ResponseWriter, _ *http.Request, _ *call) {
	fyersError(w, http.StatusNotFound, fyCodeParams, "Not Found")
}

// fyersAuth checks "Authorization: <app_id>:<token>" and the rate limit;
// on failure it has written the answer.
func (s *Sandbox) fyersAuth(w http.ResponseWriter, r *http.Request, c *call) (string, bool) {
	app, tok, found := strings.Cut(r.Header.Get("Authorization"), ":")
	if !found || tok == "" {
		fyersError(w, http.StatusUnauthorized, fyCodeInvalid, fyMsgInvalid)
		return "", false
	}
	if _, err := parseJWT(tok); err != nil {
		fyersError(w, http.StatusUnauthorized, fyCodeInvalid, fyMsgInvalid)
		return "", false
	}
	now := s.now()
	rec, st := s.store.check(Fyers, tok, now)
	c.account = rec.Account
	switch {
	case st == authExpired:
		fyersError(w, http.StatusUnauthorized, fyCodeExpired, fyMsgExpired)
		return "", false
	case st != authOK, app != FyersAppID, rec.Kind != "access":
		fyersError(w, http.StatusUnauthorized, fyCodeAuth, fyMsgAuth)
		return "", false
	}
	if s.rateLimits.Load() {
		if ok, wait := s.limiter.allow(Fyers, hashToken(tok), now); !ok {
			fyersRateLimited(w, wait)
			return "", false
		}
	}
	return tok, true
}

func (s *Sandbox) fyersGenerateAuthcode(w http.ResponseWriter, r *http.Request, c *call) {
	q := r.URL.Query()
	if q.Get("client_id") != FyersAppID {
		fyersError(w, http.StatusBadRequest, fyCodeAppID, "Invalid App ID")
		return
	}
	ru, err := url.Parse(q.Get("redirect_uri"))
	if q.Get("redirect_uri") == "" || err != nil || !ru.IsAbs() {
		fyersError(w, http.StatusBadRequest, fyCodeParams, "Invalid redirect_uri")
		return
	}
	if q.Get("response_type") != "code" {
		fyersError(w, http.StatusBadRequest, fyCodeParams, "Invalid response_type")
		return
	}
	account := q.Get("account")
	if account == "" {
		account = DefaultAccount
	}
	c.account = account
	code := s.codes.issue(grant{broker: Fyers, account: account, redirectURI: q.Get("redirect_uri"), issued: s.now()})
	rq := ru.Query()
	rq.Set("s", "ok")
	rq.Set("code", "200")
	rq.Set("auth_code", code)
	rq.Set("state", q.Get("state"))
	ru.RawQuery = rq.Encode()
	http.Redirect(w, r, ru.String(), http.StatusFound)
}

func (s *Sandbox) fyersValidateAuthcode(w http.ResponseWriter, r *http.Request, c *call) {
	var body struct {
		GrantType string `json:"grant_type"`
		AppIDHash string `json:"appIdHash"`
		Code      string `json:"code"`
	}
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<16)).Decode(&body); err != nil {
		fyersError(w, http.StatusBadRequest, fyCodeParams, "Invalid input")
		return
	}
	if body.Code == "" {
		fyersError(w, http.StatusBadRequest, fyCodeAuthCode, "auth code is missing")
		return
	}
	now := s.now()
	g, ok := s.codes.take(body.Code, now) // single-use whatever happens next
	if ok && g.broker == Fyers {
		c.account = g.account
	}
	switch {
	case body.GrantType != "authorization_code":
		fyersError(w, http.StatusBadRequest, fyCodeGrantType, "invalid grant type")
		return
	case body.AppIDHash != fyersAppIDHash():
		fyersError(w, http.StatusBadRequest, fyCodeAppIDHash, "invalid app id hash")
		return
	case !ok || g.broker != Fyers:
		fyersError(w, http.StatusBadRequest, fyCodeAuthCode, "invalid auth code")
		return
	}
	exp := fyersExpiry(now)
	access := newFyersJWT("access_token", g.account, now, exp)
	refresh := newFyersJWT("refresh_token", g.account, now, now.Add(fyersRefreshLife))
	for _, t := range []struct {
		tok, kind string
		exp       time.Time
	}{{access, "access", exp}, {refresh, "refresh", now.Add(fyersRefreshLife)}} {
		if err := s.store.add(t.tok, tokenRecord{Broker: Fyers, Account: g.account, Kind: t.kind, Issued: now, Expires: t.exp, State: stateActive}); err != nil {
			s.log.Error("sandbox: persist token", "err", err)
			fyersError(w, http.StatusInternalServerError, -500, "Something went wrong")
			return
		}
	}
	s.log.Info("sandbox: fyers token issued", "account", g.account)
	fyersOK(w, map[string]any{"access_token": access, "refresh_token": refresh})
}

func (s *Sandbox) fyersProfile(w http.ResponseWriter, r *http.Request, c *call) {
	if _, ok := s.fyersAuth(w, r, c); !ok {
		return
	}
	a := c.account
	fyersOK(w, map[string]any{"data": map[string]any{
		"name": strings.ToUpper("Sandbox " + a), "image": nil, "display_name": "Sandbox " + a,
		"email_id": "s*****@sandbox.invalid", "PAN": "XXXXX1234X", "fy_id": accountUserID("XS", a),
		"pin_change_date": "01-01-2026 00:00:00", "mobile_number": "******1234", "totp": true,
		"pwd_change_date": nil, "pwd_to_expire": 90, "ddpi_enabled": false, "mtf_enabled": false,
	}})
}

func (s *Sandbox) fyersLogout(w http.ResponseWriter, r *http.Request, c *call) {
	tok, ok := s.fyersAuth(w, r, c)
	if !ok {
		return
	}
	if err := s.store.setState(tok, stateLoggedOut); err != nil {
		s.log.Error("sandbox: persist state", "err", err)
	}
	fyersOK(w, map[string]any{"message": "you are successfully logged out"})
}

// fyersUnderlyingRow is the first optionsChain row (and indiavixData).
func fyersUnderlyingRow(u *underlying, q quote, fp float64) map[string]any {
	_, ex, _ := strings.Cut(u.fySymbol, ":")
	row := map[string]any{
		"description": u.name, "ex_symbol": strings.TrimSuffix(strings.TrimSuffix(ex, "-INDEX"), "-EQ"), "exchange": "NSE",
		"fyToken": u.fyToken, "ltp": q.ltp, "ltpch": round2(q.ltp - q.cp), "ltpchp": pct(q.ltp, q.cp),
		"option_type": "", "strike_price": -1, "symbol": u.fySymbol,
	}
	if fp > 0 {
		row["fp"], row["fpch"], row["fpchp"] = fp, round2(fp-q.cp), pct(fp, q.cp)
	}
	return row
}

func pct(v, base float64) float64 {
	if base == 0 {
		return 0
	}
	return round2((v - base) / base * 100)
}

func (s *Sandbox) fyersChain(w http.ResponseWriter, r *http.Request, c *call) {
	if _, ok := s.fyersAuth(w, r, c); !ok {
		return
	}
	q := r.URL.Query()
	sym := q.Get("symbol")
	if sym == "" {
		fyersError(w, http.StatusBadRequest, fyCodeParams, "symbol is required")
		return
	}
	u, ok := s.mkt.byFy[sym]
	if !ok || u.step == 0 {
		fyersError(w, http.StatusBadRequest, fyCodeSymbol, "Invalid symbol")
		return
	}
	n := fyersDefaultCount
	if raw := q.Get("strikecount"); raw != "" {
		v, err := strconv.Atoi(raw)
		if err != nil || v < 1 || v > fyersMaxStrikes {
			fyersError(w, http.StatusBadRequest, fyCodeParams, fmt.Sprintf("strikecount must be between 1 and %d", fyersMaxStrikes))
			return
		}
		n = v
	}
	now := s.now()
	exps := s.mkt.expiries(u, now)
	chosen := exps[0]
	if ts := q.Get("timestamp"); ts != "" {
		found := false
		for _, e := range exps {
			if fyersExpiryEpoch(e) == ts {
				chosen, found = e, true
			}
		}
		if !found {
			fyersError(w, http.StatusBadRequest, fyCodeParams, "Invalid timestamp")
			return
		}
	}
	greeks := q.Get("greeks") == "1"
	uq := s.mkt.quote(instrument{u: u}, now)
	years := math.Max(chosen.at.Sub(now).Seconds(), 0) / (365 * 24 * 3600)
	rows := []map[string]any{fyersUnderlyingRow(u, uq, tick(uq.ltp*math.Exp(riskFreeRate*years)))}
	atm := math.Round(uq.ltp/u.step) * u.step
	var callOI, putOI float64
	for _, ct := range s.mkt.chain(u, chosen.date, now) {
		if math.Abs(ct.strike-atm) > float64(n)*u.step+u.step/2 {
			continue
		}
		oq := s.mkt.quote(instrument{u: u, opt: ct}, now)
		side := "PE"
		if ct.call {
			side = "CE"
			callOI += oq.oi
		} else {
			putOI += oq.oi
		}
		row := map[string]any{
			"ask": oq.ask, "bid": oq.bid, "description": ct.symbol, "ex_symbol": u.root, "exchange": "NSE",
			"fyToken": ct.fyToken, "ltp": oq.ltp, "ltpch": round2(oq.ltp - oq.cp), "ltpchp": pct(oq.ltp, oq.cp),
			"oi": int64(oq.oi), "oich": int64(oq.oi - oq.prevOI), "oichp": pct(oq.oi, oq.prevOI), "option_type": side,
			"prev_oi": int64(oq.prevOI), "strike_price": ct.strike, "symbol": ct.fySymbol, "volume": oq.volume,
		}
		if greeks {
			g := oq.greeks
			row["greeks"] = map[string]any{"delta": g.delta, "gamma": g.gamma, "theta": g.theta, "vega": g.vega, "iv": g.iv}
		}
		rows = append(rows, row)
	}
	expData := make([]map[string]any, 0, len(exps))
	for _, e := range exps {
		d, _ := time.Parse(time.DateOnly, e.date)
		flag := "W"
		if e.monthly {
			flag = "M"
		}
		expData = append(expData, map[string]any{"date": d.Format("02-01-2006"), "expiry": fyersExpiryEpoch(e), "expiry_flag": flag})
	}
	vix := s.mkt.byFy["NSE:INDIAVIX-INDEX"]
	vq := s.mkt.quote(instrument{u: vix}, now)
	vixRow := fyersUnderlyingRow(vix, vq, 0)
	vixRow["ask"], vixRow["bid"] = 0.0, 0.0
	fyersOK(w, map[string]any{"data": map[string]any{
		"callOi": int64(callOI), "putOi": int64(putOI), "expiryData": expData,
		"indiavixData": vixRow, "optionsChain": rows,
	}})
}

func (s *Sandbox) fyersQuotes(w http.ResponseWriter, r *http.Request, c *call) {
	if _, ok := s.fyersAuth(w, r, c); !ok {
		return
	}
	raw := r.URL.Query().Get("symbols")
	if strings.TrimSpace(raw) == "" {
		fyersError(w, http.StatusBadRequest, fyCodeParams, "symbols is required")
		return
	}
	syms := strings.Split(raw, ",")
	if len(syms) > fyersMaxQuotes {
		fyersError(w, http.StatusBadRequest, fyCodeParams, fmt.Sprintf("maximum %d symbols allowed", fyersMaxQuotes))
		return
	}
	for i, sym := range syms {
		syms[i] = strings.TrimSpace(sym)
		if ex, name, ok := strings.Cut(syms[i], ":"); !ok || ex == "" || name == "" {
			fyersError(w, http.StatusBadRequest, fyCodeSymbol, "Please provide a valid symbol")
			return
		}
	}
	now := s.now()
	d := make([]map[string]any, 0, len(syms))
	for _, sym := range syms {
		in, ok := s.mkt.lookupFyers(sym, now)
		if !ok {
			d = append(d, map[string]any{"n": sym, "s": "error", "errmsg": "invalid symbol",
				"v": map[string]any{"code": fyCodeSymbol, "errmsg": "invalid symbol", "symbol": sym}})
			continue
		}
		q := s.mkt.quote(in, now)
		fyTok, short, desc := in.u.fyToken, strings.TrimPrefix(in.u.fySymbol, "NSE:"), in.u.name
		if in.opt != nil {
			fyTok, short, desc = in.opt.fyToken, in.opt.symbol, in.opt.symbol
		}
		d = append(d, map[string]any{"n": sym, "s": "ok", "v": map[string]any{
			"ch": round2(q.ltp - q.cp), "chp": pct(q.ltp, q.cp), "lp": q.ltp, "spread": round2(q.ask - q.bid),
			"ask": q.ask, "bid": q.bid, "open_price": q.open, "high_price": q.high, "low_price": q.low,
			"prev_close_price": q.cp, "atp": q.atp, "volume": q.volume, "short_name": short, "exchange": "NSE",
			"description": desc, "original_name": sym, "symbol": sym, "fyToken": fyTok,
			"tt": strconv.FormatInt(q.ltt.Unix(), 10),
		}})
	}
	fyersOK(w, map[string]any{"d": d})
}
