package gateway_test

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"connectrpc.com/connect"

	feedgatev1 "github.com/feedgate/feedgate/gen/go/feedgate/v1"
	"github.com/feedgate/feedgate/server/gateway/gatewaytest"
	"github.com/feedgate/feedgate/server/sandbox"
	"github.com/feedgate/feedgate/server/store/sqlitestore"
)

func TestGracefulShutdownEndsStreamsAndClosesTheStore(t *testing.T) {
	t.Parallel()
	e := gatewaytest.Start(t, gatewaytest.Options{})
	c := e.Clients(e.NewUser("sd", false), gatewaytest.Protocols[1])
	e.Login(c, feedgatev1.Broker_BROKER_UPSTOX, "sd")
	ctx := context.Background()
	watch, err := c.Connection.WatchConnectionStatus(ctx, connect.NewRequest(&feedgatev1.WatchConnectionStatusRequest{}))
	if err != nil {
		t.Fatal(err)
	}
	feed, err := c.MarketData.StreamMarketFeed(ctx, connect.NewRequest(&feedgatev1.StreamMarketFeedRequest{
		Broker: feedgatev1.Broker_BROKER_UPSTOX, InstrumentKeys: e.Sandbox().OptionKeys(sandbox.Upstox, "NSE_INDEX|Nifty 50", "", 2),
	}))
	if err != nil {
		t.Fatal(err)
	}
	if !watch.Receive() || !feed.Receive() {
		t.Fatalf("streams did not start: %v %v", watch.Err(), feed.Err())
	}
	ended := make(chan error, 2)
	go func() {
		for watch.Receive() {
		}
		ended <- watch.Err()
	}()
	go func() {
		for feed.Receive() {
		}
		ended <- feed.Err()
	}()
	start := time.Now()
	e.Stop() // what SIGINT/SIGTERM does: cancel Run's context
	for i := 0; i < 2; i++ {
		select {
		case err := <-ended:
			// Clients are told to reconnect, not handed a broken stream.
			var ce *connect.Error
			if !errors.As(err, &ce) || ce.Code() != connect.CodeUnavailable {
				t.Errorf("stream ended with %v, want Unavailable", err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("a stream outlived the shutdown")
		}
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("shutdown took %v", d)
	}
	// The store was closed cleanly: the database opens and is intact.
	st, err := sqlitestore.Open(ctx, filepath.Join(e.DataDir, "feedgate.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if u, err := st.UserByName(ctx, "sd"); err != nil || u.ID == "" {
		t.Errorf("after shutdown: %v", err)
	}
}
