package upstox

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"math"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/feedgate/feedgate/server/broker"
)

// DefaultFeedIdleTimeout is how long a feed socket may stay silent (no
// message, no ping) before it counts as lost. Upstox pings idle sockets
// (the sandbox every 5 s); its real interval is undocumented, so the
// default allows several missed pings.
const DefaultFeedIdleTimeout = 30 * time.Second

// feedReadLimit bounds one feed message: a full-mode snapshot of 2000 keys.
const feedReadLimit = 32 << 20

var _ broker.FeedDialer = (*Client)(nil)

// FeedLimits implements broker.FeedDialer.
func (c *Client) FeedLimits() broker.FeedLimits { return broker.UpstoxFeedLimits }

// authorizeFeed gets a fresh single-use WebSocket URL for the v3 feed.
func (c *Client) authorizeFeed(ctx context.Context, cr broker.Credentials) (string, error) {
	var env envelope[struct {
		URI      string `json:"authorized_redirect_uri"`
		URICamel string `json:"authorizedRedirectUri"`
	}]
	err := c.get(ctx, cr, "feed authorize", "/v3/feed/market-data-feed/authorize", nil,
		func(b []byte) error { return decodeInto(b, &env) })
	if err != nil {
		return "", err
	}
	uri := env.Data.URI
	if uri == "" {
		uri = env.Data.URICamel
	}
	if uri == "" {
		return "", &broker.Error{Broker: broker.Upstox, Class: broker.ClassUpstream, Op: "feed authorize", Message: "no feed URL in the answer"}
	}
	return uri, nil
}

// DialFeed implements broker.FeedDialer: it authorizes (a fresh one-time
// URL on every dial, as Upstox requires) and opens the WebSocket. A 401 from
// authorize, or a 401/403 handshake, is ClassAuthDead.
//
// The dial as a whole (authorize and handshake) is bounded by the idle
// timeout: a network path that went silent must fail the dial, to be
// retried with backoff, rather than hang the upstream on a dead pooled
// connection.
func (c *Client) DialFeed(ctx context.Context, cr broker.Credentials, o broker.FeedOptions) (broker.FeedConn, error) {
	bound := o.IdleTimeout
	if bound <= 0 {
		bound = DefaultFeedIdleTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, bound)
	defer cancel()
	uri, err := c.authorizeFeed(ctx, cr)
	if err != nil {
		return nil, err
	}
	return dialFeedURL(ctx, uri, o.IdleTimeout)
}

// dialFeedURL opens the feed socket at an authorized URL.
func dialFeedURL(ctx context.Context, uri string, idle time.Duration) (*feedConn, error) {
	fc := &feedConn{idle: idle, dec: newDecoder()}
	if fc.idle <= 0 {
		fc.idle = DefaultFeedIdleTimeout
	}
	fc.touch()
	ws, resp, err := websocket.Dial(ctx, uri, &websocket.DialOptions{
		OnPingReceived: func(context.Context, []byte) bool { fc.touch(); return true },
	})
	if err != nil {
		// The error text may hold the single-use URL: keep it out of logs.
		err = errors.New(strings.ReplaceAll(err.Error(), uri, "<feed url>"))
		e := &broker.Error{Broker: broker.Upstox, Class: broker.ClassUpstream, Op: "feed connect", Message: "feed handshake failed", Err: err}
		if resp != nil {
			e.HTTPStatus = resp.StatusCode
			// docs/brokers/upstox.md §6.6: a dead token fails the handshake with 401;
			// 403 follows a rejected URL or token. The URL was fresh, so
			// both mean the token is not accepted.
			if resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden {
				e.Class, e.Message = broker.ClassAuthDead, "feed handshake refused the token"
			}
		}
		return nil, e
	}
	ws.SetReadLimit(feedReadLimit)
	fc.ws = ws
	fc.watchdog = time.AfterFunc(fc.idle, fc.checkIdle)
	return fc, nil
}

// feedConn is one v3 feed socket. Writes are serialised by coder/websocket;
// Next is called by one goroutine at a time.
type feedConn struct {
	ws       *websocket.Conn
	idle     time.Duration
	last     atomic.Int64 // unix nanos of the last frame received
	silent   atomic.Bool
	watchdog *time.Timer
	dec      *decoder

	closeOnce sync.Once
}

func (fc *feedConn) touch() { fc.last.Store(time.Now().UnixNano()) }

// checkIdle runs on the watchdog timer: it closes a socket silent for
// longer than idle (so the blocked Read fails), or re-arms itself.
func (fc *feedConn) checkIdle() {
	since := time.Duration(time.Now().UnixNano() - fc.last.Load())
	if since >= fc.idle {
		fc.silent.Store(true)
		_ = fc.ws.CloseNow()
		return
	}
	fc.watchdog.Reset(fc.idle - since)
}

// feedRequest is the JSON subscribe/unsubscribe/change_mode message.
type feedRequest struct {
	GUID   string          `json:"guid"`
	Method string          `json:"method"`
	Data   feedRequestData `json:"data"`
}

type feedRequestData struct {
	Mode           string   `json:"mode,omitempty"`
	InstrumentKeys []string `json:"instrumentKeys"`
}

func newGUID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// send writes one request as a binary frame, as Upstox requires.
func (fc *feedConn) send(ctx context.Context, method string, keys []string, mode string) error {
	if len(keys) == 0 {
		return nil
	}
	b, err := json.Marshal(feedRequest{GUID: newGUID(), Method: method, Data: feedRequestData{Mode: mode, InstrumentKeys: keys}})
	if err != nil {
		return err
	}
	if err := fc.ws.Write(ctx, websocket.MessageBinary, b); err != nil {
		return fc.lost("feed "+method, err)
	}
	return nil
}

// Subscribe implements broker.FeedConn.
func (fc *feedConn) Subscribe(ctx context.Context, keys []string, mode broker.FeedMode) error {
	return fc.send(ctx, "sub", keys, mode.String())
}

// Unsubscribe implements broker.FeedConn.
func (fc *feedConn) Unsubscribe(ctx context.Context, keys []string) error {
	return fc.send(ctx, "unsub", keys, "")
}

// ChangeMode implements broker.FeedConn.
func (fc *feedConn) ChangeMode(ctx context.Context, keys []string, mode broker.FeedMode) error {
	return fc.send(ctx, "change_mode", keys, mode.String())
}

// Next implements broker.FeedConn. It skips market_info and empty messages.
func (fc *feedConn) Next(ctx context.Context) ([]broker.Tick, error) {
	for {
		typ, b, err := fc.ws.Read(ctx)
		if err != nil {
			return nil, fc.lost("feed read", err)
		}
		fc.touch()
		if typ != websocket.MessageBinary {
			continue
		}
		ticks, err := fc.dec.decode(b)
		if err != nil {
			return nil, &broker.Error{Broker: broker.Upstox, Class: broker.ClassUpstream, Op: "feed read", Message: "undecodable feed message", Err: err}
		}
		if len(ticks) > 0 {
			return ticks, nil
		}
	}
}

// lost classifies a transport failure. A socket the broker closed is an
// upstream loss too: whether the token died is learnt on the next dial.
func (fc *feedConn) lost(op string, err error) error {
	msg := "feed connection lost"
	if fc.silent.Load() {
		msg = "feed connection silent for too long"
	}
	return &broker.Error{Broker: broker.Upstox, Class: broker.ClassUpstream, Op: op, Message: msg, Err: err}
}

// Close implements broker.FeedConn.
func (fc *feedConn) Close() error {
	fc.closeOnce.Do(func() {
		fc.watchdog.Stop()
		_ = fc.ws.Close(websocket.StatusNormalClosure, "")
	})
	return nil
}

// decoder turns FeedResponse messages into ticks straight from the wire
// (field numbers from docs/brokers/upstox.md §6.3), without building the generated
// message tree: no allocation per message once its buffers and the key
// table are warm. Not safe for concurrent use.
type decoder struct {
	ticks []broker.Tick
	// keys interns instrument keys: they repeat in every message.
	keys map[string]string
}

func newDecoder() *decoder { return &decoder{keys: make(map[string]string)} }

// maxInternedKeys bounds the key table; past it, it starts over.
const maxInternedKeys = 20000

var errMalformed = errors.New("malformed protobuf")

// FeedResponse, Feed and sub-message field numbers.
const (
	respType       = 1
	respFeeds      = 2
	respCurrentTs  = 3
	respSandboxTS  = 100
	feedLTPC       = 1
	feedFullFeed   = 2
	feedFirstLevel = 3
	feedReqMode    = 4
)

// decode returns the ticks of one FeedResponse; the slice is reused.
func (d *decoder) decode(b []byte) ([]broker.Tick, error) {
	d.ticks = d.ticks[:0]
	var currentTs, sandboxTs int64
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return nil, errMalformed
		}
		b = b[n:]
		switch {
		case num == respFeeds && typ == protowire.BytesType:
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return nil, errMalformed
			}
			if err := d.entry(v); err != nil {
				return nil, err
			}
			b = b[n:]
		case num == respCurrentTs && typ == protowire.VarintType:
			v, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return nil, errMalformed
			}
			currentTs, b = int64(v), b[n:]
		case num == respSandboxTS && typ == protowire.VarintType:
			v, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return nil, errMalformed
			}
			sandboxTs, b = int64(v), b[n:]
		default:
			n := protowire.ConsumeFieldValue(num, typ, b)
			if n < 0 {
				return nil, errMalformed
			}
			b = b[n:]
		}
	}
	at := sandboxTs
	if at == 0 {
		at = currentTs * int64(time.Millisecond)
	}
	for i := range d.ticks {
		d.ticks[i].BrokerTimeUnixNanos = at
	}
	return d.ticks, nil
}

// intern returns the key for b, allocating only the first time it is seen.
func (d *decoder) intern(b []byte) string {
	if s, ok := d.keys[string(b)]; ok {
		return s
	}
	if len(d.keys) >= maxInternedKeys {
		clear(d.keys)
	}
	s := string(b)
	d.keys[s] = s
	return s
}

// entry decodes one map<string, Feed> entry into a tick.
func (d *decoder) entry(b []byte) error {
	var key []byte
	var feed []byte
	hasFeed := false
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return errMalformed
		}
		b = b[n:]
		if typ == protowire.BytesType && (num == 1 || num == 2) {
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return errMalformed
			}
			if num == 1 {
				key = v
			} else {
				feed, hasFeed = v, true
			}
			b = b[n:]
			continue
		}
		n = protowire.ConsumeFieldValue(num, typ, b)
		if n < 0 {
			return errMalformed
		}
		b = b[n:]
	}
	if len(key) == 0 || !hasFeed {
		return nil
	}
	d.ticks = append(d.ticks, broker.Tick{InstrumentKey: d.intern(key)})
	t := &d.ticks[len(d.ticks)-1]
	if err := walk(feed, func(num protowire.Number, typ protowire.Type, v []byte, x uint64) error {
		switch num {
		case feedLTPC:
			t.Mode = broker.ModeLTPC
			return decodeLTPC(v, t)
		case feedFullFeed:
			t.Mode = broker.ModeFull
			return walk(v, func(num protowire.Number, _ protowire.Type, v []byte, _ uint64) error {
				switch num {
				case 1:
					return decodeMarketFF(v, t)
				case 2:
					return decodeIndexFF(v, t)
				}
				return nil
			})
		case feedFirstLevel:
			t.Mode = broker.ModeOptionGreeks
			return decodeFirstLevel(v, t)
		}
		return nil
	}); err != nil {
		return err
	}
	return nil
}

// walk calls f for every field of message b: v holds a length-delimited
// value, x a varint or fixed value. Groups are skipped.
func walk(b []byte, f func(num protowire.Number, typ protowire.Type, v []byte, x uint64) error) error {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return errMalformed
		}
		b = b[n:]
		var v []byte
		var x uint64
		switch typ {
		case protowire.VarintType:
			x, n = protowire.ConsumeVarint(b)
		case protowire.Fixed64Type:
			x, n = protowire.ConsumeFixed64(b)
		case protowire.Fixed32Type:
			var y uint32
			y, n = protowire.ConsumeFixed32(b)
			x = uint64(y)
		case protowire.BytesType:
			v, n = protowire.ConsumeBytes(b)
		default:
			n = protowire.ConsumeFieldValue(num, typ, b)
			if n < 0 {
				return errMalformed
			}
			b = b[n:]
			continue
		}
		if n < 0 {
			return errMalformed
		}
		b = b[n:]
		if err := f(num, typ, v, x); err != nil {
			return err
		}
	}
	return nil
}

func f64(x uint64) float64 { return math.Float64frombits(x) }

// decodeLTPC reads LTPC { ltp=1 double; ltt=2; ltq=3; cp=4 double }.
func decodeLTPC(b []byte, t *broker.Tick) error {
	return walk(b, func(num protowire.Number, typ protowire.Type, _ []byte, x uint64) error {
		switch {
		case num == 1 && typ == protowire.Fixed64Type:
			t.LTP = f64(x)
		case num == 2 && typ == protowire.VarintType:
			t.LTTUnixMs = int64(x)
		case num == 3 && typ == protowire.VarintType:
			t.LTQ = int64(x)
		case num == 4 && typ == protowire.Fixed64Type:
			t.ClosePrice = f64(x)
		}
		return nil
	})
}

// decodeQuote reads Quote { bidQ=1; bidP=2 double; askQ=3; askP=4 double }.
func decodeQuote(b []byte, t *broker.Tick) error {
	return walk(b, func(num protowire.Number, typ protowire.Type, _ []byte, x uint64) error {
		switch {
		case num == 1 && typ == protowire.VarintType:
			t.BidQty = int64(x)
		case num == 2 && typ == protowire.Fixed64Type:
			t.BidPrice = f64(x)
		case num == 3 && typ == protowire.VarintType:
			t.AskQty = int64(x)
		case num == 4 && typ == protowire.Fixed64Type:
			t.AskPrice = f64(x)
		}
		return nil
	})
}

// decodeGreeks reads OptionGreeks { delta=1; theta=2; gamma=3; vega=4; rho=5 }.
func decodeGreeks(b []byte, t *broker.Tick) error {
	t.HasGreeks = true
	return walk(b, func(num protowire.Number, typ protowire.Type, _ []byte, x uint64) error {
		if typ != protowire.Fixed64Type {
			return nil
		}
		switch num {
		case 1:
			t.Greeks.Delta = f64(x)
		case 2:
			t.Greeks.Theta = f64(x)
		case 3:
			t.Greeks.Gamma = f64(x)
		case 4:
			t.Greeks.Vega = f64(x)
		case 5:
			t.Greeks.Rho = f64(x)
		}
		return nil
	})
}

// decodeMarketFF reads MarketFullFeed { ltpc=1; marketLevel=2; optionGreeks=3;
// marketOHLC=4; atp=5; vtt=6; oi=7; iv=8; tbq=9; tsq=10 }, keeping the first
// depth level.
func decodeMarketFF(b []byte, t *broker.Tick) error {
	return walk(b, func(num protowire.Number, typ protowire.Type, v []byte, x uint64) error {
		switch {
		case num == 1 && typ == protowire.BytesType:
			return decodeLTPC(v, t)
		case num == 2 && typ == protowire.BytesType:
			first := true
			return walk(v, func(num protowire.Number, typ protowire.Type, v []byte, _ uint64) error {
				if num == 1 && typ == protowire.BytesType && first {
					first = false
					return decodeQuote(v, t)
				}
				return nil
			})
		case num == 3 && typ == protowire.BytesType:
			return decodeGreeks(v, t)
		case num == 6 && typ == protowire.VarintType:
			t.Volume = int64(x)
		case num == 7 && typ == protowire.Fixed64Type:
			t.OI = f64(x)
		case num == 8 && typ == protowire.Fixed64Type:
			t.IV = f64(x)
		}
		return nil
	})
}

// decodeIndexFF reads IndexFullFeed { ltpc=1; marketOHLC=2 }.
func decodeIndexFF(b []byte, t *broker.Tick) error {
	return walk(b, func(num protowire.Number, typ protowire.Type, v []byte, _ uint64) error {
		if num == 1 && typ == protowire.BytesType {
			return decodeLTPC(v, t)
		}
		return nil
	})
}

// decodeFirstLevel reads FirstLevelWithGreeks { ltpc=1; firstDepth=2;
// optionGreeks=3; vtt=4; oi=5; iv=6 }.
func decodeFirstLevel(b []byte, t *broker.Tick) error {
	return walk(b, func(num protowire.Number, typ protowire.Type, v []byte, x uint64) error {
		switch {
		case num == 1 && typ == protowire.BytesType:
			return decodeLTPC(v, t)
		case num == 2 && typ == protowire.BytesType:
			return decodeQuote(v, t)
		case num == 3 && typ == protowire.BytesType:
			return decodeGreeks(v, t)
		case num == 4 && typ == protowire.VarintType:
			t.Volume = int64(x)
		case num == 5 && typ == protowire.Fixed64Type:
			t.OI = f64(x)
		case num == 6 && typ == protowire.Fixed64Type:
			t.IV = f64(x)
		}
		return nil
	})
}
