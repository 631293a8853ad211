package client_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"

	"connectrpc.com/connect"

	"github.com/feedgate/feedgate/client"
	feedgatev1 "github.com/feedgate/feedgate/gen/go/feedgate/v1"
	"github.com/feedgate/feedgate/server/auth"
	"github.com/feedgate/feedgate/server/config"
	"github.com/feedgate/feedgate/server/gateway"
)

// This example runs for real: it starts a gateway with its sandbox broker
// in-process, connects a sandbox Upstox account through the OAuth redirect,
// streams ticks, has the broker revoke the session, and prints what the
// client learns.
func Example_revocation() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	dir, _ := os.MkdirTemp("", "feedgate-example")
	defer os.RemoveAll(dir)
	cfg, _ := config.Load("example", []string{"--addr", "127.0.0.1:0", "--data-dir", dir,
		"--sandbox-addr", "127.0.0.1:0", "--sandbox-feed-interval", "50ms"}, func(string) string { return "" }, io.Discard)
	g, err := gateway.New(ctx, cfg, gateway.Options{})
	if err != nil {
		fmt.Println(err)
		return
	}
	done := make(chan error, 1)
	go func() { done <- g.Run(ctx) }()
	defer func() { cancel(); <-done }()
	_, key, _ := auth.CreateUser(ctx, g.Store(), "alice", false, time.Now())

	c := client.New("http://"+g.Addr(), key.Reveal())
	// Log in: the sandbox's dialog approves account "alice" at once and
	// redirects to the gateway's callback with a code.
	lu, _ := c.Connection.GetLoginURL(ctx, connect.NewRequest(&feedgatev1.GetLoginURLRequest{Broker: feedgatev1.Broker_BROKER_UPSTOX}))
	noFollow := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	res, _ := noFollow.Get(lu.Msg.Url + "&account=alice")
	res.Body.Close()
	cb, _ := url.Parse(res.Header.Get("Location"))
	login, _ := c.Connection.CompleteLogin(ctx, connect.NewRequest(&feedgatev1.CompleteLoginRequest{
		Broker: feedgatev1.Broker_BROKER_UPSTOX, Code: cb.Query().Get("code"), State: cb.Query().Get("state"),
	}))
	fmt.Println("connected:", login.Msg.Connection.State)

	var once sync.Once
	err = c.Subscribe(ctx, &feedgatev1.StreamMarketFeedRequest{
		Broker:         feedgatev1.Broker_BROKER_UPSTOX,
		InstrumentKeys: []string{"NSE_INDEX|Nifty 50"},
	}, client.SubscribeOptions{
		OnTicks: func(*feedgatev1.TickBatch) {
			once.Do(func() {
				fmt.Println("ticks arriving")
				// The broker revokes alice's session.
				r, _ := http.Post(g.SandboxURL()+"/sandbox/revoke", "application/json", strings.NewReader(`{"broker":"upstox","account":"alice"}`))
				r.Body.Close()
			})
		},
	})
	if ar, ok := client.AuthRequired(err); ok {
		fmt.Println("log in again:", ar.Broker, ar.Reason)
	}
	// Output:
	// connected: CONNECTION_STATE_CONNECTED
	// ticks arriving
	// log in again: BROKER_UPSTOX DISCONNECT_REASON_TOKEN_REVOKED
}
