package client

import (
	"context"
	"errors"
	"io"
	"testing"

	"connectrpc.com/connect"

	feedgatev1 "github.com/feedgate/feedgate/gen/go/feedgate/v1"
)

func TestRetryable(t *testing.T) {
	wire := func(code connect.Code) error {
		// A wire error, as the server sent it.
		e := connect.NewWireError(code, errors.New("from the server"))
		return e
	}
	for _, c := range []struct {
		name string
		err  error
		want bool
	}{
		{"unavailable", wire(connect.CodeUnavailable), true},
		{"deadline", wire(connect.CodeDeadlineExceeded), true},
		{"rate limited", wire(connect.CodeResourceExhausted), true},
		{"io", io.ErrUnexpectedEOF, true},
		{"client-side unknown", connect.NewError(connect.CodeUnknown, io.ErrUnexpectedEOF), true},
		{"reset stream", connect.NewError(connect.CodeInternal, errors.New("stream error")), true},
		{"server unknown", wire(connect.CodeUnknown), false},
		{"server internal", wire(connect.CodeInternal), false},
		{"invalid argument", wire(connect.CodeInvalidArgument), false},
		{"permission denied", wire(connect.CodePermissionDenied), false},
		{"unauthenticated", wire(connect.CodeUnauthenticated), false},
		{"unimplemented", wire(connect.CodeUnimplemented), false},
	} {
		if got := retryable(c.err); got != c.want {
			t.Errorf("retryable(%s) = %v, want %v", c.name, got, c.want)
		}
	}
}

func TestAuthRequiredErrorCarriesTheDetail(t *testing.T) {
	ar := &feedgatev1.AuthRequired{Broker: feedgatev1.Broker_BROKER_FYERS, Reason: feedgatev1.DisconnectReason_DISCONNECT_REASON_TOKEN_EXPIRED, Message: "log in to Fyers again", LoginUrl: "http://x/login"}
	err := authRequiredError(ar)
	got, ok := AuthRequired(err)
	if !ok || got.Broker != ar.Broker || got.Reason != ar.Reason || got.LoginUrl != ar.LoginUrl {
		t.Fatalf("AuthRequired(%v) = %v, %v", err, got, ok)
	}
	if connect.CodeOf(err) != connect.CodeUnauthenticated || IsKeyRejected(err) {
		t.Errorf("code %v, IsKeyRejected %v", connect.CodeOf(err), IsKeyRejected(err))
	}
}

func TestSubscribeNilRequest(t *testing.T) {
	err := New("http://127.0.0.1:1", "k").Subscribe(context.Background(), nil, SubscribeOptions{})
	if connect.CodeOf(err) != connect.CodeInvalidArgument {
		t.Errorf("err = %v", err)
	}
}

func TestBearerRedacts(t *testing.T) {
	b := bearer{key: "fgk_secret"}
	for _, s := range []string{b.String(), b.GoString()} {
		if s != "bearer([REDACTED])" {
			t.Errorf("bearer formats as %q", s)
		}
	}
}
