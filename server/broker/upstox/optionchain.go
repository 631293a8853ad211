package upstox

import (
	"context"
	"net/url"
	"slices"
	"time"

	"github.com/feedgate/feedgate/server/broker"
)

// strikeData is one element of /v2/option/chain's data.
type strikeData struct {
	Expiry         string      `json:"expiry"`
	PCR            float64     `json:"pcr"`
	StrikePrice    float64     `json:"strike_price"`
	UnderlyingKey  string      `json:"underlying_key"`
	UnderlyingSpot float64     `json:"underlying_spot_price"`
	CallOptions    *optionData `json:"call_options"`
	PutOptions     *optionData `json:"put_options"`
}

type optionData struct {
	InstrumentKey string `json:"instrument_key"`
	MarketData    struct {
		LTP        float64 `json:"ltp"`
		Volume     float64 `json:"volume"`
		OI         float64 `json:"oi"`
		ClosePrice float64 `json:"close_price"`
		BidPrice   float64 `json:"bid_price"`
		BidQty     float64 `json:"bid_qty"`
		AskPrice   float64 `json:"ask_price"`
		AskQty     float64 `json:"ask_qty"`
		PrevOI     float64 `json:"prev_oi"`
	} `json:"market_data"`
	Greeks struct {
		Vega  float64 `json:"vega"`
		Theta float64 `json:"theta"`
		Gamma float64 `json:"gamma"`
		Delta float64 `json:"delta"`
		IV    float64 `json:"iv"`
	} `json:"option_greeks"`
}

// OptionChain implements broker.Client. A date that is not a listed expiry
// gets an empty data list from Upstox, reported as ClassBadInput on
// expiry_date.
func (c *Client) OptionChain(ctx context.Context, cr broker.Credentials, underlying, expiry string) (*broker.OptionChain, error) {
	const op = "option chain"
	if err := ValidateInstrumentKey(underlying); err != nil {
		return nil, badInput(op, "instrument_key", err.Error())
	}
	if _, err := time.Parse(time.DateOnly, expiry); err != nil {
		return nil, badInput(op, "expiry_date", "expiry date must be YYYY-MM-DD")
	}
	var env envelope[[]strikeData]
	q := url.Values{"instrument_key": {underlying}, "expiry_date": {expiry}}
	err := c.get(ctx, cr, op, "/v2/option/chain", q, func(b []byte) error {
		if err := decodeInto(b, &env); err != nil {
			return err
		}
		if len(env.Data) == 0 {
			return &broker.Error{Class: broker.ClassBadInput, Field: "expiry_date", Message: "not a listed expiry of this underlying"}
		}
		return nil
	})
	if be, ok := broker.AsError(err); ok && be.Class == broker.ClassBadInput && be.Field == "instrument_key" {
		be.Field = "underlying_key" // the only instrument key of this call
	}
	if err != nil {
		return nil, err
	}
	return chainFromData(underlying, expiry, env.Data), nil
}

// chainFromData maps Upstox's per-strike objects onto a broker.OptionChain
// sorted by strike.
func chainFromData(underlying, expiry string, data []strikeData) *broker.OptionChain {
	ch := &broker.OptionChain{UnderlyingKey: underlying, ExpiryDate: expiry, Strikes: make([]broker.OptionStrike, 0, len(data))}
	for _, s := range data {
		if ch.UnderlyingSpot == 0 {
			ch.UnderlyingSpot = s.UnderlyingSpot
		}
		ch.Strikes = append(ch.Strikes, broker.OptionStrike{
			StrikePrice: s.StrikePrice,
			Call:        s.CallOptions.side(),
			Put:         s.PutOptions.side(),
			PCR:         s.PCR,
		})
	}
	slices.SortStableFunc(ch.Strikes, func(a, b broker.OptionStrike) int {
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

func (o *optionData) side() *broker.OptionSide {
	if o == nil || o.InstrumentKey == "" {
		return nil
	}
	m, g := &o.MarketData, &o.Greeks
	return &broker.OptionSide{
		InstrumentKey: o.InstrumentKey,
		LTP:           m.LTP, ClosePrice: m.ClosePrice,
		Volume: int64(m.Volume),
		OI:     m.OI, PrevOI: m.PrevOI,
		BidPrice: m.BidPrice, BidQty: int64(m.BidQty),
		AskPrice: m.AskPrice, AskQty: int64(m.AskQty),
		Delta: g.Delta, Gamma: g.Gamma, Theta: g.Theta, Vega: g.Vega, IV: g.IV,
	}
}
