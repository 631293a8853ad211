// Package broker defines what feedgate needs from a broker (Upstox, Fyers,
// later others) and the broker-neutral types and errors every adapter maps
// its API onto. Each broker lives in its own package (broker/upstox,
// broker/fyers) and implements Client.
package broker

import (
	"context"
	"time"

	"github.com/feedgate/feedgate/server/secret"
)

// Kind names a broker. Its string form is the lower-case name used in
// configuration, the sandbox control API, logs and metrics labels.
type Kind string

// The brokers feedgate supports.
const (
	Upstox Kind = "upstox"
	Fyers  Kind = "fyers"
)

// Kinds lists every supported broker in a stable order.
var Kinds = []Kind{Upstox, Fyers}

// Valid reports whether k is a supported broker.
func (k Kind) Valid() bool { return k == Upstox || k == Fyers }

// DisplayName is the broker's name for people ("Upstox").
func (k Kind) DisplayName() string {
	switch k {
	case Upstox:
		return "Upstox"
	case Fyers:
		return "Fyers"
	}
	return string(k)
}

// Credentials identify one user's session at a broker in a call. UserID keys
// the per-user rate limiter; Token is the broker access token.
type Credentials struct {
	UserID string
	Token  secret.Value
}

// Token is what a successful code exchange returns.
type Token struct {
	Access secret.Value
	// ExpiresAt is the token's known expiry (Upstox: 03:30 IST the next day;
	// Fyers: the JWT exp). Zero when unknown.
	ExpiresAt time.Time
	// BrokerUserID is the broker's id of the account (Upstox user_id, Fyers fy_id).
	BrokerUserID string
	// UserName is the account holder's name where the broker returns it.
	UserName string
}

// Profile is the answer to the lightweight token probe.
type Profile struct {
	BrokerUserID string
	UserName     string
}

// OptionChain is a chain in feedgate's own shape.
type OptionChain struct {
	UnderlyingKey  string
	UnderlyingSpot float64
	ExpiryDate     string // YYYY-MM-DD
	Strikes        []OptionStrike
}

// OptionStrike is one strike with both sides; a side is nil when the broker
// listed none.
type OptionStrike struct {
	StrikePrice float64
	Call, Put   *OptionSide
	PCR         float64
}

// OptionSide is one option contract's market data and greeks.
type OptionSide struct {
	InstrumentKey                 string
	LTP, ClosePrice               float64
	Volume                        int64
	OI, PrevOI                    float64
	BidPrice                      float64
	BidQty                        int64
	AskPrice                      float64
	AskQty                        int64
	Delta, Gamma, Theta, Vega, IV float64
}

// Quote is one instrument's last price. Optional fields are nil when the
// broker does not report them.
type Quote struct {
	InstrumentKey string
	LTP           float64
	ClosePrice    *float64
	Volume        *int64
	OI            *float64
}

// Quotes is the answer to a quotes call: one Quote per known key, in the
// order asked, and the keys the broker did not know.
type Quotes struct {
	Quotes  []Quote
	Unknown []string
}

// Client is one broker's API as feedgate uses it. Implementations are safe
// for concurrent use. Every method that talks to the broker classifies its
// failures into an *Error (see Class) and retries only ClassUpstream
// failures, at most MaxAttempts times in all, inside ctx's deadline.
type Client interface {
	// Kind names the broker.
	Kind() Kind
	// LoginURL returns the broker's OAuth dialog URL carrying state.
	LoginURL(state string) string
	// ExchangeCode trades an auth code from the login redirect for a token.
	ExchangeCode(ctx context.Context, code string) (Token, error)
	// Profile probes the token with the broker's lightweight profile call.
	Profile(ctx context.Context, c Credentials) (Profile, error)
	// OptionChain fetches the chain of underlying for expiry (YYYY-MM-DD).
	OptionChain(ctx context.Context, c Credentials, underlying, expiry string) (*OptionChain, error)
	// Quotes fetches last prices for keys (at most MaxQuoteKeys).
	Quotes(ctx context.Context, c Credentials, keys []string) (*Quotes, error)
	// Logout revokes the token at the broker.
	Logout(ctx context.Context, c Credentials) error
	// ValidateInstrumentKey reports, as an error naming what is wrong,
	// whether key has this broker's instrument key format. It makes no call.
	ValidateInstrumentKey(key string) error
}

// MaxQuoteKeys is the most instrument keys one GetQuotes call may name.
const MaxQuoteKeys = 500
