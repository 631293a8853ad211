package sandbox

import (
	"context"
	"encoding/json"
	"net/http"
	"sync"
	"time"

	"github.com/coder/websocket"
	"google.golang.org/protobuf/proto"

	"github.com/feedgate/feedgate/gen/go/upstox/feedv3"
)

// Feed behaviour constants.
const (
	// feedPingIdle is how long a socket may go without a frame before the
	// sandbox pings it, as Upstox does when idle.
	feedPingIdle = 5 * time.Second
	// feedWriteTimeout bounds one frame write to a slow client.
	feedWriteTimeout = 10 * time.Second
	// feedKillCode is the close code a socket gets when its account is
	// revoked or expired, its token logged out, or a newer socket of the
	// account replaces it. UNCONFIRMED (brokers.md §1.7).
	feedKillCode = websocket.StatusPolicyViolation
	// feedReadLimit bounds one client message; a 5000-key subscribe fits.
	feedReadLimit = 1 << 20
)

// Subscription limits per connection (brokers.md §1.7): individual when a
// connection uses one mode, combined when it mixes modes.
var (
	feedLimitSingle   = map[string]int{"ltpc": 5000, "option_greeks": 3000, "full": 2000}
	feedLimitCombined = map[string]int{"ltpc": 2000, "option_greeks": 2000, "full": 1500}
)

// feedModes maps the subscribe modes to the protobuf request modes.
var feedModes = map[string]feedv3.RequestMode{
	"ltpc": feedv3.RequestMode_ltpc, "full": feedv3.RequestMode_full_d5,
	"option_greeks": feedv3.RequestMode_option_greeks, "full_d30": feedv3.RequestMode_full_d30,
}

// limitClass is the limit bucket of a mode (full_d30 counts as full).
func limitClass(mode string) string {
	if mode == "full_d30" {
		return "full"
	}
	return mode
}

// feedConn is one open feed socket.
type feedConn struct {
	s       *Sandbox
	ws      *websocket.Conn
	broker  Broker
	account string
	tokHash string
	cancel  context.CancelFunc

	closeOnce   sync.Once
	closeCode   websocket.StatusCode
	closeReason string

	mu        sync.Mutex // guards subs and orders frame writes
	subs      map[string]string
	lastWrite time.Time
}

// closeWith asks the connection's owner goroutine to close it with code.
func (fc *feedConn) closeWith(code websocket.StatusCode, reason string) {
	fc.closeOnce.Do(func() { fc.closeCode, fc.closeReason = code, reason })
	fc.cancel()
}

type acctKey struct {
	broker  Broker
	account string
}

// feedHub tracks open feed sockets; safe for concurrent use.
type feedHub struct {
	s     *Sandbox
	mu    sync.Mutex
	conns map[*feedConn]struct{}
	total map[acctKey]int64
}

func newFeedHub(s *Sandbox) *feedHub {
	return &feedHub{s: s, conns: map[*feedConn]struct{}{}, total: map[acctKey]int64{}}
}

// add registers fc, closing older sockets of the same account: one
// connection per account (what Upstox does to the older one: UNCONFIRMED).
func (h *feedHub) add(fc *feedConn) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for o := range h.conns {
		if o.broker == fc.broker && o.account == fc.account {
			o.closeWith(feedKillCode, "superseded by a newer connection")
		}
	}
	h.conns[fc] = struct{}{}
	h.total[acctKey{fc.broker, fc.account}]++
}

func (h *feedHub) remove(fc *feedConn) {
	h.mu.Lock()
	delete(h.conns, fc)
	h.mu.Unlock()
}

func (h *feedHub) each(match func(*feedConn) bool, code websocket.StatusCode, reason string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for fc := range h.conns {
		if match(fc) {
			fc.closeWith(code, reason)
		}
	}
}

func (h *feedHub) closeAccount(b Broker, account, reason string) {
	h.each(func(fc *feedConn) bool { return fc.broker == b && fc.account == account }, feedKillCode, reason)
}

func (h *feedHub) closeToken(tokHash, reason string) {
	h.each(func(fc *feedConn) bool { return fc.tokHash == tokHash }, feedKillCode, reason)
}

func (h *feedHub) closeAll() {
	h.each(func(*feedConn) bool { return true }, websocket.StatusGoingAway, "sandbox closing")
}

func (h *feedHub) stats() []FeedStat {
	h.mu.Lock()
	defer h.mu.Unlock()
	open := map[acctKey]int{}
	for fc := range h.conns {
		open[acctKey{fc.broker, fc.account}]++
	}
	out := make([]FeedStat, 0, len(h.total))
	for k, n := range h.total {
		out = append(out, FeedStat{Broker: k.broker, Account: k.account, Open: open[k], Total: n})
	}
	return out
}

// upstoxFeedSocket serves the single-use URL handed out by authorize.
func (s *Sandbox) upstoxFeedSocket(w http.ResponseWriter, r *http.Request, c *call) {
	if !s.track() {
		http.Error(w, http.StatusText(http.StatusServiceUnavailable), http.StatusServiceUnavailable)
		return
	}
	defer s.wg.Done()
	q := r.URL.Query()
	now := s.now()
	g, ok := s.codes.take(q.Get("code"), now)
	if !ok || g.token == "" || g.requestID != q.Get("requestId") {
		http.Error(w, http.StatusText(http.StatusForbidden), http.StatusForbidden)
		return
	}
	c.account = g.account
	if _, st := s.store.check(Upstox, g.token, now); st != authOK {
		upstoxDead(w)
		return
	}
	ws, err := websocket.Accept(w, r, &websocket.AcceptOptions{InsecureSkipVerify: true})
	if err != nil {
		return
	}
	ws.SetReadLimit(feedReadLimit)
	ctx, cancel := context.WithCancel(s.ctx)
	fc := &feedConn{s: s, ws: ws, broker: Upstox, account: g.account, tokHash: hashToken(g.token),
		cancel: cancel, subs: map[string]string{}}
	s.feeds.add(fc)
	defer s.feeds.remove(fc)
	s.log.Info("sandbox: feed connected", "account", g.account)
	fc.run(ctx)
	s.log.Info("sandbox: feed closed", "account", g.account, "reason", fc.closeReason)
}

// run owns the socket: a reader goroutine (never cancelled by context, so
// a close can carry its code), a writer goroutine for live rounds and
// pings, and the close.
func (fc *feedConn) run(ctx context.Context) {
	defer fc.cancel()
	var wg sync.WaitGroup
	readDone := make(chan struct{})
	wg.Go(func() {
		defer close(readDone)
		for {
			typ, b, err := fc.ws.Read(context.Background())
			if err != nil {
				fc.cancel()
				return
			}
			if typ == websocket.MessageBinary || typ == websocket.MessageText {
				fc.handle(b)
			}
		}
	})
	writerDone := make(chan struct{})
	go func() {
		defer close(writerDone)
		fc.writeLoop(ctx)
	}()
	<-ctx.Done()
	<-writerDone
	fc.closeOnce.Do(func() {}) // waits for a running closeWith; no later one may change the code
	code, reason := fc.closeCode, fc.closeReason
	if code == 0 {
		code, reason = websocket.StatusGoingAway, "sandbox closing"
	}
	select {
	case <-readDone:
		_ = fc.ws.CloseNow()
	default:
		_ = fc.ws.Close(code, reason)
		_ = fc.ws.CloseNow()
	}
	wg.Wait()
}

func (fc *feedConn) writeLoop(ctx context.Context) {
	fc.send(feedv3.Type_market_info, nil)
	timer := time.NewTimer(time.Duration(fc.s.feedInterval.Load()))
	defer timer.Stop()
	ping := time.NewTicker(feedPingIdle)
	defer ping.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
			fc.mu.Lock()
			if len(fc.subs) > 0 {
				fc.sendLocked(feedv3.Type_live_feed, fc.subs)
			}
			fc.mu.Unlock()
			timer.Reset(time.Duration(fc.s.feedInterval.Load()))
		case <-ping.C:
			fc.mu.Lock()
			idle := time.Since(fc.lastWrite) >= feedPingIdle
			fc.mu.Unlock()
			if idle {
				pctx, cancel := context.WithTimeout(ctx, feedPingIdle)
				_ = fc.ws.Ping(pctx)
				cancel()
			}
		}
	}
}

// feedRequest is a client's subscribe/unsubscribe/change_mode message.
type feedRequest struct {
	GUID   string `json:"guid"`
	Method string `json:"method"`
	Data   struct {
		Mode           string   `json:"mode"`
		InstrumentKeys []string `json:"instrumentKeys"`
	} `json:"data"`
}

// handle applies one client message; malformed ones are ignored.
func (fc *feedConn) handle(b []byte) {
	var req feedRequest
	if err := json.Unmarshal(b, &req); err != nil {
		return
	}
	mode := req.Data.Mode
	if mode == "" && req.Method == "sub" {
		mode = "ltpc"
	}
	fc.mu.Lock()
	defer fc.mu.Unlock()
	next := make(map[string]string, len(fc.subs)+len(req.Data.InstrumentKeys))
	for k, m := range fc.subs {
		next[k] = m
	}
	switch req.Method {
	case "sub", "change_mode":
		if _, ok := feedModes[mode]; !ok {
			return
		}
		for _, k := range req.Data.InstrumentKeys {
			if _, had := next[k]; had || req.Method == "sub" {
				next[k] = mode
			}
		}
	case "unsub":
		for _, k := range req.Data.InstrumentKeys {
			delete(next, k)
		}
	default:
		return
	}
	if !withinLimits(next) {
		fc.closeWith(feedKillCode, "subscription limit exceeded") // UNCONFIRMED
		return
	}
	fc.subs = next
	if req.Method == "sub" {
		fresh := make(map[string]string, len(req.Data.InstrumentKeys))
		for _, k := range req.Data.InstrumentKeys {
			fresh[k] = mode
		}
		fc.sendLocked(feedv3.Type_initial_feed, fresh)
	}
}

// withinLimits reports whether subs fits the per-connection limits.
func withinLimits(subs map[string]string) bool {
	n := map[string]int{}
	for _, m := range subs {
		n[limitClass(m)]++
	}
	lim := feedLimitSingle
	if len(n) > 1 {
		lim = feedLimitCombined
	}
	for class, c := range n {
		if c > lim[class] {
			return false
		}
	}
	return true
}

func (fc *feedConn) send(t feedv3.Type, keys map[string]string) {
	fc.mu.Lock()
	defer fc.mu.Unlock()
	fc.sendLocked(t, keys)
}

// sendLocked builds and writes one FeedResponse; fc.mu must be held.
func (fc *feedConn) sendLocked(t feedv3.Type, keys map[string]string) {
	now := fc.s.now()
	resp := &feedv3.FeedResponse{Type: t, CurrentTs: now.UnixMilli()}
	if t == feedv3.Type_market_info {
		resp.MarketInfo = marketInfo(now)
	} else {
		resp.Feeds = make(map[string]*feedv3.Feed, len(keys))
		for k, mode := range keys {
			in, ok := fc.s.mkt.lookupUpstox(k, now)
			if !ok {
				continue
			}
			resp.Feeds[k] = feedFor(in, mode, fc.s.mkt.quote(in, now))
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), feedWriteTimeout)
	defer cancel()
	resp.SandboxSentUnixNanos = time.Now().UnixNano()
	b, err := proto.Marshal(resp)
	if err != nil {
		return
	}
	if err := fc.ws.Write(ctx, websocket.MessageBinary, b); err != nil {
		fc.cancel()
		return
	}
	fc.lastWrite = time.Now()
}

// marketInfo reports NSE/BSE segment status from the IST clock.
func marketInfo(now time.Time) *feedv3.MarketInfo {
	l := now.In(ist)
	mins := l.Hour()*60 + l.Minute()
	st := feedv3.MarketStatus_NORMAL_CLOSE
	switch {
	case l.Weekday() == time.Saturday || l.Weekday() == time.Sunday:
	case mins >= 9*60 && mins < 9*60+8:
		st = feedv3.MarketStatus_PRE_OPEN_START
	case mins >= 9*60+8 && mins < 9*60+15:
		st = feedv3.MarketStatus_PRE_OPEN_END
	case mins >= 9*60+15 && mins < 15*60+30:
		st = feedv3.MarketStatus_NORMAL_OPEN
	case mins >= 15*60+30 && mins < 15*60+40:
		st = feedv3.MarketStatus_CLOSING_START
	case mins >= 15*60+40 && mins < 16*60:
		st = feedv3.MarketStatus_CLOSING_END
	}
	seg := map[string]feedv3.MarketStatus{}
	for _, s := range []string{"NSE_EQ", "NSE_FO", "NSE_INDEX", "BSE_EQ", "BSE_FO", "BSE_INDEX", "NCD_FO", "BCD_FO", "MCX_FO"} {
		seg[s] = st
	}
	return &feedv3.MarketInfo{SegmentStatus: seg}
}

// feedFor shapes one instrument's tick for mode.
func feedFor(in instrument, mode string, q quote) *feedv3.Feed {
	ltpc := &feedv3.LTPC{Ltp: q.ltp, Ltt: q.ltt.UnixMilli(), Ltq: q.ltq, Cp: q.cp}
	var g *feedv3.OptionGreeks
	var iv float64
	if q.greeks != nil {
		g = &feedv3.OptionGreeks{Delta: q.greeks.delta, Theta: q.greeks.theta, Gamma: q.greeks.gamma, Vega: q.greeks.vega, Rho: q.greeks.rho}
		iv = q.greeks.iv
	}
	switch mode {
	case "option_greeks":
		return &feedv3.Feed{RequestMode: feedv3.RequestMode_option_greeks, FeedUnion: &feedv3.Feed_FirstLevelWithGreeks{
			FirstLevelWithGreeks: &feedv3.FirstLevelWithGreeks{Ltpc: ltpc,
				FirstDepth:   &feedv3.Quote{BidQ: q.bidQty, BidP: q.bid, AskQ: q.askQty, AskP: q.ask},
				OptionGreeks: g, Vtt: q.volume, Oi: q.oi, Iv: iv}}}
	case "full", "full_d30":
		ohlc := &feedv3.MarketOHLC{Ohlc: []*feedv3.OHLC{
			{Interval: "1d", Open: q.open, High: q.high, Low: q.low, Close: q.ltp, Vol: q.volume, Ts: dayStart(q.ltt).UnixMilli()},
			{Interval: "I1", Open: q.ltp, High: q.ltp, Low: q.ltp, Close: q.ltp, Ts: q.ltt.Truncate(time.Minute).UnixMilli()},
		}}
		var full *feedv3.FullFeed
		if in.opt == nil && in.u.index {
			full = &feedv3.FullFeed{FullFeedUnion: &feedv3.FullFeed_IndexFF{IndexFF: &feedv3.IndexFullFeed{Ltpc: ltpc, MarketOHLC: ohlc}}}
		} else {
			lvl := &feedv3.MarketLevel{}
			for i := range 5 {
				lvl.BidAskQuote = append(lvl.BidAskQuote, &feedv3.Quote{BidQ: q.buy[i].qty, BidP: q.buy[i].price, AskQ: q.sell[i].qty, AskP: q.sell[i].price})
			}
			full = &feedv3.FullFeed{FullFeedUnion: &feedv3.FullFeed_MarketFF{MarketFF: &feedv3.MarketFullFeed{Ltpc: ltpc,
				MarketLevel: lvl, OptionGreeks: g, MarketOHLC: ohlc, Atp: q.atp, Vtt: q.volume, Oi: q.oi, Iv: iv,
				Tbq: float64(q.totalBuy), Tsq: float64(q.totalSell)}}}
		}
		return &feedv3.Feed{RequestMode: feedModes[mode], FeedUnion: &feedv3.Feed_FullFeed{FullFeed: full}}
	}
	return &feedv3.Feed{RequestMode: feedv3.RequestMode_ltpc, FeedUnion: &feedv3.Feed_Ltpc{Ltpc: ltpc}}
}

// dayStart is 00:00 IST of t's day.
func dayStart(t time.Time) time.Time {
	l := t.In(ist)
	return time.Date(l.Year(), l.Month(), l.Day(), 0, 0, 0, 0, ist)
}
