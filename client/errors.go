package client

import (
	"errors"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"

	feedgatev1 "github.com/feedgate/feedgate/gen/go/feedgate/v1"
)

// AuthRequired reports whether err says that a broker connection needs a new
// login, and returns the feedgate.v1.AuthRequired detail that names the
// broker, the reason and a login URL. It looks for a *connect.Error anywhere
// in err's chain (errors.As) and for that detail among its details, so it
// works on errors from any RPC and on the error Subscribe returns.
//
// Such errors have the code Unauthenticated. An Unauthenticated error
// without the detail means the API key was refused instead: see
// IsKeyRejected.
func AuthRequired(err error) (*feedgatev1.AuthRequired, bool) {
	var ce *connect.Error
	if !errors.As(err, &ce) {
		return nil, false
	}
	ar := new(feedgatev1.AuthRequired)
	if findDetail(ce, ar) {
		return ar, true
	}
	return nil, false
}

// IsKeyRejected reports whether err says that the gateway refused the
// feedgate API key (missing, unknown or revoked): the code Unauthenticated
// without an AuthRequired detail. Retrying with the same key cannot help.
func IsKeyRejected(err error) bool {
	if connect.CodeOf(err) != connect.CodeUnauthenticated {
		return false
	}
	_, ok := AuthRequired(err)
	return !ok
}

// RetryAfter returns how long the broker asked to wait, from the
// feedgate.v1.RateLimited detail of a ResourceExhausted error.
func RetryAfter(err error) (time.Duration, bool) {
	var ce *connect.Error
	if !errors.As(err, &ce) {
		return 0, false
	}
	rl := new(feedgatev1.RateLimited)
	if findDetail(ce, rl) && rl.GetRetryAfter() != nil {
		return rl.GetRetryAfter().AsDuration(), true
	}
	return 0, false
}

// findDetail unmarshals into m the first detail of ce whose type is m's.
// It unmarshals the detail's bytes itself, so it does not depend on the
// global type registry.
func findDetail(ce *connect.Error, m proto.Message) bool {
	name := string(m.ProtoReflect().Descriptor().FullName())
	for _, d := range ce.Details() {
		if d.Type() != name {
			continue
		}
		if err := proto.Unmarshal(d.Bytes(), m); err == nil {
			return true
		}
	}
	return false
}

// authRequiredError makes the error Subscribe returns at AUTH_REQUIRED when
// the stream did not end with the server's own error: Unauthenticated with
// ar as its detail, so that AuthRequired(err) returns ar.
func authRequiredError(ar *feedgatev1.AuthRequired) error {
	msg := ar.GetMessage()
	if msg == "" {
		msg = "the broker connection needs a new login"
	}
	ce := connect.NewError(connect.CodeUnauthenticated, errors.New(msg))
	if d, err := connect.NewErrorDetail(ar); err == nil {
		ce.AddDetail(d)
	}
	return ce
}
