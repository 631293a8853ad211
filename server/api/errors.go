package api

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/durationpb"

	feedgatev1 "github.com/feedgate/feedgate/gen/go/feedgate/v1"
	"github.com/feedgate/feedgate/server/broker"
	"github.com/feedgate/feedgate/server/connections"
	"github.com/feedgate/feedgate/server/feed"
	"github.com/feedgate/feedgate/server/store"
)

// inputError is a request field the caller must correct.
type inputError struct {
	field, msg string
}

func (e *inputError) Error() string { return e.field + ": " + e.msg }

func badField(field, format string, args ...any) error {
	return &inputError{field: field, msg: fmt.Sprintf(format, args...)}
}

// AuthRequiredProto converts the domain error into the wire message that
// is both the error detail and the stream's auth_required message.
func AuthRequiredProto(e *connections.AuthRequiredError) *feedgatev1.AuthRequired {
	return &feedgatev1.AuthRequired{
		Broker:         brokerProto(e.Broker),
		Reason:         reasonProto(e.Reason),
		Message:        e.Message,
		LoginUrl:       e.LoginURL,
		DisconnectedAt: timestamp(e.DisconnectedAt),
	}
}

// AuthRequiredError returns the Unauthenticated error carrying ar as its
// detail.
func AuthRequiredError(ar *feedgatev1.AuthRequired) *connect.Error {
	ce := connect.NewError(connect.CodeUnauthenticated, errors.New(ar.GetMessage()))
	if d, err := connect.NewErrorDetail(ar); err == nil {
		ce.AddDetail(d)
	}
	return ce
}

// toConnect translates any error of the domain packages into the connect
// code and detail of design.md's error table. It is the only place that
// does. Unknown errors become Internal with a generic message: the real
// error is logged, never sent (it may hold an upstream body).
func toConnect(ctx context.Context, logger *slog.Logger, procedure string, err error) error {
	if err == nil {
		return nil
	}
	var (
		ce  *connect.Error
		ar  *connections.AuthRequiredError
		in  *inputError
		cin *connections.InputError
		le  *connections.LoginError
		ai  *connections.AccountInUseError
		cl  *connections.LimitError
		sl  *feed.StreamLimitError
		be  *broker.Error
	)
	switch {
	// A dead broker token is Unauthenticated + AuthRequired, whatever else
	// the error carries.
	case errors.As(err, &ar):
		return AuthRequiredError(AuthRequiredProto(ar))
	case errors.As(err, &ce):
		return ce
	case errors.As(err, &ai):
		return connect.NewError(connect.CodeAlreadyExists, errors.New(ai.Error()))
	case errors.As(err, &cl):
		return connect.NewError(connect.CodeResourceExhausted, errors.New(cl.Error()))
	case errors.As(err, &sl):
		return connect.NewError(connect.CodeResourceExhausted, errors.New(sl.Error()))
	case errors.As(err, &in):
		return connect.NewError(connect.CodeInvalidArgument, in)
	case errors.As(err, &cin):
		return connect.NewError(connect.CodeInvalidArgument, errors.New(cin.Error()))
	case errors.As(err, &le):
		return connect.NewError(connect.CodeInvalidArgument, errors.New(le.Error()))
	case errors.As(err, &be):
		return brokerToConnect(ctx, logger, procedure, be)
	case errors.Is(err, feed.ErrHubClosed):
		return connect.NewError(connect.CodeUnavailable, errors.New("server is shutting down: reconnect"))
	}
	if fe, ok := feed.AsInputError(err); ok {
		return connect.NewError(connect.CodeInvalidArgument, errors.New(fe.Error()))
	}
	if le, ok := feed.AsLimitError(err); ok {
		return connect.NewError(connect.CodeResourceExhausted, errors.New(le.Error()))
	}
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return connect.NewError(connect.CodeDeadlineExceeded, errors.New("deadline exceeded"))
	case errors.Is(err, context.Canceled):
		return connect.NewError(connect.CodeCanceled, errors.New("canceled"))
	}
	logger.ErrorContext(ctx, "internal error", "procedure", procedure, "err", err)
	return connect.NewError(connect.CodeInternal, errors.New("internal error"))
}

func brokerToConnect(ctx context.Context, logger *slog.Logger, procedure string, be *broker.Error) error {
	name := be.Broker.DisplayName()
	switch be.Class {
	case broker.ClassAuthDead:
		// Calls with a user's token go through connections.Manager.Call,
		// which turns this into an AuthRequiredError; one that did not is
		// still a dead token to the client, never Internal.
		reason := store.ReasonTokenRevoked
		if be.Expired {
			reason = store.ReasonTokenExpired
		}
		return AuthRequiredError(AuthRequiredProto(&connections.AuthRequiredError{Broker: be.Broker, Reason: reason,
			Message: name + " refused the session: log in to " + name + " again."}))
	case broker.ClassBadInput:
		field := be.Field
		if field == "" {
			field = "request"
		}
		msg := be.Message
		if msg == "" {
			msg = "refused by the broker"
		}
		return connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("%s: %s (%s)", field, msg, name))
	case broker.ClassRateLimited:
		ce := connect.NewError(connect.CodeResourceExhausted,
			fmt.Errorf("%s rate limit reached: retry after %s", name, be.RetryAfter.Round(1e6)))
		if d, err := connect.NewErrorDetail(&feedgatev1.RateLimited{Broker: brokerProto(be.Broker), RetryAfter: durationpb.New(be.RetryAfter)}); err == nil {
			ce.AddDetail(d)
		}
		return ce
	case broker.ClassUpstream:
		logger.WarnContext(ctx, "broker unavailable", "procedure", procedure, "broker", be.Broker, "status", be.HTTPStatus, "code", be.Code, "attempts", be.Attempts, "err", be.Err)
		return connect.NewError(connect.CodeUnavailable, fmt.Errorf("%s is unavailable (after %d attempts): try again later", name, be.Attempts))
	}
	logger.ErrorContext(ctx, "unexpected broker error", "procedure", procedure, "err", be)
	return connect.NewError(connect.CodeInternal, errors.New("internal error"))
}
