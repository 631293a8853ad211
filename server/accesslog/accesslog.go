// Package accesslog logs every feedgate RPC: procedure, user, code and
// duration (never headers, bodies or keys). Successful calls log at Debug,
// client mistakes at Info, server-side failures at Warn.
package accesslog

import (
	"context"
	"log/slog"
	"time"

	"connectrpc.com/connect"

	"github.com/feedgate/feedgate/server/auth"
)

// Interceptor logs RPCs to a slog.Logger. Mount it outside the auth
// interceptor so refused calls are logged too.
type Interceptor struct{ logger *slog.Logger }

// New returns the interceptor.
func New(logger *slog.Logger) *Interceptor { return &Interceptor{logger: logger} }

var _ connect.Interceptor = (*Interceptor)(nil)

func (i *Interceptor) log(ctx context.Context, procedure, protocol string, start time.Time, err error) {
	code := "ok"
	level := slog.LevelDebug
	if err != nil {
		c := connect.CodeOf(err)
		code = c.String()
		switch c {
		case connect.CodeInternal, connect.CodeUnavailable, connect.CodeUnknown, connect.CodeDataLoss:
			level = slog.LevelWarn
		case connect.CodeCanceled:
			level = slog.LevelDebug
		default:
			level = slog.LevelInfo
		}
	}
	if !i.logger.Enabled(ctx, level) {
		return
	}
	attrs := []slog.Attr{
		slog.String("procedure", procedure), slog.String("protocol", protocol),
		slog.String("code", code), slog.Duration("duration", time.Since(start)),
	}
	if u, ok := auth.UserFrom(ctx); ok {
		attrs = append(attrs, slog.String("user_id", u.ID))
	}
	i.logger.LogAttrs(ctx, level, "rpc", attrs...)
}

// WrapUnary implements connect.Interceptor.
func (i *Interceptor) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		if req.Spec().IsClient {
			return next(ctx, req)
		}
		start := time.Now()
		res, err := next(ctx, req)
		i.log(ctx, req.Spec().Procedure, req.Peer().Protocol, start, err)
		return res, err
	}
}

// WrapStreamingClient implements connect.Interceptor.
func (i *Interceptor) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return next
}

// WrapStreamingHandler implements connect.Interceptor.
func (i *Interceptor) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return func(ctx context.Context, conn connect.StreamingHandlerConn) error {
		start := time.Now()
		err := next(ctx, conn)
		i.log(ctx, conn.Spec().Procedure, conn.Peer().Protocol, start, err)
		return err
	}
}
