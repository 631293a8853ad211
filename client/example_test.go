package client_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"os"
	"os/signal"

	"connectrpc.com/connect"

	"github.com/feedgate/feedgate/client"
	feedgatev1 "github.com/feedgate/feedgate/gen/go/feedgate/v1"
)

// This program connects to a gateway, streams ticks of Nifty 50 from the
// user's Upstox connection, and when the broker token is revoked prints why
// and where to log in again.
func Example() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	c := client.New("http://127.0.0.1:8080", os.Getenv("FEEDGATE_API_KEY"))
	err := c.Subscribe(ctx, &feedgatev1.StreamMarketFeedRequest{
		Broker:         feedgatev1.Broker_BROKER_UPSTOX,
		InstrumentKeys: []string{"NSE_INDEX|Nifty 50"},
	}, client.SubscribeOptions{
		OnTicks: func(b *feedgatev1.TickBatch) {
			for _, t := range b.Ticks {
				fmt.Printf("%s %.2f\n", t.InstrumentKey, t.Ltp)
			}
		},
	})
	switch ar, ok := client.AuthRequired(err); {
	case ok:
		fmt.Printf("%s needs a new login (%s): %s\nLog in at %s\n", ar.Broker, ar.Reason, ar.Message, ar.LoginUrl)
	case client.IsKeyRejected(err):
		fmt.Println("feedgate refused the API key")
	case errors.Is(err, context.Canceled):
		// Interrupted.
	default:
		log.Fatal(err)
	}
}

// Subscribe reconnects by itself after transient failures and reports each
// attempt to OnReconnect; it stops for good when the broker connection
// needs a new login.
func ExampleClient_Subscribe() {
	c := client.New("http://127.0.0.1:8080", os.Getenv("FEEDGATE_API_KEY"), client.WithGRPC())
	err := c.Subscribe(context.Background(), &feedgatev1.StreamMarketFeedRequest{
		Broker:         feedgatev1.Broker_BROKER_FYERS,
		InstrumentKeys: []string{"NSE:NIFTY50-INDEX", "NSE:NIFTYBANK-INDEX"},
		Mode:           feedgatev1.FeedMode_FEED_MODE_FULL,
	}, client.SubscribeOptions{
		OnTicks: func(b *feedgatev1.TickBatch) { fmt.Println(len(b.Ticks), "ticks") },
		OnStatus: func(s *feedgatev1.UpstreamStatus) {
			fmt.Println("upstream:", s.State, s.Message)
		},
		OnReconnect: func(r client.Reconnect) {
			fmt.Printf("stream lost (%v); reconnecting in %v\n", r.Err, r.Delay)
		},
		OnAuthRequired: func(ar *feedgatev1.AuthRequired) {
			fmt.Println("log in again:", ar.LoginUrl)
		},
	})
	fmt.Println("stopped:", err)
}

// AuthRequired tells "reconnect your broker" from "your feedgate API key was
// refused" by the error's detail, never by its text.
func ExampleAuthRequired() {
	c := client.New("http://127.0.0.1:8080", os.Getenv("FEEDGATE_API_KEY"))
	_, err := c.MarketData.GetOptionChain(context.Background(), connect.NewRequest(&feedgatev1.GetOptionChainRequest{
		Broker:        feedgatev1.Broker_BROKER_UPSTOX,
		UnderlyingKey: "NSE_INDEX|Nifty 50",
		ExpiryDate:    "2026-11-24",
	}))
	if ar, ok := client.AuthRequired(err); ok {
		fmt.Printf("reconnect %s (%s): %s\n", ar.Broker, ar.Reason, ar.LoginUrl)
	} else if client.IsKeyRejected(err) {
		fmt.Println("check FEEDGATE_API_KEY")
	} else if err != nil {
		fmt.Println(connect.CodeOf(err), err)
	}
}
