package fyers

import (
	"context"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"time"

	"github.com/feedgate/feedgate/server/broker"
)

// ist is India Standard Time, UTC+05:30 all year.
var ist = time.FixedZone("IST", 5*3600+30*60)

// ExpiryTimestamp returns the epoch seconds Fyers names an expiry date by:
// the date at 15:30 IST, the market close. UNCONFIRMED (brokers.md §2.5 and
// §2.10 say only that it is an epoch string from expiryData[].expiry).
func ExpiryTimestamp(date time.Time) int64 {
	return time.Date(date.Year(), date.Month(), date.Day(), 15, 30, 0, 0, ist).Unix()
}

// chainData is options-chain-v3's data.
type chainData struct {
	CallOI       float64       `json:"callOi"`
	PutOI        float64       `json:"putOi"`
	ExpiryData   []expiryEntry `json:"expiryData"`
	OptionsChain []chainRow    `json:"optionsChain"`
}

// expiryEntry is one listed expiry of the underlying.
type expiryEntry struct {
	Date   string `json:"date"` // DD-MM-YYYY
	Expiry string `json:"expiry"`
}

// chainRow is one row of the flat optionsChain list: the underlying
// (strike_price -1) or one CE or PE contract.
type chainRow struct {
	Symbol      string  `json:"symbol"`
	OptionType  string  `json:"option_type"`
	StrikePrice float64 `json:"strike_price"`
	LTP         float64 `json:"ltp"`
	LTPCh       float64 `json:"ltpch"`
	Bid         float64 `json:"bid"`
	Ask         float64 `json:"ask"`
	Volume      float64 `json:"volume"`
	OI          float64 `json:"oi"`
	PrevOI      float64 `json:"prev_oi"`
	Greeks      struct {
		Delta float64 `json:"delta"`
		Gamma float64 `json:"gamma"`
		Theta float64 `json:"theta"`
		Vega  float64 `json:"vega"`
		IV    float64 `json:"iv"`
	} `json:"greeks"`
}

// strikeCount is how many strikes each side of the money are asked for,
// the most Fyers allows.
const strikeCount = 50

// OptionChain implements broker.Client. A date Fyers does not list in
// expiryData is reported as ClassBadInput on expiry_date.
func (c *Client) OptionChain(ctx context.Context, cr broker.Credentials, underlying, expiry string) (*broker.OptionChain, error) {
	const op = "option chain"
	if err := ValidateInstrumentKey(underlying); err != nil {
		return nil, badInput(op, "instrument_key", err.Error())
	}
	day, err := time.Parse(time.DateOnly, expiry)
	if err != nil {
		return nil, badInput(op, "expiry_date", "expiry date must be YYYY-MM-DD")
	}
	q := url.Values{
		"symbol":      {underlying},
		"strikecount": {strconv.Itoa(strikeCount)},
		"timestamp":   {strconv.FormatInt(ExpiryTimestamp(day), 10)},
		"greeks":      {"1"},
	}
	var data chainData
	err = c.caller.Do(ctx, c.request(cr, op, http.MethodGet, "/data/options-chain-v3", q), func(b []byte) error {
		return decodeChain(b, day.Format("02-01-2006"), &data)
	})
	if be, ok := broker.AsError(err); ok && be.Class == broker.ClassBadInput {
		// An invalid-symbol answer is about the underlying; any other
		// invalid-parameter answer can only be about the expiry timestamp
		// (strikecount and greeks are fixed).
		switch be.Field {
		case "instrument_key":
			be.Field = "underlying_key"
		case "":
			be.Field = "expiry_date"
		}
	}
	if err != nil {
		return nil, err
	}
	return chainFromData(underlying, expiry, &data), nil
}

// decodeChain reads an options-chain-v3 body and checks that ddmmyyyy is a
// listed expiry.
func decodeChain(b []byte, ddmmyyyy string, data *chainData) error {
	var resp struct {
		status
		Data *chainData `json:"data"`
	}
	resp.Data = data
	if err := decodeBody(b, &resp); err != nil {
		return err
	}
	if err := resp.failure(http.StatusOK); err != nil {
		return err
	}
	if !slices.ContainsFunc(data.ExpiryData, func(e expiryEntry) bool { return e.Date == ddmmyyyy }) {
		return &broker.Error{Class: broker.ClassBadInput, Field: "expiry_date", Message: "not a listed expiry"}
	}
	return nil
}

// chainFromData pairs CE and PE rows by strike, takes the spot from the
// strike -1 row, and sorts by strike.
func chainFromData(underlying, expiry string, d *chainData) *broker.OptionChain {
	ch := &broker.OptionChain{UnderlyingKey: underlying, ExpiryDate: expiry}
	byStrike := make(map[float64]int, len(d.OptionsChain)/2)
	for i := range d.OptionsChain {
		r := &d.OptionsChain[i]
		if r.StrikePrice == -1 {
			if ch.UnderlyingSpot == 0 {
				ch.UnderlyingSpot = r.LTP
			}
			continue
		}
		if r.OptionType != "CE" && r.OptionType != "PE" {
			continue
		}
		j, ok := byStrike[r.StrikePrice]
		if !ok {
			j = len(ch.Strikes)
			byStrike[r.StrikePrice] = j
			ch.Strikes = append(ch.Strikes, broker.OptionStrike{StrikePrice: r.StrikePrice})
		}
		if r.OptionType == "CE" {
			ch.Strikes[j].Call = r.side()
		} else {
			ch.Strikes[j].Put = r.side()
		}
	}
	for i := range ch.Strikes {
		s := &ch.Strikes[i]
		if s.Call != nil && s.Put != nil && s.Call.OI > 0 {
			s.PCR = s.Put.OI / s.Call.OI
		}
	}
	slices.SortFunc(ch.Strikes, func(a, b broker.OptionStrike) int {
		switch {
		case a.StrikePrice < b.StrikePrice:
			return -1
		case a.StrikePrice > b.StrikePrice:
			return 1
		}
		return 0
	})
	return ch
}

func (r *chainRow) side() *broker.OptionSide {
	return &broker.OptionSide{
		InstrumentKey: r.Symbol,
		LTP:           r.LTP,
		ClosePrice:    r.LTP - r.LTPCh,
		Volume:        int64(r.Volume),
		OI:            r.OI, PrevOI: r.PrevOI,
		BidPrice: r.Bid, AskPrice: r.Ask,
		Delta: r.Greeks.Delta, Gamma: r.Greeks.Gamma, Theta: r.Greeks.Theta, Vega: r.Greeks.Vega, IV: r.Greeks.IV,
	}
}
