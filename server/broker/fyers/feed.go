package fyers

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/feedgate/feedgate/server/broker"
)

// Polling pace. Fyers's data socket speaks a proprietary binary protocol
// feedgate does not support yet, so the feed polls /data/quotes. All REST
// calls of a user share 10/s and 200/min (brokers.md §2.9), and exceeding
// the per-minute limit more than 3 times a day blocks the user for the day,
// so the feed takes at most FeedPollCallsPerMinute, leaving the rest to
// option chains and quotes; the per-user limiter paces both.
const (
	// FeedPollCallsPerMinute is the feed's share of the 200/min budget.
	FeedPollCallsPerMinute = 100
	// MinFeedPollInterval is the fastest a round of polls repeats.
	MinFeedPollInterval = time.Second
)

var _ broker.FeedDialer = (*Client)(nil)

// FeedLimits implements broker.FeedDialer.
func (c *Client) FeedLimits() broker.FeedLimits { return broker.FyersFeedLimits }

// DialFeed implements broker.FeedDialer. It makes no call: the first poll,
// after the first Subscribe, is where a dead token shows.
func (c *Client) DialFeed(_ context.Context, cr broker.Credentials, o broker.FeedOptions) (broker.FeedConn, error) {
	return &pollConn{c: c, cr: cr, every: o.PollInterval, keys: map[string]struct{}{},
		last: map[string]quoteState{}, closed: make(chan struct{})}, nil
}

// PollInterval is how often a feed of n symbols polls: one round takes
// ceil(n/50) calls, spread to stay within FeedPollCallsPerMinute.
func PollInterval(n int) time.Duration {
	calls := (n + quotesPerCall - 1) / quotesPerCall
	return max(MinFeedPollInterval, time.Duration(calls)*time.Minute/FeedPollCallsPerMinute)
}

// quoteState is what a symbol last reported; a tick goes out when it changes.
type quoteState struct {
	lp, bid, ask float64
	volume       int64
}

// pollConn is a feed made of /data/quotes polls.
type pollConn struct {
	c     *Client
	cr    broker.Credentials
	every time.Duration

	mu   sync.Mutex // guards keys
	keys map[string]struct{}

	// Owned by the goroutine calling Next.
	last  map[string]quoteState
	ticks []broker.Tick
	next  time.Time

	closeOnce sync.Once
	closed    chan struct{}
}

// Subscribe implements broker.FeedConn; every mode polls the same quote.
func (p *pollConn) Subscribe(_ context.Context, keys []string, _ broker.FeedMode) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, k := range keys {
		p.keys[k] = struct{}{}
	}
	return nil
}

// Unsubscribe implements broker.FeedConn.
func (p *pollConn) Unsubscribe(_ context.Context, keys []string) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, k := range keys {
		delete(p.keys, k)
	}
	return nil
}

// ChangeMode implements broker.FeedConn; polling has one mode.
func (p *pollConn) ChangeMode(context.Context, []string, broker.FeedMode) error { return nil }

// Close implements broker.FeedConn.
func (p *pollConn) Close() error {
	p.closeOnce.Do(func() { close(p.closed) })
	return nil
}

var errFeedClosed = &broker.Error{Broker: broker.Fyers, Class: broker.ClassUpstream, Op: "feed poll", Message: "feed closed"}

// wait sleeps d, or returns early with an error on ctx or Close.
func (p *pollConn) wait(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		select {
		case <-p.closed:
			return errFeedClosed
		default:
			return nil
		}
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return &broker.Error{Broker: broker.Fyers, Class: broker.ClassUpstream, Op: "feed poll", Message: "canceled", Err: ctx.Err()}
	case <-p.closed:
		return errFeedClosed
	case <-t.C:
		return nil
	}
}

// Next implements broker.FeedConn: it polls every symbol once a round and
// returns the symbols whose price, bid, ask or volume changed. A rate-limit
// answer waits the broker's Retry-After and goes on.
func (p *pollConn) Next(ctx context.Context) ([]broker.Tick, error) {
	for {
		if err := p.wait(ctx, time.Until(p.next)); err != nil {
			return nil, err
		}
		p.mu.Lock()
		keys := make([]string, 0, len(p.keys))
		for k := range p.keys {
			keys = append(keys, k)
		}
		p.mu.Unlock()
		every := p.every
		if every <= 0 {
			every = PollInterval(len(keys))
		}
		p.next = time.Now().Add(every)
		p.ticks = p.ticks[:0]
		for i := 0; i < len(keys); i += quotesPerCall {
			if err := p.poll(ctx, keys[i:min(i+quotesPerCall, len(keys))]); err != nil {
				be, ok := broker.AsError(err)
				if ok && be.Class == broker.ClassRateLimited {
					p.next = time.Now().Add(max(be.RetryAfter, every))
					break
				}
				return nil, err
			}
		}
		if len(p.ticks) > 0 {
			return p.ticks, nil
		}
	}
}

// feedQuote is the part of a /data/quotes entry the feed uses.
type feedQuote struct {
	N string `json:"n"`
	S string `json:"s"`
	V struct {
		LP        float64         `json:"lp"`
		PrevClose float64         `json:"prev_close_price"`
		Volume    float64         `json:"volume"`
		Bid       float64         `json:"bid"`
		Ask       float64         `json:"ask"`
		TT        json.RawMessage `json:"tt"`
	} `json:"v"`
}

// poll fetches one batch of at most 50 symbols and appends changed ticks.
func (p *pollConn) poll(ctx context.Context, keys []string) error {
	q := url.Values{"symbols": {strings.Join(keys, ",")}}
	var resp struct {
		status
		D []feedQuote `json:"d"`
	}
	err := p.c.caller.Do(ctx, p.c.request(p.cr, "feed poll", http.MethodGet, "/data/quotes", q), func(b []byte) error {
		if err := decodeBody(b, &resp); err != nil {
			return err
		}
		return resp.failure(http.StatusOK)
	})
	if err != nil {
		return err
	}
	now := p.c.cfg.Now().UnixNano()
	for _, e := range resp.D {
		if e.S != "ok" {
			continue
		}
		st := quoteState{lp: e.V.LP, bid: e.V.Bid, ask: e.V.Ask, volume: int64(e.V.Volume)}
		if old, ok := p.last[e.N]; ok && old == st {
			continue
		}
		p.last[e.N] = st
		p.ticks = append(p.ticks, broker.Tick{
			InstrumentKey: e.N, LTP: e.V.LP, LTTUnixMs: epochMs(e.V.TT), ClosePrice: e.V.PrevClose,
			Volume: st.volume, BidPrice: e.V.Bid, AskPrice: e.V.Ask, BrokerTimeUnixNanos: now,
		})
	}
	return nil
}

// epochMs reads Fyers's tt (epoch seconds, a string or a number) as ms.
func epochMs(raw json.RawMessage) int64 {
	s := strings.Trim(string(raw), `"`)
	if s == "" || s == "null" {
		return 0
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil {
		return 0
	}
	return int64(f * 1000)
}
