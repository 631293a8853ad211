package sandbox

import (
	"crypto/rand"
	"fmt"
	"mime"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Upstox error codes the sandbox answers with (brokers.md §1.6, §1.8).
const (
	upCodeInvalidToken  = "UDAPI100050"
	upCodeRateLimit     = "UDAPI10005"
	upCodeKeyMissing    = "UDAPI1009"
	upCodeKeyFormat     = "UDAPI1011"
	upCodeKeyInvalid    = "UDAPI1087"
	upCodeTooManyKeys   = "UDAPI100043"
	upCodeLoginApp      = "UDAPI100068"
	upCodeCredentials   = "UDAPI100016"
	upCodeInvalidInput  = "UDAPI100036"
	upCodeUnexpected    = "UDAPI100500"
	upCodeNotFound      = "UDAPI10000"
	upMsgInvalidToken   = "Invalid token used to access API"
	upMsgRateLimit      = "Too Many Request Sent"
	upstoxMaxQuoteKeys  = 500
	upstoxFeedWSPath    = "/v3/feed/market-data-feed/ws"
	upstoxExtendedLife  = 365 * 24 * time.Hour
	upstoxExpiryMissing = "UDAPI1088" // UNCONFIRMED: the code Upstox gives a missing or malformed expiry_date.
)

// upstoxUnlistedExpiryAnswersEmpty says what a chain for a well-formed
// expiry_date that is not a listed expiry returns: success with an empty
// data list. UNCONFIRMED (observed behaviour reported by third parties);
// flip it to answer 400 with upstoxExpiryMissing instead.
const upstoxUnlistedExpiryAnswersEmpty = true

// upstoxProblem is one entry of the Upstox error envelope; both spellings
// of each field are sent, as Upstox does during its migration.
type upstoxProblem struct {
	ErrorCode     string  `json:"errorCode"`
	ErrorCodeS    string  `json:"error_code"`
	Message       string  `json:"message"`
	PropertyPath  *string `json:"propertyPath"`
	PropertyPathS *string `json:"property_path"`
	InvalidValue  any     `json:"invalidValue"`
	InvalidValueS any     `json:"invalid_value"`
}

// upstoxError writes {status:"error",errors:[...]}.
func upstoxError(w http.ResponseWriter, status int, code, msg, prop string, invalid any) {
	p := upstoxProblem{ErrorCode: code, ErrorCodeS: code, Message: msg, InvalidValue: invalid, InvalidValueS: invalid}
	if prop != "" {
		p.PropertyPath, p.PropertyPathS = &prop, &prop
	}
	writeJSON(w, status, map[string]any{"status": "error", "errors": []upstoxProblem{p}})
}

// upstoxDead writes the real dead-token answer.
func upstoxDead(w http.ResponseWriter) {
	upstoxError(w, http.StatusUnauthorized, upCodeInvalidToken, upMsgInvalidToken, "", nil)
}

func upstoxOK(w http.ResponseWriter, data any) {
	writeJSON(w, http.StatusOK, map[string]any{"status": "success", "data": data})
}

// upstoxFault answers an injected fault with Upstox's body for its status.
func upstoxFault(w http.ResponseWriter, f Fault) {
	switch {
	case f.Status == http.StatusUnauthorized:
		upstoxDead(w)
	case f.Status == http.StatusTooManyRequests:
		if f.RetryAfterMS > 0 {
			setRetryAfter(w, time.Duration(f.RetryAfterMS)*time.Millisecond)
		}
		upstoxError(w, f.Status, upCodeRateLimit, upMsgRateLimit, "", nil)
	case f.Status >= 500:
		upstoxError(w, f.Status, upCodeUnexpected, "Something went wrong. Please try again later.", "", nil)
	case f.Status == http.StatusNotFound || f.Status == http.StatusMethodNotAllowed:
		upstoxError(w, f.Status, upCodeNotFound, "The requested URL is not supported", "", nil)
	default:
		upstoxError(w, f.Status, upCodeInvalidInput, "Invalid input", "", nil)
	}
}

// setRetryAfter sets Retry-After (whole seconds, rounded up) and
// X-Retry-After-Ms.
func setRetryAfter(w http.ResponseWriter, d time.Duration) {
	secs := int64((d + time.Second - 1) / time.Second)
	w.Header().Set("Retry-After", strconv.FormatInt(max(secs, 1), 10))
	w.Header().Set("X-Retry-After-Ms", strconv.FormatInt(max(d.Milliseconds(), 1), 10))
}

func (s *Sandbox) upstoxNotFound(w http.ResponseWriter, _ *http.Request, _ *call) {
	upstoxError(w, http.StatusNotFound, upCodeNotFound, "The requested URL is not supported", "", nil)
}

// upstoxAuth checks the Bearer token and the rate limit; on failure it has
// written the answer.
func (s *Sandbox) upstoxAuth(w http.ResponseWriter, r *http.Request, c *call) (string, bool) {
	tok := bearer(r)
	now := s.now()
	rec, st := s.store.check(Upstox, tok, now)
	c.account = rec.Account
	if tok == "" || st != authOK {
		upstoxDead(w)
		return "", false
	}
	if s.rateLimits.Load() {
		if ok, _ := s.limiter.allow(Upstox, hashToken(tok), now); !ok {
			upstoxError(w, http.StatusTooManyRequests, upCodeRateLimit, upMsgRateLimit, "", nil)
			return "", false
		}
	}
	return tok, true
}

func (s *Sandbox) upstoxDialog(w http.ResponseWriter, r *http.Request, c *call) {
	q := r.URL.Query()
	redirect := q.Get("redirect_uri")
	ru, err := url.Parse(redirect)
	if q.Get("client_id") != UpstoxClientID || redirect == "" || err != nil || !ru.IsAbs() {
		upstoxError(w, http.StatusBadRequest, upCodeLoginApp, "Check your 'client_id' and 'redirect_uri'; one or both are incorrect.", "", nil)
		return
	}
	if q.Get("response_type") != "code" {
		upstoxError(w, http.StatusBadRequest, upCodeInvalidInput, "Invalid response_type", "response_type", q.Get("response_type"))
		return
	}
	account := q.Get("account")
	if account == "" {
		account = DefaultAccount
	}
	c.account = account
	code := s.codes.issue(grant{broker: Upstox, account: account, redirectURI: redirect, issued: s.now()})
	rq := ru.Query()
	rq.Set("code", code)
	if st := q.Get("state"); st != "" {
		rq.Set("state", st)
	}
	ru.RawQuery = rq.Encode()
	http.Redirect(w, r, ru.String(), http.StatusFound)
}

func (s *Sandbox) upstoxToken(w http.ResponseWriter, r *http.Request, c *call) {
	if mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); mt != "application/x-www-form-urlencoded" {
		upstoxError(w, http.StatusBadRequest, upCodeInvalidInput, "Content-Type must be application/x-www-form-urlencoded", "", nil)
		return
	}
	if err := r.ParseForm(); err != nil {
		upstoxError(w, http.StatusBadRequest, upCodeInvalidInput, "Invalid form body", "", nil)
		return
	}
	f := r.PostForm
	now := s.now()
	code := f.Get("code")
	if code == "" {
		upstoxError(w, http.StatusBadRequest, upCodeInvalidInput, "code is required", "code", nil)
		return
	}
	g, ok := s.codes.take(code, now) // single-use whatever happens next
	if ok && g.broker == Upstox {
		c.account = g.account
	}
	switch {
	case f.Get("grant_type") != "authorization_code":
		upstoxError(w, http.StatusBadRequest, upCodeInvalidInput, "Invalid grant_type", "grant_type", f.Get("grant_type"))
		return
	case f.Get("client_id") != UpstoxClientID || f.Get("client_secret") != UpstoxClientSecret,
		!ok, g.broker != Upstox, f.Get("redirect_uri") != g.redirectURI:
		upstoxError(w, http.StatusBadRequest, upCodeCredentials, "Invalid Credentials", "", nil)
		return
	}
	access, extended := newOpaqueToken(), newOpaqueToken()
	if err := s.store.add(access, tokenRecord{Broker: Upstox, Account: g.account, Kind: "access", Issued: now, Expires: upstoxExpiry(now), State: stateActive}); err != nil {
		s.log.Error("sandbox: persist token", "err", err)
		upstoxError(w, http.StatusInternalServerError, upCodeUnexpected, "Something went wrong", "", nil)
		return
	}
	if err := s.store.add(extended, tokenRecord{Broker: Upstox, Account: g.account, Kind: "extended", Issued: now, Expires: now.Add(upstoxExtendedLife), State: stateActive}); err != nil {
		s.log.Error("sandbox: persist token", "err", err)
	}
	s.log.Info("sandbox: upstox token issued", "account", g.account)
	resp := upstoxProfileData(g.account)
	resp["access_token"] = access
	resp["extended_token"] = extended
	writeJSON(w, http.StatusOK, resp)
}

// upstoxProfileData is the account's profile as Upstox shapes it.
func upstoxProfileData(account string) map[string]any {
	return map[string]any{
		"email":       account + "@sandbox.invalid",
		"exchanges":   []string{"NSE", "NFO", "BSE", "BFO", "CDS", "MCX"},
		"products":    []string{"D", "I", "CO", "MTF"},
		"broker":      "UPSTOX",
		"user_id":     accountUserID("SB", account),
		"user_name":   "Sandbox " + account,
		"order_types": []string{"MARKET", "LIMIT", "SL", "SL-M"},
		"user_type":   "individual",
		"poa":         false,
		"is_active":   true,
	}
}

// accountUserID is a stable broker user id for a sandbox account.
func accountUserID(prefix, account string) string {
	return fmt.Sprintf("%s%05d", prefix, int(hash01("user", account)*1e5))
}

func (s *Sandbox) upstoxProfile(w http.ResponseWriter, r *http.Request, c *call) {
	if _, ok := s.upstoxAuth(w, r, c); !ok {
		return
	}
	upstoxOK(w, upstoxProfileData(c.account))
}

func (s *Sandbox) upstoxLogout(w http.ResponseWriter, r *http.Request, c *call) {
	tok, ok := s.upstoxAuth(w, r, c)
	if !ok {
		return
	}
	if err := s.store.setState(tok, stateLoggedOut); err != nil {
		s.log.Error("sandbox: persist state", "err", err)
	}
	s.feeds.closeToken(hashToken(tok), "logged out")
	upstoxOK(w, true)
}

// upstoxSegments are the segments of well-formed Upstox instrument keys.
var upstoxSegments = map[string]bool{"NSE_EQ": true, "NSE_INDEX": true, "NSE_FO": true, "NCD_FO": true, "BSE_EQ": true,
	"BSE_INDEX": true, "BSE_FO": true, "BCD_FO": true, "MCX_FO": true, "GLOBAL_INDICATOR": true}

// upstoxKeyProblem classifies a key's form: UDAPI1011 when it is not
// SEGMENT|identifier, UDAPI1087 when the segment is unknown, "" when it is
// well formed (a well-formed key the sandbox does not list is left out of
// quote answers rather than refused).
func upstoxKeyProblem(k string) string {
	seg, id, ok := strings.Cut(k, "|")
	switch {
	case !ok || seg == "" || id == "":
		return upCodeKeyFormat
	case !upstoxSegments[seg]:
		return upCodeKeyInvalid
	}
	return ""
}

// upstoxKeys parses the instrument_key list; on failure it has answered.
func upstoxKeys(w http.ResponseWriter, raw string) ([]string, bool) {
	if strings.TrimSpace(raw) == "" {
		upstoxError(w, http.StatusBadRequest, upCodeKeyMissing, "Instrument key is required", "instrument_key", nil)
		return nil, false
	}
	keys := strings.Split(raw, ",")
	if len(keys) > upstoxMaxQuoteKeys {
		upstoxError(w, http.StatusBadRequest, upCodeTooManyKeys, fmt.Sprintf("Instrument keys should not exceed %d", upstoxMaxQuoteKeys), "instrument_key", nil)
		return nil, false
	}
	for i, k := range keys {
		k = strings.TrimSpace(k)
		keys[i] = k
		switch upstoxKeyProblem(k) {
		case upCodeKeyFormat:
			upstoxError(w, http.StatusBadRequest, upCodeKeyFormat, "Invalid instrument key format", "instrument_key", k)
			return nil, false
		case upCodeKeyInvalid:
			upstoxError(w, http.StatusBadRequest, upCodeKeyInvalid, "Invalid Instrument key", "instrument_key", k)
			return nil, false
		}
	}
	return keys, true
}

// upstoxMapKey is the EXCHANGE:TRADINGSYMBOL key quote answers use.
func upstoxMapKey(in instrument) string {
	if in.opt != nil {
		return "NSE_FO:" + in.opt.symbol
	}
	return in.u.upMapKey
}

func upstoxTradingSymbol(in instrument) string {
	if in.opt != nil {
		return in.opt.symbol
	}
	_, sym, _ := strings.Cut(in.u.upMapKey, ":")
	return sym
}

// upstoxLTP serves /v3/market-quote/ltp (version 3) and the deprecated
// /v2/market-quote/ltp (version 2, which reports only last_price and
// instrument_token and still accepts the old "symbol" parameter).
func (s *Sandbox) upstoxLTP(version int) apiHandler {
	return func(w http.ResponseWriter, r *http.Request, c *call) {
		if _, ok := s.upstoxAuth(w, r, c); !ok {
			return
		}
		raw := r.URL.Query().Get("instrument_key")
		if raw == "" && version == 2 {
			raw = r.URL.Query().Get("symbol")
		}
		keys, ok := upstoxKeys(w, raw)
		if !ok {
			return
		}
		now := s.now()
		data := map[string]any{}
		for _, k := range keys {
			in, ok := s.mkt.lookupUpstox(k, now)
			if !ok {
				continue
			}
			q := s.mkt.quote(in, now)
			e := map[string]any{"last_price": q.ltp, "instrument_token": k}
			if version == 3 {
				e["ltq"], e["volume"], e["cp"] = q.ltq, q.volume, q.cp
			}
			data[upstoxMapKey(in)] = e
		}
		upstoxOK(w, data)
	}
}

func depthJSON(ls [5]level) []map[string]any {
	out := make([]map[string]any, 0, 5)
	for _, l := range ls {
		out = append(out, map[string]any{"quantity": l.qty, "price": l.price, "orders": l.orders})
	}
	return out
}

func (s *Sandbox) upstoxQuotes(w http.ResponseWriter, r *http.Request, c *call) {
	if _, ok := s.upstoxAuth(w, r, c); !ok {
		return
	}
	keys, ok := upstoxKeys(w, r.URL.Query().Get("instrument_key"))
	if !ok {
		return
	}
	now := s.now()
	data := map[string]any{}
	for _, k := range keys {
		in, ok := s.mkt.lookupUpstox(k, now)
		if !ok {
			continue
		}
		q := s.mkt.quote(in, now)
		data[upstoxMapKey(in)] = map[string]any{
			"ohlc":                map[string]any{"open": q.open, "high": q.high, "low": q.low, "close": q.ltp},
			"depth":               map[string]any{"buy": depthJSON(q.buy), "sell": depthJSON(q.sell)},
			"timestamp":           now.In(ist).Format("2006-01-02T15:04:05.000-07:00"),
			"instrument_token":    k,
			"symbol":              upstoxTradingSymbol(in),
			"last_price":          q.ltp,
			"volume":              q.volume,
			"average_price":       q.atp,
			"oi":                  q.oi,
			"net_change":          round2(q.ltp - q.cp),
			"total_buy_quantity":  q.totalBuy,
			"total_sell_quantity": q.totalSell,
			"lower_circuit_limit": q.lowerCircuit,
			"upper_circuit_limit": q.upperCircuit,
			"last_trade_time":     strconv.FormatInt(q.ltt.UnixMilli(), 10),
			"oi_day_high":         max(q.oi, q.prevOI),
			"oi_day_low":          min(q.oi, q.prevOI),
		}
	}
	upstoxOK(w, data)
}

func (s *Sandbox) upstoxChain(w http.ResponseWriter, r *http.Request, c *call) {
	if _, ok := s.upstoxAuth(w, r, c); !ok {
		return
	}
	q := r.URL.Query()
	key, date := q.Get("instrument_key"), q.Get("expiry_date")
	if key == "" {
		upstoxError(w, http.StatusBadRequest, upCodeKeyMissing, "Instrument key is required", "instrument_key", nil)
		return
	}
	if p := upstoxKeyProblem(key); p != "" {
		upstoxError(w, http.StatusBadRequest, p, "Invalid instrument key", "instrument_key", key)
		return
	}
	if _, err := time.Parse(time.DateOnly, date); err != nil {
		upstoxError(w, http.StatusBadRequest, upstoxExpiryMissing, "Invalid expiry_date, expected format YYYY-MM-DD", "expiry_date", date)
		return
	}
	u, ok := s.mkt.byUpKey[key]
	if !ok || u.step == 0 {
		upstoxError(w, http.StatusBadRequest, upCodeKeyInvalid, "Invalid Instrument key", "instrument_key", key)
		return
	}
	now := s.now()
	cs := s.mkt.chain(u, date, now)
	if cs == nil && !upstoxUnlistedExpiryAnswersEmpty {
		upstoxError(w, http.StatusBadRequest, upstoxExpiryMissing, "Invalid expiry_date", "expiry_date", date)
		return
	}
	data := make([]map[string]any, 0, len(cs)/2)
	for i := 0; i+1 < len(cs); i += 2 {
		call, put := cs[i], cs[i+1]
		cq := s.mkt.quote(instrument{u: u, opt: call}, now)
		pq := s.mkt.quote(instrument{u: u, opt: put}, now)
		pcr := 0.0
		if cq.oi > 0 {
			pcr = round4(pq.oi / cq.oi)
		}
		data = append(data, map[string]any{
			"expiry":                date,
			"pcr":                   pcr,
			"strike_price":          call.strike,
			"underlying_key":        key,
			"underlying_spot_price": cq.spot,
			"call_options":          upstoxChainSide(call, cq),
			"put_options":           upstoxChainSide(put, pq),
		})
	}
	upstoxOK(w, data)
}

func upstoxChainSide(c *contract, q quote) map[string]any {
	g := q.greeks
	return map[string]any{
		"instrument_key": c.upKey,
		"market_data": map[string]any{
			"ltp": q.ltp, "volume": q.volume, "oi": q.oi, "close_price": q.cp, "bid_price": q.bid,
			"bid_qty": q.bidQty, "ask_price": q.ask, "ask_qty": q.askQty, "prev_oi": q.prevOI,
		},
		"option_greeks": map[string]any{
			"vega": g.vega, "theta": g.theta, "gamma": g.gamma, "delta": g.delta, "iv": g.iv, "pop": g.pop,
		},
	}
}

func (s *Sandbox) upstoxFeedAuthorize(w http.ResponseWriter, r *http.Request, c *call) {
	tok, ok := s.upstoxAuth(w, r, c)
	if !ok {
		return
	}
	reqID := newUUID()
	code := s.codes.issue(grant{broker: Upstox, account: c.account, token: tok, requestID: reqID, issued: s.now()})
	u := url.URL{Scheme: "ws", Host: r.Host, Path: "/upstox" + upstoxFeedWSPath,
		RawQuery: url.Values{"requestId": {reqID}, "code": {code}}.Encode()}
	uri := u.String()
	upstoxOK(w, map[string]any{"authorized_redirect_uri": uri, "authorizedRedirectUri": uri})
}

// newUUID returns a random RFC 4122 version 4 UUID.
func newUUID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:])
}
