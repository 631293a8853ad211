package api

import (
	"context"
	"strings"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	feedgatev1 "github.com/feedgate/feedgate/gen/go/feedgate/v1"
	"github.com/feedgate/feedgate/gen/go/feedgate/v1/feedgatev1connect"
	"github.com/feedgate/feedgate/server/broker"
	"github.com/feedgate/feedgate/server/store"
)

// Admin implements feedgatev1connect.AdminServiceHandler. The auth
// interceptor admits admin keys only.
type Admin struct {
	feedgatev1connect.UnimplementedAdminServiceHandler
	d *Deps
}

// NewAdmin returns the AdminService handler.
func NewAdmin(d *Deps) *Admin {
	d.defaults()
	return &Admin{d: d}
}

// ValidateAllTokens implements the RPC.
func (h *Admin) ValidateAllTokens(ctx context.Context, req *connect.Request[feedgatev1.ValidateAllTokensRequest]) (*connect.Response[feedgatev1.ValidateAllTokensResponse], error) {
	return unary(ctx, h.d, req, func(ctx context.Context, m *feedgatev1.ValidateAllTokensRequest) (*feedgatev1.ValidateAllTokensResponse, error) {
		kind, err := optionalBroker(m.GetBroker())
		if err != nil {
			return nil, err
		}
		r, err := h.d.Conns.Sweep(ctx, kind, true)
		if err != nil {
			return nil, err
		}
		return &feedgatev1.ValidateAllTokensResponse{
			Checked: int32(r.Checked), Valid: int32(r.Valid), Invalidated: int32(r.Invalidated), Errors: int32(r.Errors),
			Duration: durationpb.New(r.Duration),
		}, nil
	})
}

// GetValidationCacheStats implements the RPC.
func (h *Admin) GetValidationCacheStats(ctx context.Context, req *connect.Request[feedgatev1.GetValidationCacheStatsRequest]) (*connect.Response[feedgatev1.GetValidationCacheStatsResponse], error) {
	return unary(ctx, h.d, req, func(ctx context.Context, _ *feedgatev1.GetValidationCacheStatsRequest) (*feedgatev1.GetValidationCacheStatsResponse, error) {
		s := h.d.Conns.CacheStats()
		return &feedgatev1.GetValidationCacheStatsResponse{
			Entries: s.Entries, Hits: s.Hits, Misses: s.Misses, HitRatio: s.HitRatio(), Ttl: durationpb.New(s.TTL),
		}, nil
	})
}

// ClearValidationCache implements the RPC.
func (h *Admin) ClearValidationCache(ctx context.Context, req *connect.Request[feedgatev1.AdminServiceClearValidationCacheRequest]) (*connect.Response[feedgatev1.AdminServiceClearValidationCacheResponse], error) {
	return unary(ctx, h.d, req, func(ctx context.Context, m *feedgatev1.AdminServiceClearValidationCacheRequest) (*feedgatev1.AdminServiceClearValidationCacheResponse, error) {
		kind, err := optionalBroker(m.GetBroker())
		if err != nil {
			return nil, err
		}
		if len(m.GetUserId()) > 64 {
			return nil, badField("user_id", "too long")
		}
		return &feedgatev1.AdminServiceClearValidationCacheResponse{Cleared: h.d.Conns.ClearCache(m.GetUserId(), kind)}, nil
	})
}

// Page sizes of ListConnections.
const (
	defaultPageSize = 100
	maxPageSize     = 1000
)

// ListConnections implements the RPC.
func (h *Admin) ListConnections(ctx context.Context, req *connect.Request[feedgatev1.ListConnectionsRequest]) (*connect.Response[feedgatev1.ListConnectionsResponse], error) {
	return unary(ctx, h.d, req, func(ctx context.Context, m *feedgatev1.ListConnectionsRequest) (*feedgatev1.ListConnectionsResponse, error) {
		kind, err := optionalBroker(m.GetBroker())
		if err != nil {
			return nil, err
		}
		state, err := stateFilter(m.GetState())
		if err != nil {
			return nil, err
		}
		size := int(m.GetPageSize())
		switch {
		case size < 0:
			return nil, badField("page_size", "must not be negative")
		case size == 0:
			size = defaultPageSize
		case size > maxPageSize:
			size = maxPageSize
		}
		f := store.ConnectionFilter{Broker: kind, State: state, Limit: size + 1}
		if t := m.GetPageToken(); t != "" {
			uid, b, ok := strings.Cut(t, "/")
			if !ok || uid == "" || !broker.Kind(b).Valid() {
				return nil, badField("page_token", "not a token from a previous page")
			}
			f.AfterUserID, f.AfterBroker = uid, broker.Kind(b)
		}
		rows, err := h.d.Store.ListConnections(ctx, f)
		if err != nil {
			return nil, err
		}
		res := &feedgatev1.ListConnectionsResponse{}
		if len(rows) > size {
			rows = rows[:size]
			last := rows[size-1].Connection
			res.NextPageToken = pageToken(last.UserID, last.Broker)
		}
		for _, r := range rows {
			res.Connections = append(res.Connections, &feedgatev1.UserConnection{
				UserId: r.User.ID, UserName: r.User.Name, Connection: h.d.connectionProto(r.Connection),
				UserCreatedAt: timestamppb.New(r.User.CreatedAt),
			})
		}
		return res, nil
	})
}
