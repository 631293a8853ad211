package broker

import (
	"context"
	"fmt"
	"time"
)

// FeedMode is how much data an upstream feed subscription carries. The
// modes are ordered by richness: a richer mode carries every field of a
// poorer one, so a key wanted in several modes is subscribed in the richest.
type FeedMode uint8

// The feed modes, poorest first. The zero value is ModeLTPC, as in the
// public API where an unspecified mode means LTPC.
const (
	// ModeLTPC is last traded price, time, quantity and previous close.
	ModeLTPC FeedMode = iota
	// ModeOptionGreeks adds best bid/ask, greeks, volume, open interest and IV.
	ModeOptionGreeks
	// ModeFull adds market depth and OHLC (of which ticks keep the first
	// level, volume, OI, IV and greeks).
	ModeFull
	// NumFeedModes is the number of modes, for arrays indexed by FeedMode.
	NumFeedModes
)

// String is the Upstox wire name of the mode ("ltpc", "option_greeks",
// "full"), also used in logs.
func (m FeedMode) String() string {
	switch m {
	case ModeLTPC:
		return "ltpc"
	case ModeOptionGreeks:
		return "option_greeks"
	case ModeFull:
		return "full"
	}
	return fmt.Sprintf("mode(%d)", int(m))
}

// Valid reports whether m is one of the defined modes.
func (m FeedMode) Valid() bool { return m < NumFeedModes }

// Greeks are an option's sensitivities as a feed reports them.
type Greeks struct {
	Delta, Gamma, Theta, Vega, Rho float64
}

// Tick is one instrument's update from an upstream feed, in feedgate's own
// shape. Fields a mode or broker does not carry are zero.
type Tick struct {
	InstrumentKey string
	LTP           float64
	// LTTUnixMs is the last trade time in Unix milliseconds.
	LTTUnixMs  int64
	LTQ        int64
	ClosePrice float64
	Volume     int64
	OI         float64
	IV         float64
	BidPrice   float64
	BidQty     int64
	AskPrice   float64
	AskQty     int64
	// HasGreeks says Greeks is set (options in option_greeks or full mode).
	HasGreeks bool
	Greeks    Greeks
	// Mode is the mode the broker sent this tick in.
	Mode FeedMode
	// BrokerTimeUnixNanos is when the broker sent the tick.
	BrokerTimeUnixNanos int64
}

// FeedOptions tune one upstream feed connection. The zero value uses each
// adapter's defaults.
type FeedOptions struct {
	// IdleTimeout is how long a connection may stay silent (no message and
	// no ping) before Next reports it lost. Zero: the adapter's default.
	IdleTimeout time.Duration
	// PollInterval overrides the pace of polling adapters (Fyers). Zero:
	// derived from the broker's rate limits.
	PollInterval time.Duration
}

// FeedDialer opens upstream market feeds for one broker. Implementations
// are safe for concurrent use.
type FeedDialer interface {
	// DialFeed opens a feed connection with c's token. A dead token fails
	// with a ClassAuthDead *Error; anything transient with ClassUpstream
	// (or ClassRateLimited).
	DialFeed(ctx context.Context, c Credentials, o FeedOptions) (FeedConn, error)
	// FeedLimits are the broker's subscription limits per connection.
	FeedLimits() FeedLimits
}

// FeedConn is one open upstream feed. Subscribe, Unsubscribe and ChangeMode
// may be called while another goroutine is blocked in Next; Next itself is
// not safe to call concurrently. Errors are *Error: ClassAuthDead when the
// broker says the token is dead, ClassUpstream for a lost or silent
// transport (the caller reconnects with a fresh dial).
type FeedConn interface {
	// Subscribe adds keys in mode.
	Subscribe(ctx context.Context, keys []string, mode FeedMode) error
	// Unsubscribe removes keys.
	Unsubscribe(ctx context.Context, keys []string) error
	// ChangeMode moves already subscribed keys to mode.
	ChangeMode(ctx context.Context, keys []string, mode FeedMode) error
	// Next blocks until ticks arrive and returns them. The slice and its
	// contents are only valid until the next call of Next.
	Next(ctx context.Context) ([]Tick, error)
	// Close ends the connection and unblocks Next. It is idempotent.
	Close() error
}

// FeedLimits are a broker's subscription limits for one feed connection.
// Single[m] applies when every key of the connection is in mode m,
// Combined[m] when the connection mixes modes; Total bounds all keys
// together. A zero entry means no limit.
type FeedLimits struct {
	Single   [NumFeedModes]int
	Combined [NumFeedModes]int
	Total    int
}

// Upstox v3 feed limits per connection (docs/brokers/upstox.md §6.4).
const (
	UpstoxFeedLimitLTPC                 = 5000
	UpstoxFeedLimitOptionGreeks         = 3000
	UpstoxFeedLimitFull                 = 2000
	UpstoxFeedLimitLTPCCombined         = 2000
	UpstoxFeedLimitOptionGreeksCombined = 2000
	UpstoxFeedLimitFullCombined         = 1500
)

// FyersFeedLimit is the most symbols one Fyers feed connection carries
// (docs/brokers/fyers.md §6.8).
const FyersFeedLimit = 5000

// UpstoxFeedLimits are the Upstox v3 feed's limits.
var UpstoxFeedLimits = FeedLimits{
	Single:   [NumFeedModes]int{ModeLTPC: UpstoxFeedLimitLTPC, ModeOptionGreeks: UpstoxFeedLimitOptionGreeks, ModeFull: UpstoxFeedLimitFull},
	Combined: [NumFeedModes]int{ModeLTPC: UpstoxFeedLimitLTPCCombined, ModeOptionGreeks: UpstoxFeedLimitOptionGreeksCombined, ModeFull: UpstoxFeedLimitFullCombined},
}

// FyersFeedLimits are the Fyers feed's limits.
var FyersFeedLimits = FeedLimits{Total: FyersFeedLimit}

// Check returns a description of the first limit that counts (keys per
// mode on one connection) exceed, or "" when they fit.
func (l FeedLimits) Check(counts [NumFeedModes]int) string {
	used, total := 0, 0
	for _, n := range counts {
		if n > 0 {
			used++
		}
		total += n
	}
	if l.Total > 0 && total > l.Total {
		return fmt.Sprintf("%d instruments exceed the limit of %d per connection", total, l.Total)
	}
	lim, kind := l.Single, ""
	if used > 1 {
		lim, kind = l.Combined, " when modes are mixed"
	}
	for m, n := range counts {
		if lim[m] > 0 && n > lim[m] {
			return fmt.Sprintf("%d instruments in mode %s exceed the limit of %d per connection%s", n, FeedMode(m), lim[m], kind)
		}
	}
	return ""
}
