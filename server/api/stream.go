package api

import (
	"context"
	"errors"
	"strings"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/timestamppb"

	feedgatev1 "github.com/feedgate/feedgate/gen/go/feedgate/v1"
	"github.com/feedgate/feedgate/server/broker"
	"github.com/feedgate/feedgate/server/feed"
)

// maxStreamKeys is the most instrument keys one StreamMarketFeed names.
const maxStreamKeys = feed.DefaultMaxStreamKeys

func feedMode(m feedgatev1.FeedMode) (broker.FeedMode, error) {
	switch m {
	case feedgatev1.FeedMode_FEED_MODE_UNSPECIFIED, feedgatev1.FeedMode_FEED_MODE_LTPC:
		return broker.ModeLTPC, nil
	case feedgatev1.FeedMode_FEED_MODE_FULL:
		return broker.ModeFull, nil
	case feedgatev1.FeedMode_FEED_MODE_OPTION_GREEKS:
		return broker.ModeOptionGreeks, nil
	}
	return 0, badField("mode", "unknown mode %d: want FEED_MODE_LTPC, FEED_MODE_FULL or FEED_MODE_OPTION_GREEKS", int32(m))
}

// StreamMarketFeed implements the RPC. Whatever the stream has queued when
// it is ready to write goes out as one message (connect-go's cost is per
// message), so a fast client gets one tick per message and a loaded one
// gets larger batches.
func (h *MarketData) StreamMarketFeed(ctx context.Context, req *connect.Request[feedgatev1.StreamMarketFeedRequest], stream *connect.ServerStream[feedgatev1.StreamMarketFeedResponse]) error {
	err := h.streamMarketFeed(ctx, req, stream)
	return toConnect(ctx, h.d.Logger, req.Spec().Procedure, err)
}

var errShuttingDown = connect.NewError(connect.CodeUnavailable, errors.New("server is shutting down: reconnect"))

func (h *MarketData) streamMarketFeed(ctx context.Context, req *connect.Request[feedgatev1.StreamMarketFeedRequest], stream *connect.ServerStream[feedgatev1.StreamMarketFeedResponse]) error {
	m := req.Msg
	if h.d.Hub == nil {
		return connect.NewError(connect.CodeUnimplemented, errors.New("live feeds are not enabled on this gateway"))
	}
	kind, c, err := h.d.brokerClient(m.GetBroker())
	if err != nil {
		return err
	}
	keys, err := validKeys(c, "instrument_keys", m.GetInstrumentKeys(), maxStreamKeys)
	if err != nil {
		return err
	}
	mode, err := feedMode(m.GetMode())
	if err != nil {
		return err
	}
	st, err := h.d.Hub.Subscribe(ctx, user(ctx).ID, kind, keys, mode)
	if err != nil {
		return err
	}
	defer st.Close()
	binary := binaryCodec(req.Header().Get("Content-Type"))
	hb := time.NewTicker(h.d.Heartbeat)
	defer hb.Stop()
	var msg feedgatev1.StreamMarketFeedResponse
	for {
		ev, ok, err := st.Poll()
		if err != nil {
			return err
		}
		if ok {
			switch ev.Kind {
			case feed.EventTicks:
				msg.Event = &feedgatev1.StreamMarketFeedResponse_Ticks{Ticks: wireBatch(ev, binary)}
			case feed.EventUpstreamStatus:
				msg.Event = &feedgatev1.StreamMarketFeedResponse_UpstreamStatus{UpstreamStatus: &feedgatev1.UpstreamStatus{
					State: ev.UpstreamState, Message: upstreamMessage(kind, ev.UpstreamState),
				}}
			case feed.EventAuthRequired:
				ar := AuthRequiredProto(ev.AuthRequired)
				msg.Event = &feedgatev1.StreamMarketFeedResponse_AuthRequired{AuthRequired: ar}
				if err := stream.Send(&msg); err != nil {
					return err
				}
				return AuthRequiredError(ar)
			default:
				continue
			}
			if err := stream.Send(&msg); err != nil {
				return err
			}
			continue
		}
		select {
		case <-ctx.Done():
			return nil
		case <-h.d.Drain.Done():
			return errShuttingDown
		case <-st.Ready():
		case <-hb.C:
			state, last := st.Upstream()
			hbm := &feedgatev1.Heartbeat{ServerTime: timestamppb.New(h.d.Now()), UpstreamState: state}
			if !last.IsZero() {
				hbm.LastTickAt = timestamppb.New(last)
			}
			msg.Event = &feedgatev1.StreamMarketFeedResponse_Heartbeat{Heartbeat: hbm}
			if err := stream.Send(&msg); err != nil {
				return err
			}
		}
	}
}

// binaryCodec reports whether a request's Content-Type selects the
// protobuf binary codec (gRPC and gRPC-Web default to it; Connect names it).
func binaryCodec(contentType string) bool {
	ct, _, _ := strings.Cut(contentType, ";")
	switch strings.TrimSpace(strings.ToLower(ct)) {
	case "application/grpc", "application/grpc+proto", "application/grpc-web", "application/grpc-web+proto", "application/connect+proto":
		return true
	}
	return false
}

// wireBatch is the TickBatch to send for ev. With the binary codec it
// carries the hub's pre-encoded ticks (ev.Wire) as unknown fields, which
// the codec writes verbatim and every decoder reads as the repeated ticks
// field: fanning one tick out to many streams then costs a copy per stream
// instead of a marshal. (In a profile of 1,000 streams on one upstream,
// marshalling the same ticks once per stream was most of the gateway's
// CPU.) Other codecs (JSON) get the messages.
func wireBatch(ev feed.Event, binary bool) *feedgatev1.TickBatch {
	if !binary || ev.Wire == nil {
		return ev.Ticks
	}
	b := &feedgatev1.TickBatch{Conflated: ev.Ticks.GetConflated()}
	b.ProtoReflect().SetUnknown(ev.Wire)
	return b
}

func upstreamMessage(kind broker.Kind, s feedgatev1.UpstreamState) string {
	switch s {
	case feedgatev1.UpstreamState_UPSTREAM_STATE_LIVE:
		return kind.DisplayName() + " feed is live"
	case feedgatev1.UpstreamState_UPSTREAM_STATE_RECONNECTING:
		return "lost the " + kind.DisplayName() + " feed; reconnecting"
	case feedgatev1.UpstreamState_UPSTREAM_STATE_CONNECTING:
		return "connecting to the " + kind.DisplayName() + " feed"
	}
	return ""
}
