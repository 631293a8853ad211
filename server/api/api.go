// Package api implements feedgate's connect handlers: MarketDataService,
// ConnectionService and AdminService. Handlers are thin: they validate
// input, call the domain packages (connections, feed) and translate domain
// errors into connect codes in one place (errors.go).
package api

import (
	"context"
	"log/slog"
	"time"

	"github.com/feedgate/feedgate/server/auth"
	"github.com/feedgate/feedgate/server/broker"
	"github.com/feedgate/feedgate/server/connections"
	"github.com/feedgate/feedgate/server/feed"
	"github.com/feedgate/feedgate/server/store"
)

// Deps are what the handlers need.
type Deps struct {
	Conns   *connections.Manager
	Hub     *feed.Hub
	Brokers map[broker.Kind]broker.Client
	// Offers says what serves each broker. A broker absent from it with a
	// client in Brokers is a real broker app.
	Offers map[broker.Kind]Offer
	Store  store.Store
	Logger *slog.Logger
	// Drain is cancelled when the server begins to shut down: open streams
	// end cleanly.
	Drain context.Context
	// Heartbeat is the interval of stream heartbeats (default 15 s).
	Heartbeat time.Duration
	// Now is the clock (default time.Now).
	Now func() time.Time
	// SecureCookies is whether browsers reach the gateway over https (the
	// login-binding cookie is then Secure and __Host- prefixed).
	SecureCookies bool
}

// Offer is what the gateway offers for one broker: a real broker app, the
// sandbox (synthetic data), or nothing (NotConfigured says why and what the
// operator sets).
type Offer struct {
	Sandbox       bool
	NotConfigured string
}

func (d *Deps) defaults() {
	if d.Logger == nil {
		d.Logger = slog.New(slog.DiscardHandler)
	}
	if d.Drain == nil {
		d.Drain = context.Background()
	}
	if d.Heartbeat <= 0 {
		d.Heartbeat = 15 * time.Second
	}
	if d.Now == nil {
		d.Now = time.Now
	}
}

// user returns the authenticated caller. The auth interceptor guarantees
// one on every feedgate RPC.
func user(ctx context.Context) store.User {
	u, _ := auth.UserFrom(ctx)
	return u
}
