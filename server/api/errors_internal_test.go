package api

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"testing"

	"connectrpc.com/connect"

	feedgatev1 "github.com/feedgate/feedgate/gen/go/feedgate/v1"
	"github.com/feedgate/feedgate/server/broker"
	"github.com/feedgate/feedgate/server/connections"
	"github.com/feedgate/feedgate/server/feed"
)

// toConnect maps every domain error of the token lifecycle to the code of
// design.md's table; a dead broker token is never Internal, even wrapped
// in a store error.
func TestToConnectTokenLifecycleErrors(t *testing.T) {
	ar := &connections.AuthRequiredError{Broker: broker.Upstox, Message: "log in again"}
	cases := []struct {
		name   string
		err    error
		code   connect.Code
		detail bool
	}{
		{"AuthRequired", ar, connect.CodeUnauthenticated, true},
		{"AuthRequired joined with a store error", errors.Join(errors.New("disk I/O error"), ar), connect.CodeUnauthenticated, true},
		{"a dead-token broker answer", fmt.Errorf("call: %w", &broker.Error{Broker: broker.Fyers, Class: broker.ClassAuthDead, HTTPStatus: 401}), connect.CodeUnauthenticated, true},
		{"account in use", &connections.AccountInUseError{Broker: broker.Upstox, Account: "AB1"}, connect.CodeAlreadyExists, false},
		{"pending logins", &connections.LimitError{What: "pending logins", Max: 4, Setting: "--max-pending-logins"}, connect.CodeResourceExhausted, false},
		{"streams per user", &feed.StreamLimitError{Max: 200}, connect.CodeResourceExhausted, false},
		{"login error", &connections.LoginError{Code: connections.LoginStateExpired, Field: "state", Msg: "expired"}, connect.CodeInvalidArgument, false},
	}
	for _, c := range cases {
		err := toConnect(context.Background(), slog.New(slog.DiscardHandler), "/x", c.err)
		if connect.CodeOf(err) != c.code {
			t.Errorf("%s: %v, want %v", c.name, err, c.code)
			continue
		}
		var ce *connect.Error
		errors.As(err, &ce)
		got := false
		for _, d := range ce.Details() {
			if v, _ := d.Value(); v != nil {
				_, got = v.(*feedgatev1.AuthRequired)
			}
		}
		if got != c.detail {
			t.Errorf("%s: AuthRequired detail %v, want %v", c.name, got, c.detail)
		}
	}
}
