package connections

import (
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

// InputError is a request the caller must correct; Field names what.
type InputError struct {
	Field string
	Msg   string
}

func (e *InputError) Error() string { return e.Field + ": " + e.Msg }

// LoginError is a failed login (bad, reused, expired or foreign state, or
// a code the broker refused).
type LoginError struct {
	Field string
	Msg   string
}

func (e *LoginError) Error() string { return e.Field + ": " + e.Msg }

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
