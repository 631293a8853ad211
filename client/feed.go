package client

import (
	"context"
	"errors"
	"time"

	"connectrpc.com/connect"

	feedgatev1 "github.com/feedgate/feedgate/gen/go/feedgate/v1"
	"github.com/feedgate/feedgate/internal/backoff"
)

// Default backoff of Subscribe between reconnection attempts.
const (
	DefaultBackoffBase = 250 * time.Millisecond
	DefaultBackoffCap  = 30 * time.Second
)

// SubscribeOptions are the callbacks and settings of Client.Subscribe. Every
// field is optional.
//
// The callbacks of one Subscribe call run on the goroutine that called
// Subscribe, one at a time and in the order the messages arrived; they are
// never called after Subscribe returns. A callback that blocks stops the
// stream from being read (the gateway then conflates ticks: it keeps the
// latest tick per instrument), so hand slow work to another goroutine. The
// messages passed to callbacks belong to the callback: Subscribe does not
// reuse or modify them.
type SubscribeOptions struct {
	// OnTicks receives every batch of ticks.
	OnTicks func(*feedgatev1.TickBatch)
	// OnStatus receives the upstream feed's state changes (connecting,
	// reconnecting, live again). The stream goes on.
	OnStatus func(*feedgatev1.UpstreamStatus)
	// OnHeartbeat receives the gateway's heartbeats (every 15 s by default).
	OnHeartbeat func(*feedgatev1.Heartbeat)
	// OnAuthRequired is called exactly once when the broker connection dies
	// (or was already disconnected), with the broker, the reason and a
	// login URL. Subscribe then returns without reconnecting.
	OnAuthRequired func(*feedgatev1.AuthRequired)
	// OnReconnect is called after a transient failure, just before
	// Subscribe waits to open the stream again.
	OnReconnect func(Reconnect)
	// BackoffBase and BackoffCap bound the wait before a reconnection:
	// a random duration between zero and min(BackoffCap, BackoffBase *
	// 2^(failures-1)) ("full jitter"). Zero means DefaultBackoffBase
	// (250 ms) and DefaultBackoffCap (30 s). The count of failures starts
	// again after a stream that delivered at least one message. When the
	// gateway says how long to wait (a rate limit), Subscribe waits at
	// least that long.
	BackoffBase, BackoffCap time.Duration
	// IdleTimeout, if positive, treats a stream that delivers no message at
	// all (not even a heartbeat) for that long as broken, and reconnects.
	// Set it above the gateway's heartbeat interval (15 s by default), for
	// example to 45 s. Zero disables it.
	IdleTimeout time.Duration
}

// Reconnect describes a reconnection Subscribe is about to make.
type Reconnect struct {
	// Attempt counts the consecutive failed streams, from 1.
	Attempt int
	// Delay is how long Subscribe waits before opening the stream again.
	Delay time.Duration
	// Err is the transient error that ended the previous stream.
	Err error
}

var (
	errIdle        = errors.New("feedgate: no message from the stream within the idle timeout")
	errStreamEnded = errors.New("feedgate: the server ended the stream")
)

// Subscribe streams the market feed req asks for (StreamMarketFeed) and
// passes every message to the callbacks in o, until one of these happens:
//
//   - ctx is done: Subscribe returns ctx.Err().
//   - The broker connection needs a new login (AUTH_REQUIRED): Subscribe
//     calls o.OnAuthRequired once and returns an Unauthenticated error from
//     which AuthRequired returns the same value. It does not reconnect.
//   - A permanent error: InvalidArgument (a bad instrument key or mode),
//     PermissionDenied, a refused API key (IsKeyRejected), or any other
//     code not listed below. Subscribe returns it without retrying.
//
// After a transient failure — Unavailable (the broker or the gateway is
// down, or the gateway is shutting down), DeadlineExceeded,
// ResourceExhausted, a transport or I/O error (including a reset HTTP/2
// stream), a stream the server ended
// without an error, or IdleTimeout — Subscribe calls o.OnReconnect, waits
// with full-jitter exponential backoff and opens the stream again with the
// same request. It retries for as long as ctx lives; bound it with a
// deadline or cancel ctx to stop.
//
// Subscribe blocks, and runs the callbacks on the calling goroutine (see
// SubscribeOptions). It may be called concurrently, for many streams. When
// it returns, no goroutine it started is left running.
func (c *Client) Subscribe(ctx context.Context, req *feedgatev1.StreamMarketFeedRequest, o SubscribeOptions) error {
	if req == nil {
		return connect.NewError(connect.CodeInvalidArgument, errors.New("feedgate: Subscribe: nil request"))
	}
	base, ceiling := o.BackoffBase, o.BackoffCap
	if base <= 0 {
		base = DefaultBackoffBase
	}
	if ceiling <= 0 {
		ceiling = DefaultBackoffCap
	}
	if ceiling < base {
		ceiling = base
	}
	failures := 0
	for {
		progress, ar, err := c.streamOnce(ctx, req, &o)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		detail, hasDetail := AuthRequired(err)
		if ar == nil && hasDetail {
			ar = detail
		}
		if ar != nil {
			if o.OnAuthRequired != nil {
				o.OnAuthRequired(ar)
			}
			if hasDetail {
				return err
			}
			return authRequiredError(ar)
		}
		if err == nil {
			err = connect.NewError(connect.CodeUnavailable, errStreamEnded)
		}
		if !retryable(err) {
			return err
		}
		if progress {
			failures = 0
		}
		failures++
		delay := backoff.Full(failures-1, base, ceiling, nil)
		if ra, ok := RetryAfter(err); ok && ra > delay {
			delay = ra
		}
		if o.OnReconnect != nil {
			o.OnReconnect(Reconnect{Attempt: failures, Delay: delay, Err: err})
		}
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
	}
}

// streamOnce runs one StreamMarketFeed call to its end. It reports whether
// any message arrived, the auth_required message if one did, and the
// stream's error (nil for a clean end).
func (c *Client) streamOnce(ctx context.Context, req *feedgatev1.StreamMarketFeedRequest, o *SubscribeOptions) (progress bool, ar *feedgatev1.AuthRequired, err error) {
	sctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var idle *time.Timer
	if o.IdleTimeout > 0 {
		idle = time.AfterFunc(o.IdleTimeout, func() { cancel(errIdle) })
		defer idle.Stop()
	}
	stream, err := c.MarketData.StreamMarketFeed(sctx, connect.NewRequest(req))
	if err != nil {
		return false, nil, idleErr(sctx, ctx, err)
	}
	defer stream.Close()
	for stream.Receive() {
		progress = true
		if idle != nil && !idle.Stop() {
			break // the idle timeout fired already: the stream is being cancelled
		}
		switch ev := stream.Msg().GetEvent().(type) {
		case *feedgatev1.StreamMarketFeedResponse_Ticks:
			if o.OnTicks != nil {
				o.OnTicks(ev.Ticks)
			}
		case *feedgatev1.StreamMarketFeedResponse_Heartbeat:
			if o.OnHeartbeat != nil {
				o.OnHeartbeat(ev.Heartbeat)
			}
		case *feedgatev1.StreamMarketFeedResponse_UpstreamStatus:
			if o.OnStatus != nil {
				o.OnStatus(ev.UpstreamStatus)
			}
		case *feedgatev1.StreamMarketFeedResponse_AuthRequired:
			// The server ends the stream right after this message, with
			// Unauthenticated and the same detail: read on for that error.
			if ar == nil {
				ar = ev.AuthRequired
			}
		}
		if idle != nil {
			idle.Reset(o.IdleTimeout)
		}
	}
	return progress, ar, idleErr(sctx, ctx, stream.Err())
}

// idleErr turns the cancellation caused by the idle timeout into an
// Unavailable error, which Subscribe retries.
func idleErr(sctx, parent context.Context, err error) error {
	if parent.Err() == nil && errors.Is(context.Cause(sctx), errIdle) {
		return connect.NewError(connect.CodeUnavailable, errIdle)
	}
	return err
}

// retryable reports whether err is a transient failure worth a new stream.
func retryable(err error) bool {
	var ce *connect.Error
	if !errors.As(err, &ce) {
		return true // not from the RPC layer: a transport or I/O error
	}
	switch ce.Code() {
	case connect.CodeUnavailable, connect.CodeDeadlineExceeded, connect.CodeResourceExhausted:
		return true
	case connect.CodeUnknown, connect.CodeCanceled, connect.CodeInternal:
		// Made by the client, not sent by the server: a broken connection,
		// a reset HTTP/2 stream (connect-go reports RST_STREAM
		// INTERNAL_ERROR as Internal) or a truncated body. The same codes
		// sent by the server are permanent.
		return !connect.IsWireError(ce)
	}
	return false
}
