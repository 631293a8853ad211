package api

import (
	"cmp"
	"fmt"
	"slices"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	feedgatev1 "github.com/feedgate/feedgate/gen/go/feedgate/v1"
	"github.com/feedgate/feedgate/server/broker"
	"github.com/feedgate/feedgate/server/store"
)

// brokerKind converts and validates a request's broker field.
func brokerKind(b feedgatev1.Broker) (broker.Kind, error) {
	switch b {
	case feedgatev1.Broker_BROKER_UPSTOX:
		return broker.Upstox, nil
	case feedgatev1.Broker_BROKER_FYERS:
		return broker.Fyers, nil
	case feedgatev1.Broker_BROKER_UNSPECIFIED:
		return "", badField("broker", "required: BROKER_UPSTOX or BROKER_FYERS")
	}
	return "", badField("broker", "unknown broker %d: want BROKER_UPSTOX or BROKER_FYERS", int32(b))
}

// optionalBroker is brokerKind where BROKER_UNSPECIFIED means all ("").
func optionalBroker(b feedgatev1.Broker) (broker.Kind, error) {
	if b == feedgatev1.Broker_BROKER_UNSPECIFIED {
		return "", nil
	}
	return brokerKind(b)
}

func brokerProto(k broker.Kind) feedgatev1.Broker {
	switch k {
	case broker.Upstox:
		return feedgatev1.Broker_BROKER_UPSTOX
	case broker.Fyers:
		return feedgatev1.Broker_BROKER_FYERS
	}
	return feedgatev1.Broker_BROKER_UNSPECIFIED
}

func reasonProto(r store.Reason) feedgatev1.DisconnectReason {
	switch r {
	case store.ReasonTokenRevoked:
		return feedgatev1.DisconnectReason_DISCONNECT_REASON_TOKEN_REVOKED
	case store.ReasonTokenExpired:
		return feedgatev1.DisconnectReason_DISCONNECT_REASON_TOKEN_EXPIRED
	case store.ReasonNotConnected:
		return feedgatev1.DisconnectReason_DISCONNECT_REASON_NOT_CONNECTED
	case store.ReasonLoggedOut:
		return feedgatev1.DisconnectReason_DISCONNECT_REASON_LOGGED_OUT
	}
	return feedgatev1.DisconnectReason_DISCONNECT_REASON_UNSPECIFIED
}

func stateProto(s store.State) feedgatev1.ConnectionState {
	switch s {
	case store.StateConnected:
		return feedgatev1.ConnectionState_CONNECTION_STATE_CONNECTED
	case store.StateDisconnected:
		return feedgatev1.ConnectionState_CONNECTION_STATE_DISCONNECTED
	}
	return feedgatev1.ConnectionState_CONNECTION_STATE_UNSPECIFIED
}

func stateFilter(s feedgatev1.ConnectionState) (store.State, error) {
	switch s {
	case feedgatev1.ConnectionState_CONNECTION_STATE_UNSPECIFIED:
		return "", nil
	case feedgatev1.ConnectionState_CONNECTION_STATE_CONNECTED:
		return store.StateConnected, nil
	case feedgatev1.ConnectionState_CONNECTION_STATE_DISCONNECTED:
		return store.StateDisconnected, nil
	}
	return "", badField("state", "unknown state %d", int32(s))
}

func timestamp(t time.Time) *timestamppb.Timestamp {
	if t.IsZero() {
		return nil
	}
	return timestamppb.New(t)
}

// connectionProto converts a stored connection for clients, saying when
// the sandbox serves its broker.
func (d *Deps) connectionProto(c store.Connection) *feedgatev1.Connection {
	p := &feedgatev1.Connection{
		Broker:          brokerProto(c.Broker),
		State:           stateProto(c.State),
		Reason:          reasonProto(c.Reason),
		ConnectedAt:     timestamp(c.ConnectedAt),
		DisconnectedAt:  timestamp(c.DisconnectedAt),
		LastValidatedAt: timestamp(c.LastValidatedAt),
		LastError:       c.LastError,
		BrokerUserId:    c.BrokerUserID,
		TokenGeneration: c.TokenGeneration,
	}
	if c.State == store.StateConnected {
		p.TokenExpiresAt = timestamp(c.ExpiresAt)
	}
	p.Sandbox = d.Offers[c.Broker].Sandbox
	return p
}

// connectionsProto converts a user's connections to the offered brokers
// (narrowed to only, unless "") and adds one for every broker this gateway
// does not offer, saying so, so a client can show why it cannot connect.
func (d *Deps) connectionsProto(cs []store.Connection, only broker.Kind) []*feedgatev1.Connection {
	out := make([]*feedgatev1.Connection, 0, len(broker.Kinds))
	for _, c := range cs {
		out = append(out, d.connectionProto(c))
	}
	for _, kind := range broker.Kinds {
		if msg := d.Offers[kind].NotConfigured; msg != "" && (only == "" || only == kind) {
			out = append(out, &feedgatev1.Connection{
				Broker: brokerProto(kind), State: feedgatev1.ConnectionState_CONNECTION_STATE_DISCONNECTED,
				Reason: feedgatev1.DisconnectReason_DISCONNECT_REASON_NOT_CONNECTED, NotConfigured: msg,
			})
		}
	}
	slices.SortStableFunc(out, func(a, b *feedgatev1.Connection) int { return cmp.Compare(a.Broker, b.Broker) })
	return out
}

// pageToken encodes a ListConnections position.
func pageToken(userID string, b broker.Kind) string { return fmt.Sprintf("%s/%s", userID, b) }
