package feed

import (
	"errors"
	"fmt"
	"time"

	"github.com/feedgate/feedgate/server/broker"
)

// InputError is a Subscribe request the caller must correct (no keys, too
// many keys, an empty key, an unknown mode or broker). The API layer maps it
// to InvalidArgument; Field names the request field.
type InputError struct {
	Field string
	Msg   string
}

func (e *InputError) Error() string { return e.Field + ": " + e.Msg }

// LimitError means the subscription, added to what the user's other streams
// on that broker already hold, would exceed the broker's per-connection
// limit. The request itself may be fine: the API layer maps it to
// ResourceExhausted.
type LimitError struct {
	Broker broker.Kind
	Msg    string
}

func (e *LimitError) Error() string {
	return fmt.Sprintf("%s feed subscription limit: %s", e.Broker.DisplayName(), e.Msg)
}

// StreamLimitError means the user already has the most open streams the
// hub allows one user; the API layer maps it to ResourceExhausted.
type StreamLimitError struct {
	Max int
}

func (e *StreamLimitError) Error() string {
	return fmt.Sprintf("at most %d open market-feed streams per user (--max-streams-per-user): close some first", e.Max)
}

// AsInputError returns the *InputError in err's chain, if any.
func AsInputError(err error) (*InputError, bool) {
	var e *InputError
	return e, errors.As(err, &e)
}

// AsLimitError returns the *LimitError in err's chain, if any.
func AsLimitError(err error) (*LimitError, bool) {
	var e *LimitError
	return e, errors.As(err, &e)
}

// ErrHubClosed ends streams when the hub closes, and fails Subscribe after
// Close; the API layer maps it to Unavailable.
var ErrHubClosed = errors.New("feed: hub closed")

// ErrStreamClosed is what Next returns after the stream's own Close.
var ErrStreamClosed = errors.New("feed: stream closed")

// errNoStreams cancels an upstream whose last stream left.
var errNoStreams = errors.New("feed: no streams left")

// errAuthLost cancels an upstream whose connection was disconnected.
var errAuthLost = errors.New("feed: broker connection disconnected")

// errTokenKnownDead stops a dial with a token generation the upstream saw
// refused.
var errTokenKnownDead = errors.New("feed: the broker token is known dead")

// minDeadTokenWait is the least an upstream waits before reading the
// session again after it was handed a token known dead.
const minDeadTokenWait = time.Second
