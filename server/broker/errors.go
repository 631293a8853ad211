package broker

import (
	"errors"
	"fmt"
	"time"
)

// Class is what a broker failure means for the caller.
type Class int

const (
	// ClassUpstream is a transport failure, timeout or 5xx: worth a bounded
	// retry, then Unavailable.
	ClassUpstream Class = iota
	// ClassAuthDead means the token is dead (revoked, expired, logged out):
	// never retried; the connection must be disconnected.
	ClassAuthDead
	// ClassRateLimited is the broker's rate limit: wait RetryAfter when it
	// fits the deadline, else ResourceExhausted.
	ClassRateLimited
	// ClassBadInput is a request the broker refused as malformed: never
	// retried; InvalidArgument.
	ClassBadInput
)

// String names the class for logs and metrics.
func (c Class) String() string {
	switch c {
	case ClassUpstream:
		return "upstream"
	case ClassAuthDead:
		return "auth_dead"
	case ClassRateLimited:
		return "rate_limited"
	case ClassBadInput:
		return "bad_input"
	}
	return fmt.Sprintf("class(%d)", int(c))
}

// Retryable reports whether a failure of this class may be retried.
func (c Class) Retryable() bool { return c == ClassUpstream }

// Error is a classified broker failure. Its message never holds a token or
// the broker's raw response body.
type Error struct {
	Broker Kind
	Class  Class
	// Op is the operation, e.g. "option chain".
	Op string
	// HTTPStatus is the broker's HTTP status; 0 for transport failures.
	HTTPStatus int
	// Code is the broker's own error code ("UDAPI100050", "-16"), if any.
	Code string
	// Expired is set when the broker said the token expired (as opposed to
	// invalid or revoked), e.g. Fyers code -8.
	Expired bool
	// RetryAfter is the broker's requested wait for ClassRateLimited.
	RetryAfter time.Duration
	// Field names the request field a ClassBadInput failure is about, if known.
	Field string
	// Message is a short description safe to show a client.
	Message string
	// Attempts is how many calls were made before giving up.
	Attempts int
	// Err is the underlying transport error, if any (never shown to clients).
	Err error
}

// Error implements error.
func (e *Error) Error() string {
	s := fmt.Sprintf("%s %s: %s", e.Broker, e.Op, e.Class)
	if e.HTTPStatus != 0 {
		s += fmt.Sprintf(" (HTTP %d", e.HTTPStatus)
		if e.Code != "" {
			s += " " + e.Code
		}
		s += ")"
	}
	if e.Message != "" {
		s += ": " + e.Message
	}
	return s
}

// Unwrap returns the underlying transport error.
func (e *Error) Unwrap() error { return e.Err }

// AsError returns the *Error in err's chain, if any.
func AsError(err error) (*Error, bool) {
	var be *Error
	ok := errors.As(err, &be)
	return be, ok
}

// IsAuthDead reports whether err says the broker token is dead.
func IsAuthDead(err error) bool {
	be, ok := AsError(err)
	return ok && be.Class == ClassAuthDead
}
