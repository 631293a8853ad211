package upstox

import (
	"context"
	"net/url"
	"strings"

	"github.com/feedgate/feedgate/server/broker"
)

// ltpEntry is one value of /v3/market-quote/ltp's data map. The map's keys
// are EXCHANGE:TRADINGSYMBOL, not the keys asked for, so entries are matched
// by InstrumentToken.
type ltpEntry struct {
	LastPrice       float64  `json:"last_price"`
	InstrumentToken string   `json:"instrument_token"`
	Volume          *float64 `json:"volume"`
	ClosePrice      *float64 `json:"cp"`
}

// Quotes implements broker.Client with LTP v3: last price, previous close
// and volume for at most broker.MaxQuoteKeys keys in one call.
func (c *Client) Quotes(ctx context.Context, cr broker.Credentials, keys []string) (*broker.Quotes, error) {
	const op = "quotes"
	uniq, err := broker.UniqueKeys(broker.Upstox, op, keys, ValidateInstrumentKey)
	if err != nil {
		return nil, err
	}
	if len(uniq) == 0 {
		return &broker.Quotes{}, nil
	}
	var env envelope[map[string]ltpEntry]
	q := url.Values{"instrument_key": {strings.Join(uniq, ",")}}
	if err := c.get(ctx, cr, op, "/v3/market-quote/ltp", q, func(b []byte) error { return decodeInto(b, &env) }); err != nil {
		return nil, err
	}
	return quotesFromData(keys, env.Data), nil
}

// quotesFromData answers keys, in order, from the LTP data map.
func quotesFromData(keys []string, data map[string]ltpEntry) *broker.Quotes {
	byToken := make(map[string]*ltpEntry, len(data))
	for k := range data {
		e := data[k]
		byToken[e.InstrumentToken] = &e
	}
	out := &broker.Quotes{Quotes: make([]broker.Quote, 0, len(keys))}
	for _, k := range keys {
		e, ok := byToken[k]
		if !ok {
			out.Unknown = append(out.Unknown, k)
			continue
		}
		q := broker.Quote{InstrumentKey: k, LTP: e.LastPrice, ClosePrice: e.ClosePrice}
		if e.Volume != nil {
			v := int64(*e.Volume)
			q.Volume = &v
		}
		out.Quotes = append(out.Quotes, q)
	}
	return out
}
