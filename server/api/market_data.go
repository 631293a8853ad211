package api

import (
	"context"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/timestamppb"

	feedgatev1 "github.com/feedgate/feedgate/gen/go/feedgate/v1"
	"github.com/feedgate/feedgate/gen/go/feedgate/v1/feedgatev1connect"
	"github.com/feedgate/feedgate/server/broker"
)

// MarketData implements feedgatev1connect.MarketDataServiceHandler.
type MarketData struct {
	feedgatev1connect.UnimplementedMarketDataServiceHandler
	d *Deps
	// chains coalesces identical concurrent option-chain requests of one
	// user into one broker call.
	chains flights
}

// NewMarketData returns the MarketDataService handler.
func NewMarketData(d *Deps) *MarketData {
	d.defaults()
	return &MarketData{d: d}
}

// chainCallTimeout bounds a coalesced broker call, which lives as long as
// the latest deadline among its callers (this long for a caller without
// one).
const chainCallTimeout = 30 * time.Second

// GetOptionChain implements the RPC.
func (h *MarketData) GetOptionChain(ctx context.Context, req *connect.Request[feedgatev1.GetOptionChainRequest]) (*connect.Response[feedgatev1.GetOptionChainResponse], error) {
	return unary(ctx, h.d, req, h.getOptionChain)
}

func (h *MarketData) getOptionChain(ctx context.Context, m *feedgatev1.GetOptionChainRequest) (*feedgatev1.GetOptionChainResponse, error) {
	kind, c, err := h.d.brokerClient(m.GetBroker())
	if err != nil {
		return nil, err
	}
	if err := validKey(c, "underlying_key", m.GetUnderlyingKey()); err != nil {
		return nil, err
	}
	if err := validDate("expiry_date", m.GetExpiryDate()); err != nil {
		return nil, err
	}
	u := user(ctx)
	// Fail fast, before joining a flight, when the connection is dead.
	if _, err := h.d.Conns.Session(ctx, u.ID, kind); err != nil {
		return nil, err
	}
	flight := u.ID + "\x00" + string(kind) + "\x00" + m.GetUnderlyingKey() + "\x00" + m.GetExpiryDate()
	v, err := h.chains.do(ctx, flight, chainCallTimeout, func(ctx context.Context) (any, error) {
		var chain *broker.OptionChain
		err := h.d.Conns.Call(ctx, u.ID, kind, "option chain", func(ctx context.Context, cr broker.Credentials) error {
			var err error
			chain, err = c.OptionChain(ctx, cr, m.GetUnderlyingKey(), m.GetExpiryDate())
			return err
		})
		if err != nil {
			return nil, err
		}
		return chainProto(kind, chain, h.d.Now()), nil
	})
	if err != nil {
		return nil, err
	}
	return v.(*feedgatev1.GetOptionChainResponse), nil
}

func chainProto(kind broker.Kind, c *broker.OptionChain, now time.Time) *feedgatev1.GetOptionChainResponse {
	res := &feedgatev1.GetOptionChainResponse{
		UnderlyingKey:       c.UnderlyingKey,
		UnderlyingSpotPrice: c.UnderlyingSpot,
		ExpiryDate:          c.ExpiryDate,
		Broker:              brokerProto(kind),
		FetchedAt:           timestamppb.New(now),
		Strikes:             make([]*feedgatev1.OptionStrike, len(c.Strikes)),
	}
	for i, s := range c.Strikes {
		res.Strikes[i] = &feedgatev1.OptionStrike{StrikePrice: s.StrikePrice, Call: sideProto(s.Call), Put: sideProto(s.Put), Pcr: s.PCR}
	}
	return res
}

func sideProto(s *broker.OptionSide) *feedgatev1.OptionSide {
	if s == nil {
		return nil
	}
	return &feedgatev1.OptionSide{
		InstrumentKey: s.InstrumentKey, Ltp: s.LTP, ClosePrice: s.ClosePrice, Volume: s.Volume, Oi: s.OI, PrevOi: s.PrevOI,
		BidPrice: s.BidPrice, BidQty: s.BidQty, AskPrice: s.AskPrice, AskQty: s.AskQty,
		Delta: s.Delta, Gamma: s.Gamma, Theta: s.Theta, Vega: s.Vega, Iv: s.IV,
	}
}

// GetQuotes implements the RPC.
func (h *MarketData) GetQuotes(ctx context.Context, req *connect.Request[feedgatev1.GetQuotesRequest]) (*connect.Response[feedgatev1.GetQuotesResponse], error) {
	return unary(ctx, h.d, req, h.getQuotes)
}

func (h *MarketData) getQuotes(ctx context.Context, m *feedgatev1.GetQuotesRequest) (*feedgatev1.GetQuotesResponse, error) {
	kind, c, err := h.d.brokerClient(m.GetBroker())
	if err != nil {
		return nil, err
	}
	keys, err := validKeys(c, "instrument_keys", m.GetInstrumentKeys(), broker.MaxQuoteKeys)
	if err != nil {
		return nil, err
	}
	var q *broker.Quotes
	err = h.d.Conns.Call(ctx, user(ctx).ID, kind, "quotes", func(ctx context.Context, cr broker.Credentials) error {
		var err error
		q, err = c.Quotes(ctx, cr, keys)
		return err
	})
	if err != nil {
		return nil, err
	}
	res := &feedgatev1.GetQuotesResponse{Quotes: make([]*feedgatev1.Quote, len(q.Quotes)), UnknownKeys: q.Unknown}
	for i, x := range q.Quotes {
		res.Quotes[i] = &feedgatev1.Quote{InstrumentKey: x.InstrumentKey, Ltp: x.LTP, ClosePrice: x.ClosePrice, Volume: x.Volume, Oi: x.OI}
	}
	return res, nil
}
