package fyers

import (
	"context"
	"net/http"
	"net/url"
	"strings"

	"golang.org/x/sync/errgroup"

	"github.com/feedgate/feedgate/server/broker"
)

// Batching of /data/quotes: Fyers takes at most quotesPerCall symbols a
// call; larger lists are split and run quotesConcurrency calls at a time
// (the per-user limiter still paces them).
const (
	quotesPerCall     = 50
	quotesConcurrency = 3
)

// quoteEntry is one element of /data/quotes's d list.
type quoteEntry struct {
	N string `json:"n"`
	S string `json:"s"`
	V struct {
		LP        float64  `json:"lp"`
		PrevClose *float64 `json:"prev_close_price"`
		Volume    *float64 `json:"volume"`
	} `json:"v"`
}

// Quotes implements broker.Client. Symbols Fyers answers with s:"error", or
// leaves out, are reported in Unknown. Bulk quotes carry no OI.
func (c *Client) Quotes(ctx context.Context, cr broker.Credentials, keys []string) (*broker.Quotes, error) {
	const op = "quotes"
	uniq, err := broker.UniqueKeys(broker.Fyers, op, keys, ValidateInstrumentKey)
	if err != nil {
		return nil, err
	}
	batches := make([][]quoteEntry, (len(uniq)+quotesPerCall-1)/quotesPerCall)
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(quotesConcurrency)
	for i := range batches {
		chunk := uniq[i*quotesPerCall : min((i+1)*quotesPerCall, len(uniq))]
		g.Go(func() error {
			q := url.Values{"symbols": {strings.Join(chunk, ",")}}
			return c.caller.Do(gctx, c.request(cr, op, http.MethodGet, "/data/quotes", q), func(b []byte) error {
				var resp struct {
					status
					D []quoteEntry `json:"d"`
				}
				if err := decodeBody(b, &resp); err != nil {
					return err
				}
				batches[i] = resp.D
				return resp.failure(http.StatusOK)
			})
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	return quotesFromEntries(keys, batches), nil
}

// quotesFromEntries answers keys, in order, from the batches' entries.
func quotesFromEntries(keys []string, batches [][]quoteEntry) *broker.Quotes {
	byName := make(map[string]*quoteEntry)
	for _, b := range batches {
		for i := range b {
			if b[i].S == "ok" {
				byName[b[i].N] = &b[i]
			}
		}
	}
	out := &broker.Quotes{Quotes: make([]broker.Quote, 0, len(keys))}
	for _, k := range keys {
		e, ok := byName[k]
		if !ok {
			out.Unknown = append(out.Unknown, k)
			continue
		}
		q := broker.Quote{InstrumentKey: k, LTP: e.V.LP, ClosePrice: e.V.PrevClose}
		if e.V.Volume != nil {
			v := int64(*e.V.Volume)
			q.Volume = &v
		}
		out.Quotes = append(out.Quotes, q)
	}
	return out
}
