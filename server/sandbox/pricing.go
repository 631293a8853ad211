package sandbox

import "math"

// riskFreeRate is the rate used by the Black-Scholes pricer.
const riskFreeRate = 0.065

// greeks are Black-Scholes sensitivities in the units brokers quote them:
// theta per calendar day, vega and rho per volatility/rate point, iv and
// pop in percent.
type greeks struct {
	delta, gamma, theta, vega, rho, iv, pop float64
}

func normCDF(x float64) float64 { return 0.5 * math.Erfc(-x/math.Sqrt2) }

func normPDF(x float64) float64 { return math.Exp(-x*x/2) / math.Sqrt(2*math.Pi) }

// blackScholes prices a European option on spot s with strike k, t years to
// expiry and volatility v, and returns its greeks.
func blackScholes(call bool, s, k, t, v float64) (float64, greeks) {
	r := riskFreeRate
	sq := v * math.Sqrt(t)
	d1 := (math.Log(s/k) + (r+v*v/2)*t) / sq
	d2 := d1 - sq
	disc := math.Exp(-r * t)
	g := greeks{
		gamma: normPDF(d1) / (s * sq),
		vega:  s * normPDF(d1) * math.Sqrt(t) / 100,
		iv:    v * 100,
	}
	var price float64
	if call {
		price = s*normCDF(d1) - k*disc*normCDF(d2)
		g.delta = normCDF(d1)
		g.theta = (-s*normPDF(d1)*v/(2*math.Sqrt(t)) - r*k*disc*normCDF(d2)) / 365
		g.rho = k * t * disc * normCDF(d2) / 100
	} else {
		price = k*disc*normCDF(-d2) - s*normCDF(-d1)
		g.delta = normCDF(d1) - 1
		g.theta = (-s*normPDF(d1)*v/(2*math.Sqrt(t)) + r*k*disc*normCDF(-d2)) / 365
		g.rho = -k * t * disc * normCDF(-d2) / 100
	}
	// Probability of profit for a buyer at this price: the chance of
	// finishing beyond strike plus premium.
	be := k + price
	if !call {
		be = k - price
	}
	if be > 0 {
		d := (math.Log(s/be) + (r-v*v/2)*t) / sq
		if call {
			g.pop = normCDF(d) * 100
		} else {
			g.pop = normCDF(-d) * 100
		}
	}
	return price, g
}

// smileVol is the implied volatility at strike k for spot s and t years:
// the ATM level plus a smile in log-moneyness and a put skew, kept inside
// a plausible band.
func smileVol(atm, s, k, t float64) float64 {
	m := math.Log(k/s) / math.Sqrt(math.Max(t, 1.0/365))
	v := atm + 0.15*m*m - 0.03*m
	return math.Min(math.Max(v, 0.08), 0.6)
}

// round2 rounds to two decimals, as brokers print greeks and ratios.
func round2(x float64) float64 { return math.Round(x*100) / 100 }

// round4 rounds to four decimals.
func round4(x float64) float64 { return math.Round(x*1e4) / 1e4 }

// tick rounds a price to the 0.05 tick.
func tick(x float64) float64 { return math.Round(x*20) / 20 }
