package connections

import (
	"errors"
	"fmt"
	"time"

	"github.com/feedgate/feedgate/server/broker"
	"github.com/feedgate/feedgate/server/store"
)

// AuthRequiredError means the user must log in to the broker again. It
// becomes Unauthenticated with a feedgate.v1.AuthRequired detail.
type AuthRequiredError struct {
	Broker         broker.Kind
	Reason         store.Reason
	Message        string
	LoginURL       string
	DisconnectedAt time.Time
}

func (e *AuthRequiredError) Error() string { return e.Message }

// AsAuthRequired returns the *AuthRequiredError in err's chain, if any.
func AsAuthRequired(err error) (*AuthRequiredError, bool) {
	var e *AuthRequiredError
	return e, errors.As(err, &e)
}

// InputError is a request the caller must correct; Field names what.
type InputError struct {
	Field string
	Msg   string
}

func (e *InputError) Error() string { return e.Field + ": " + e.Msg }

// LoginCode says why a login failed, in words a client can map to its own
// message (the dashboard shows only messages it knows).
type LoginCode string

// The ways a login fails.
const (
	LoginStateMissing  LoginCode = "state_missing"
	LoginStateUnknown  LoginCode = "state_unknown"
	LoginStateExpired  LoginCode = "state_expired"
	LoginStateForeign  LoginCode = "state_foreign"
	LoginUserRevoked   LoginCode = "user_revoked"
	LoginInProgress    LoginCode = "login_in_progress"
	LoginCodeMissing   LoginCode = "code_missing"
	LoginCodeRefused   LoginCode = "code_refused"
	LoginDenied        LoginCode = "denied"
	LoginAccountInUse  LoginCode = "account_in_use"
	LoginNotBound      LoginCode = "not_bound"
	LoginBrokerFailure LoginCode = "broker_unavailable"
	LoginFailed        LoginCode = "failed"
)

// LoginError is a failed login (bad, reused, expired or foreign state, or
// a code the broker refused).
type LoginError struct {
	Code  LoginCode
	Field string
	Msg   string
}

func (e *LoginError) Error() string { return e.Field + ": " + e.Msg }

// AccountInUseError means the broker account of a login is already
// connected to another feedgate user: one broker account belongs to one
// feedgate user at a time (two would kill each other's feed sockets).
type AccountInUseError struct {
	Broker  broker.Kind
	Account string
}

func (e *AccountInUseError) Error() string {
	name := e.Broker.DisplayName()
	return fmt.Sprintf("this %s account (%s) is already connected to another feedgate user: disconnect it there first, or log in with another %s account", name, e.Account, name)
}

// LimitError is a per-user limit reached; the API maps it to
// ResourceExhausted.
type LimitError struct {
	What    string // "pending logins", "status watchers"
	Max     int
	Setting string // the flag that sets it
}

func (e *LimitError) Error() string {
	return fmt.Sprintf("at most %d %s per user (%s): close some first", e.Max, e.What, e.Setting)
}

// authMessage is the sentence shown to a person for a disconnected broker.
func authMessage(b broker.Kind, r store.Reason) string {
	name := b.DisplayName()
	switch r {
	case store.ReasonTokenRevoked:
		return fmt.Sprintf("Your %s session was ended by %s (revoked, or logged out elsewhere): log in to %s again.", name, name, name)
	case store.ReasonTokenExpired:
		return fmt.Sprintf("Your %s session expired: log in to %s again.", name, name)
	case store.ReasonLoggedOut:
		return fmt.Sprintf("You disconnected %s: log in to %s to connect it again.", name, name)
	default:
		return fmt.Sprintf("%s is not connected: log in to %s to connect it.", name, name)
	}
}
