package sandbox

import (
	"fmt"
	"hash/fnv"
	"math"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// underlying is a tradable index or stock the sandbox quotes.
type underlying struct {
	name     string // "Nifty 50", "RELIANCE"
	upKey    string // NSE_INDEX|Nifty 50, NSE_EQ|INE002A01018
	upMapKey string // NSE_INDEX:Nifty 50, NSE_EQ:RELIANCE (quote map key)
	fySymbol string // NSE:NIFTY50-INDEX
	fyToken  string
	root     string // option symbol root: NIFTY, BANKNIFTY, RELIANCE
	base     float64
	step     float64 // strike step; 0 = no options
	atmVol   float64
	walkVol  float64
	index    bool
	weekly   bool
	lot      int
}

// underlyings are the instruments the sandbox lists, with their options.
func defaultUnderlyings() []*underlying {
	return []*underlying{
		{name: "Nifty 50", upKey: "NSE_INDEX|Nifty 50", upMapKey: "NSE_INDEX:Nifty 50", fySymbol: "NSE:NIFTY50-INDEX", fyToken: "101000000026000", root: "NIFTY", base: 24500, step: 50, atmVol: 0.13, walkVol: 0.13, index: true, weekly: true, lot: 75},
		{name: "Nifty Bank", upKey: "NSE_INDEX|Nifty Bank", upMapKey: "NSE_INDEX:Nifty Bank", fySymbol: "NSE:NIFTYBANK-INDEX", fyToken: "101000000026009", root: "BANKNIFTY", base: 54000, step: 100, atmVol: 0.145, walkVol: 0.15, index: true, weekly: true, lot: 35},
		{name: "India VIX", upKey: "NSE_INDEX|India VIX", upMapKey: "NSE_INDEX:India VIX", fySymbol: "NSE:INDIAVIX-INDEX", fyToken: "101000000026017", root: "INDIAVIX", base: 13.5, walkVol: 0.6, index: true},
		{name: "RELIANCE", upKey: "NSE_EQ|INE002A01018", upMapKey: "NSE_EQ:RELIANCE", fySymbol: "NSE:RELIANCE-EQ", fyToken: "10100000002885", root: "RELIANCE", base: 1420, step: 10, atmVol: 0.17, walkVol: 0.2, lot: 500},
		{name: "HDFCBANK", upKey: "NSE_EQ|INE040A01034", upMapKey: "NSE_EQ:HDFCBANK", fySymbol: "NSE:HDFCBANK-EQ", fyToken: "10100000001333", root: "HDFCBANK", base: 1960, step: 10, atmVol: 0.16, walkVol: 0.18, lot: 550},
		{name: "INFY", upKey: "NSE_EQ|INE009A01021", upMapKey: "NSE_EQ:INFY", fySymbol: "NSE:INFY-EQ", fyToken: "10100000001594", root: "INFY", base: 1560, step: 20, atmVol: 0.18, walkVol: 0.22, lot: 400},
		{name: "SBIN", upKey: "NSE_EQ|INE062A01020", upMapKey: "NSE_EQ:SBIN", fySymbol: "NSE:SBIN-EQ", fyToken: "10100000003045", root: "SBIN", base: 810, step: 5, atmVol: 0.18, walkVol: 0.22, lot: 750},
	}
}

// strikesEachSide is how many strikes are listed on each side of the
// underlying's reference price; the grid is fixed so contracts keep their
// keys while the spot wanders.
const strikesEachSide = 30

// Expiry listing sizes: the next weekly and monthly expiries from now.
const (
	weeklyExpiries  = 6
	monthlyExpiries = 3
)

// expiry is one listed expiry of an underlying.
type expiry struct {
	date    string    // YYYY-MM-DD
	at      time.Time // 15:30 IST on that date
	monthly bool
}

// contract is one listed option.
type contract struct {
	u        *underlying
	exp      expiry
	strike   float64
	call     bool
	token    int    // exchange token, shared by both brokers' keys
	upKey    string // NSE_FO|<token>
	symbol   string // NIFTY2543021600PE (Upstox trading symbol)
	fySymbol string // NSE:NIFTY2543021600PE or NSE:NIFTY25APR21600PE
	fyToken  string
}

// instrument is what a key resolves to: an underlying, or one of its options.
type instrument struct {
	u   *underlying
	opt *contract
}

// walk is one underlying's random-walk state for the current IST day.
type walk struct {
	price, prevClose, open, high, low float64
	volume                            float64
	last                              time.Time
	day                               string
}

// listing is the set of contracts listed at one point in time.
type listing struct {
	key      string
	expiries map[*underlying][]expiry
	byUpKey  map[string]*contract
	byFy     map[string]*contract
	chains   map[*underlying]map[string][]*contract // expiry date -> contracts by strike, call first
}

// market is the sandbox's synthetic market. It is safe for concurrent use.
type market struct {
	underlyings []*underlying
	byUpKey     map[string]*underlying
	byFy        map[string]*underlying

	mu     sync.Mutex
	rng    *rand.Rand
	walks  map[*underlying]*walk
	tokens map[string]int // trading symbol -> exchange token, never reassigned
	used   map[int]bool
	list   *listing
}

func newMarket(now time.Time) *market {
	m := &market{
		underlyings: defaultUnderlyings(),
		byUpKey:     map[string]*underlying{},
		byFy:        map[string]*underlying{},
		rng:         rand.New(rand.NewPCG(20250401, 24500)),
		walks:       map[*underlying]*walk{},
		tokens:      map[string]int{},
		used:        map[int]bool{},
	}
	for _, u := range m.underlyings {
		m.byUpKey[u.upKey] = u
		m.byFy[u.fySymbol] = u
		p := tick(u.base)
		m.walks[u] = &walk{price: p, prevClose: tick(p * (1 - 0.004*hash01(u.name, "pc"))),
			open: tick(p * (1 - 0.002*hash01(u.name, "open"))), high: p, low: p,
			last: now, day: istDate(now)}
		w := m.walks[u]
		w.high, w.low = math.Max(w.open, p), math.Min(w.open, p)
	}
	return m
}

// istDate is t's IST calendar date as YYYY-MM-DD.
func istDate(t time.Time) string { return t.In(ist).Format(time.DateOnly) }

// hash01 is a deterministic pseudo-random number in [0, 1) for parts.
func hash01(parts ...string) float64 {
	h := fnv.New64a()
	for _, p := range parts {
		h.Write([]byte(p))
		h.Write([]byte{0})
	}
	return float64(h.Sum64()>>11) / float64(1<<53)
}

// advanceLocked moves u's walk to t: a mean-reverting log random walk (one
// exact step for any gap), rolling the day's open/high/low/close when the
// IST date changes.
func (m *market) advanceLocked(u *underlying, t time.Time) *walk {
	w := m.walks[u]
	if !t.After(w.last) {
		return w
	}
	if d := istDate(t); d != w.day {
		w.prevClose, w.day, w.volume = w.price, d, 0
		w.open, w.high, w.low = w.price, w.price, w.price
	}
	dt := t.Sub(w.last).Seconds() / (365 * 24 * 3600)
	const kappa = 4.0 // mean reversion per year keeps the spot near base
	x := math.Log(w.price / u.base)
	sd := u.walkVol * math.Sqrt((1-math.Exp(-2*kappa*dt))/(2*kappa))
	x = x*math.Exp(-kappa*dt) + sd*m.rng.NormFloat64()
	w.price = math.Max(tick(u.base*math.Exp(x)), 0.05)
	w.high, w.low = math.Max(w.high, w.price), math.Min(w.low, w.price)
	if !u.index {
		w.volume += t.Sub(w.last).Seconds() * 400 * (0.5 + m.rng.Float64())
	}
	w.last = t
	return w
}

// spot returns u's walk state at t.
func (m *market) spot(u *underlying, t time.Time) walk {
	m.mu.Lock()
	defer m.mu.Unlock()
	return *m.advanceLocked(u, t)
}

// expiriesAt lists u's expiries from t: for indices the next weekly
// Tuesdays plus the next monthly (last-Tuesday) ones, for stocks the
// monthly ones only. An expiry stays listed until 15:30 IST of its day.
func expiriesAt(u *underlying, t time.Time) []expiry {
	if u.step == 0 {
		return nil
	}
	l := t.In(ist)
	start := time.Date(l.Year(), l.Month(), l.Day(), 0, 0, 0, 0, ist)
	if !l.Before(start.Add(15*time.Hour + 30*time.Minute)) {
		start = start.AddDate(0, 0, 1)
	}
	first := start.AddDate(0, 0, (int(time.Tuesday)-int(start.Weekday())+7)%7)
	var out []expiry
	add := func(d time.Time) {
		e := expiry{date: d.Format(time.DateOnly), at: d.Add(15*time.Hour + 30*time.Minute), monthly: d.AddDate(0, 0, 7).Month() != d.Month()}
		if !slices.ContainsFunc(out, func(x expiry) bool { return x.date == e.date }) {
			out = append(out, e)
		}
	}
	if u.weekly {
		for i := range weeklyExpiries {
			add(first.AddDate(0, 0, 7*i))
		}
	}
	for d, n := first, 0; n < monthlyExpiries; d = d.AddDate(0, 0, 7) {
		if d.AddDate(0, 0, 7).Month() != d.Month() {
			add(d)
			n++
		}
	}
	slices.SortFunc(out, func(a, b expiry) int { return strings.Compare(a.date, b.date) })
	return out
}

// weeklyMonthCode is Fyers'/NSE's one-character month of weekly symbols.
func weeklyMonthCode(m time.Month) string {
	switch m {
	case time.October:
		return "O"
	case time.November:
		return "N"
	case time.December:
		return "D"
	}
	return strconv.Itoa(int(m))
}

// optionSymbol is the NSE trading symbol: weekly ROOT YY M DD STRIKE CE,
// monthly ROOT YY MMM STRIKE CE (brokers.md §2.10).
func optionSymbol(u *underlying, e expiry, strike float64, call bool) string {
	d := e.at.In(ist)
	side := "PE"
	if call {
		side = "CE"
	}
	k := strconv.FormatFloat(strike, 'f', -1, 64)
	if e.monthly {
		return fmt.Sprintf("%s%02d%s%s%s", u.root, d.Year()%100, strings.ToUpper(d.Format("Jan")), k, side)
	}
	return fmt.Sprintf("%s%02d%s%02d%s%s", u.root, d.Year()%100, weeklyMonthCode(d.Month()), d.Day(), k, side)
}

// tokenLocked returns the exchange token of a trading symbol: a hash of the
// symbol (so it is the same after a restart), probed past collisions.
func (m *market) tokenLocked(sym string) int {
	if t, ok := m.tokens[sym]; ok {
		return t
	}
	h := fnv.New64a()
	h.Write([]byte(sym))
	t := int(h.Sum64()%90_000_000) + 10_000_000
	for m.used[t] {
		t++
	}
	m.used[t] = true
	m.tokens[sym] = t
	return t
}

// listingLocked returns the contracts listed at t, rebuilding them when an
// expiry has passed or the day changed.
func (m *market) listingLocked(t time.Time) *listing {
	l := t.In(ist)
	key := istDate(t) + strconv.FormatBool(l.Hour()*60+l.Minute() >= 15*60+30)
	if m.list != nil && m.list.key == key {
		return m.list
	}
	ls := &listing{key: key, expiries: map[*underlying][]expiry{}, byUpKey: map[string]*contract{},
		byFy: map[string]*contract{}, chains: map[*underlying]map[string][]*contract{}}
	for _, u := range m.underlyings {
		exps := expiriesAt(u, t)
		ls.expiries[u] = exps
		if len(exps) == 0 {
			continue
		}
		ls.chains[u] = map[string][]*contract{}
		center := math.Round(u.base/u.step) * u.step
		for _, e := range exps {
			var cs []*contract
			for i := -strikesEachSide; i <= strikesEachSide; i++ {
				k := center + float64(i)*u.step
				for _, call := range []bool{true, false} {
					sym := optionSymbol(u, e, k, call)
					tok := m.tokenLocked(sym)
					c := &contract{u: u, exp: e, strike: k, call: call, token: tok, symbol: sym,
						upKey: "NSE_FO|" + strconv.Itoa(tok), fySymbol: "NSE:" + sym,
						fyToken: "1011" + e.at.In(ist).Format("060102") + strconv.Itoa(tok)}
					cs = append(cs, c)
					ls.byUpKey[c.upKey] = c
					ls.byFy[c.fySymbol] = c
				}
			}
			ls.chains[u][e.date] = cs
		}
	}
	m.list = ls
	return ls
}

// expiries returns u's listed expiries at t.
func (m *market) expiries(u *underlying, t time.Time) []expiry {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.listingLocked(t).expiries[u]
}

// chain returns u's contracts for expiry date at t (call then put per
// strike, strikes ascending); nil when date is not listed.
func (m *market) chain(u *underlying, date string, t time.Time) []*contract {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.listingLocked(t).chains[u][date]
}

// lookupUpstox resolves an Upstox instrument key at t.
func (m *market) lookupUpstox(key string, t time.Time) (instrument, bool) {
	if u, ok := m.byUpKey[key]; ok {
		return instrument{u: u}, true
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if c, ok := m.listingLocked(t).byUpKey[key]; ok {
		return instrument{u: c.u, opt: c}, true
	}
	return instrument{}, false
}

// lookupFyers resolves a Fyers symbol at t.
func (m *market) lookupFyers(sym string, t time.Time) (instrument, bool) {
	if u, ok := m.byFy[sym]; ok {
		return instrument{u: u}, true
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if c, ok := m.listingLocked(t).byFy[sym]; ok {
		return instrument{u: c.u, opt: c}, true
	}
	return instrument{}, false
}

// level is one depth level.
type level struct {
	price  float64
	qty    int64
	orders int64
}

// quote is everything the sandbox reports about an instrument at a time;
// both brokers' REST answers and the feed are cut from it.
type quote struct {
	ltp, cp, open, high, low, atp float64
	volume, ltq                   int64
	ltt                           time.Time
	oi, prevOI                    float64
	bid, ask                      float64
	bidQty, askQty                int64
	buy, sell                     [5]level
	totalBuy, totalSell           int64
	lowerCircuit, upperCircuit    float64
	greeks                        *greeks
	spot                          float64 // the underlying's price
}

// tradingFraction is how much of the NSE session (09:15-15:30 IST) has
// passed at t, at least 0.05 so volumes are never zero.
func tradingFraction(t time.Time) float64 {
	l := t.In(ist)
	mins := float64(l.Hour()*60+l.Minute()) - (9*60 + 15)
	return math.Min(math.Max(mins/375, 0.05), 1)
}

// quote prices in at t.
func (m *market) quote(in instrument, t time.Time) quote {
	w := m.spot(in.u, t)
	if in.opt == nil {
		return underlyingQuote(in.u, w, t)
	}
	return optionQuote(in.opt, w, t)
}

func underlyingQuote(u *underlying, w walk, t time.Time) quote {
	q := quote{ltp: w.price, cp: w.prevClose, open: w.open, high: w.high, low: w.low, ltt: t.Truncate(time.Second), spot: w.price}
	q.atp = tick((w.high + w.low + w.price) / 3)
	if u.index {
		return q
	}
	q.volume = int64(w.volume) + int64(2e6*tradingFraction(t)*(0.5+hash01(u.name, w.day, "vol")))
	q.ltq = int64(1 + 50*hash01(u.name, t.Format(time.RFC3339)))
	q.lowerCircuit, q.upperCircuit = tick(w.prevClose*0.8), tick(w.prevClose*1.2)
	fillDepth(&q, u.name, 0.05, 1)
	return q
}

// fillDepth builds five levels each side around q.ltp.
func fillDepth(q *quote, name string, step float64, lot int64) {
	ts := q.ltt.Format(time.RFC3339)
	for i := range 5 {
		f := float64(i)
		q.buy[i] = level{price: math.Max(tick(q.ltp-step*(f+1)), 0), qty: lot * int64(1+40*hash01(name, ts, "b", strconv.Itoa(i))), orders: int64(1 + 9*hash01(name, ts, "bo", strconv.Itoa(i)))}
		q.sell[i] = level{price: tick(q.ltp + step*(f+1)), qty: lot * int64(1+40*hash01(name, ts, "s", strconv.Itoa(i))), orders: int64(1 + 9*hash01(name, ts, "so", strconv.Itoa(i)))}
		q.totalBuy += q.buy[i].qty * 37
		q.totalSell += q.sell[i].qty * 35
	}
	q.bid, q.bidQty = q.buy[0].price, q.buy[0].qty
	q.ask, q.askQty = q.sell[0].price, q.sell[0].qty
}

func optionQuote(c *contract, w walk, t time.Time) quote {
	u := c.u
	years := math.Max(c.exp.at.Sub(t).Seconds(), 60) / (365 * 24 * 3600)
	iv := smileVol(u.atmVol, w.price, c.strike, years)
	price, g := blackScholes(c.call, w.price, c.strike, years, iv)
	prevYears := years + 1.0/365
	prev, _ := blackScholes(c.call, w.prevClose, c.strike, prevYears, smileVol(u.atmVol, w.prevClose, c.strike, prevYears))
	g.delta, g.gamma, g.theta, g.vega, g.rho = round4(g.delta), round4(g.gamma), round2(g.theta), round2(g.vega), round2(g.rho)
	g.iv, g.pop = round2(g.iv), round2(g.pop)
	lot := int64(u.lot)
	q := quote{ltp: math.Max(tick(price), 0.05), cp: math.Max(tick(prev), 0.05), ltt: t.Truncate(time.Second), greeks: &g, spot: w.price}
	// Open interest peaks near the money, calls above it and puts below.
	dist := (c.strike - u.base) / (u.step * 8)
	oiLots := 40000 * math.Exp(-0.5*dist*dist) * (0.7 + 0.6*hash01(c.symbol, "oi"))
	if c.call == (c.strike >= u.base) {
		oiLots *= 1.4
	}
	if c.exp.monthly {
		oiLots *= 1.5
	}
	q.oi = float64(int64(oiLots+1) * lot)
	q.prevOI = float64(int64(oiLots*(0.85+0.2*hash01(c.symbol, w.day, "poi"))+1) * lot)
	q.volume = int64(oiLots*(0.5+2*hash01(c.symbol, w.day, "v"))*tradingFraction(t)+1) * lot
	q.ltq = lot * int64(1+5*hash01(c.symbol, t.Format(time.RFC3339)))
	q.open = math.Max(tick(q.cp*(0.95+0.1*hash01(c.symbol, w.day, "o"))), 0.05)
	q.high = tick(math.Max(q.open, q.ltp) * (1 + 0.04*hash01(c.symbol, w.day, "h")))
	q.low = math.Max(tick(math.Min(q.open, q.ltp)*(1-0.04*hash01(c.symbol, w.day, "l"))), 0.05)
	q.atp = tick((q.high + q.low + q.ltp) / 3)
	q.lowerCircuit, q.upperCircuit = 0.05, tick(q.cp*4+20)
	fillDepth(&q, c.symbol, math.Max(tick(q.ltp*0.002), 0.05), lot)
	return q
}
