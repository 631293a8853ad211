package sandbox

import (
	"cmp"
	"math"
	"slices"
)

// Underlyings lists the instrument keys of the sandbox's underlyings in
// the broker's own form (Upstox "NSE_INDEX|Nifty 50", Fyers
// "NSE:NIFTY50-INDEX"), India VIX included.
func (s *Sandbox) Underlyings(b Broker) []string {
	out := make([]string, 0, len(s.mkt.underlyings))
	for _, u := range s.mkt.underlyings {
		if b == Fyers {
			out = append(out, u.fySymbol)
		} else {
			out = append(out, u.upKey)
		}
	}
	return out
}

// findUnderlying accepts either broker's key for an underlying.
func (s *Sandbox) findUnderlying(key string) *underlying {
	if u, ok := s.mkt.byUpKey[key]; ok {
		return u
	}
	return s.mkt.byFy[key]
}

// Expiries lists the listed expiry dates (YYYY-MM-DD, ascending) of
// underlying, given in either broker's form, at the sandbox clock's now;
// nil for an unknown underlying or one without options.
func (s *Sandbox) Expiries(underlying string) []string {
	u := s.findUnderlying(underlying)
	if u == nil {
		return nil
	}
	var out []string
	for _, e := range s.mkt.expiries(u, s.now()) {
		out = append(out, e.date)
	}
	return out
}

// OptionKeys returns up to n option instrument keys of underlying (either
// broker's form) for expiry (YYYY-MM-DD; "" = the nearest) in broker's
// form (Upstox "NSE_FO|<token>", Fyers "NSE:NIFTY...CE"), nearest the
// money first, call before put at each strike.
func (s *Sandbox) OptionKeys(b Broker, underlying, expiry string, n int) []string {
	u := s.findUnderlying(underlying)
	if u == nil || n <= 0 {
		return nil
	}
	now := s.now()
	if expiry == "" {
		exps := s.mkt.expiries(u, now)
		if len(exps) == 0 {
			return nil
		}
		expiry = exps[0].date
	}
	cs := slices.Clone(s.mkt.chain(u, expiry, now))
	spot := s.mkt.spot(u, now).price
	slices.SortStableFunc(cs, func(a, c *contract) int {
		return cmp.Compare(math.Abs(a.strike-spot), math.Abs(c.strike-spot))
	})
	out := make([]string, 0, min(n, len(cs)))
	for _, c := range cs[:min(n, len(cs))] {
		if b == Fyers {
			out = append(out, c.fySymbol)
		} else {
			out = append(out, c.upKey)
		}
	}
	return out
}
