package api

import (
	"context"
	"errors"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/timestamppb"

	feedgatev1 "github.com/feedgate/feedgate/gen/go/feedgate/v1"
	"github.com/feedgate/feedgate/gen/go/feedgate/v1/feedgatev1connect"
	"github.com/feedgate/feedgate/server/loginbind"
)

// Connection implements feedgatev1connect.ConnectionServiceHandler.
type Connection struct {
	feedgatev1connect.UnimplementedConnectionServiceHandler
	d *Deps
}

// NewConnection returns the ConnectionService handler.
func NewConnection(d *Deps) *Connection {
	d.defaults()
	return &Connection{d: d}
}

// unary adapts a handler body to the error translation.
func unary[Req, Res any](ctx context.Context, d *Deps, req *connect.Request[Req], fn func(context.Context, *Req) (*Res, error)) (*connect.Response[Res], error) {
	res, err := fn(ctx, req.Msg)
	if err != nil {
		return nil, toConnect(ctx, d.Logger, req.Spec().Procedure, err)
	}
	return connect.NewResponse(res), nil
}

// GetLoginURL implements the RPC. The response also sets the cookie that
// binds the state to the browser asking (package loginbind): the browser
// callback completes only a login started in the same browser.
func (h *Connection) GetLoginURL(ctx context.Context, req *connect.Request[feedgatev1.GetLoginURLRequest]) (*connect.Response[feedgatev1.GetLoginURLResponse], error) {
	kind, err := h.d.offeredKind(req.Msg.GetBroker())
	if err != nil {
		return nil, toConnect(ctx, h.d.Logger, req.Spec().Procedure, err)
	}
	url, state, expires, err := h.d.Conns.LoginURL(ctx, user(ctx).ID, kind)
	if err != nil {
		return nil, toConnect(ctx, h.d.Logger, req.Spec().Procedure, err)
	}
	res := connect.NewResponse(&feedgatev1.GetLoginURLResponse{Url: url, State: state, ExpiresAt: timestamppb.New(expires)})
	res.Header().Add("Set-Cookie", loginbind.Cookie(kind, state, expires, h.d.SecureCookies).String())
	res.Header().Set("Cache-Control", "no-store")
	return res, nil
}

// CompleteLogin implements the RPC.
func (h *Connection) CompleteLogin(ctx context.Context, req *connect.Request[feedgatev1.CompleteLoginRequest]) (*connect.Response[feedgatev1.CompleteLoginResponse], error) {
	return unary(ctx, h.d, req, func(ctx context.Context, m *feedgatev1.CompleteLoginRequest) (*feedgatev1.CompleteLoginResponse, error) {
		kind, err := h.d.offeredKind(m.GetBroker())
		if err != nil {
			return nil, err
		}
		c, err := h.d.Conns.CompleteLogin(ctx, user(ctx).ID, kind, m.GetCode(), m.GetState())
		if err != nil {
			return nil, err
		}
		return &feedgatev1.CompleteLoginResponse{Connection: h.d.connectionProto(c)}, nil
	})
}

// GetConnectionStatus implements the RPC.
func (h *Connection) GetConnectionStatus(ctx context.Context, req *connect.Request[feedgatev1.GetConnectionStatusRequest]) (*connect.Response[feedgatev1.GetConnectionStatusResponse], error) {
	return unary(ctx, h.d, req, func(ctx context.Context, m *feedgatev1.GetConnectionStatusRequest) (*feedgatev1.GetConnectionStatusResponse, error) {
		kind, err := optionalBroker(m.GetBroker())
		if err != nil {
			return nil, err
		}
		cs, err := h.d.Conns.Status(ctx, user(ctx).ID, kind)
		if err != nil {
			return nil, err
		}
		return &feedgatev1.GetConnectionStatusResponse{Connections: h.d.connectionsProto(cs, kind)}, nil
	})
}

// WatchConnectionStatus implements the RPC: the caller's connections now,
// again within milliseconds of every change, and a heartbeat.
func (h *Connection) WatchConnectionStatus(ctx context.Context, req *connect.Request[feedgatev1.WatchConnectionStatusRequest], stream *connect.ServerStream[feedgatev1.WatchConnectionStatusResponse]) error {
	err := h.watch(ctx, req.Msg, stream)
	return toConnect(ctx, h.d.Logger, req.Spec().Procedure, err)
}

func (h *Connection) watch(ctx context.Context, m *feedgatev1.WatchConnectionStatusRequest, stream *connect.ServerStream[feedgatev1.WatchConnectionStatusResponse]) error {
	kind, err := optionalBroker(m.GetBroker())
	if err != nil {
		return err
	}
	uid := user(ctx).ID
	w, err := h.d.Conns.Watch(uid)
	if err != nil {
		return err
	}
	defer w.Close()
	send := func(ev feedgatev1.WatchEvent, changed *feedgatev1.Connection) error {
		cs, err := h.d.Conns.Status(ctx, uid, kind)
		if err != nil {
			return err
		}
		return stream.Send(&feedgatev1.WatchConnectionStatusResponse{
			Event: ev, Connections: h.d.connectionsProto(cs, kind), Changed: changed, ServerTime: timestamppb.New(h.d.Now()),
		})
	}
	if err := send(feedgatev1.WatchEvent_WATCH_EVENT_SNAPSHOT, nil); err != nil {
		return err
	}
	tick := time.NewTicker(h.d.Heartbeat)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-h.d.Drain.Done():
			return connect.NewError(connect.CodeUnavailable, errors.New("server is shutting down: reconnect"))
		case <-w.Done():
			return connect.NewError(connect.CodeUnavailable, errors.New("server is shutting down: reconnect"))
		case <-tick.C:
			if err := send(feedgatev1.WatchEvent_WATCH_EVENT_HEARTBEAT, nil); err != nil {
				return err
			}
		case <-w.C:
			for _, ch := range w.Changes() {
				if kind != "" && ch.Key.Broker != kind {
					continue
				}
				if err := send(feedgatev1.WatchEvent_WATCH_EVENT_CHANGE, h.d.connectionProto(ch.Conn)); err != nil {
					return err
				}
			}
		}
	}
}

// Disconnect implements the RPC.
func (h *Connection) Disconnect(ctx context.Context, req *connect.Request[feedgatev1.DisconnectRequest]) (*connect.Response[feedgatev1.DisconnectResponse], error) {
	return unary(ctx, h.d, req, func(ctx context.Context, m *feedgatev1.DisconnectRequest) (*feedgatev1.DisconnectResponse, error) {
		kind, err := h.d.offeredKind(m.GetBroker())
		if err != nil {
			return nil, err
		}
		c, confirmed, err := h.d.Conns.Disconnect(ctx, user(ctx).ID, kind)
		if err != nil {
			return nil, err
		}
		return &feedgatev1.DisconnectResponse{Connection: h.d.connectionProto(c), BrokerLogoutConfirmed: confirmed}, nil
	})
}

// ClearValidationCache implements the RPC.
func (h *Connection) ClearValidationCache(ctx context.Context, req *connect.Request[feedgatev1.ClearValidationCacheRequest]) (*connect.Response[feedgatev1.ClearValidationCacheResponse], error) {
	return unary(ctx, h.d, req, func(ctx context.Context, m *feedgatev1.ClearValidationCacheRequest) (*feedgatev1.ClearValidationCacheResponse, error) {
		kind, err := optionalBroker(m.GetBroker())
		if err != nil {
			return nil, err
		}
		return &feedgatev1.ClearValidationCacheResponse{Cleared: h.d.Conns.ClearCache(user(ctx).ID, kind)}, nil
	})
}
