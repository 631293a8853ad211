package api_test

import (
	"context"
	"errors"
	"net/http/httptest"
	"strings"
	"testing"

	"connectrpc.com/connect"

	feedgatev1 "github.com/feedgate/feedgate/gen/go/feedgate/v1"
	"github.com/feedgate/feedgate/server/gateway/gatewaytest"
	"github.com/feedgate/feedgate/server/sandbox"
)

// externalSandbox runs a sandbox broker outside the gateway, standing in
// for a real broker: a gateway configured with its app credentials treats
// it as a real broker app.
func externalSandbox(t *testing.T) string {
	t.Helper()
	sb, err := sandbox.New(sandbox.Config{})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(sb.Handler())
	t.Cleanup(func() {
		srv.CloseClientConnections()
		srv.Close()
		_ = sb.Close()
	})
	return srv.URL
}

// statusOf returns the caller's connection to b from GetConnectionStatus.
func statusOf(t *testing.T, c gatewaytest.Clients, only, b feedgatev1.Broker) *feedgatev1.Connection {
	t.Helper()
	res, err := c.Connection.GetConnectionStatus(context.Background(), connect.NewRequest(&feedgatev1.GetConnectionStatusRequest{Broker: only}))
	if err != nil {
		t.Fatal(err)
	}
	for _, cn := range res.Msg.Connections {
		if cn.Broker == b {
			return cn
		}
	}
	t.Fatalf("GetConnectionStatus(%v) lists no %v: %v", only, b, res.Msg.Connections)
	return nil
}

// TestHalfConfiguredGateway: once one real broker app is configured, a
// broker without credentials is not offered: every call for it fails with
// FailedPrecondition naming what to set, its status says so, and no
// sandbox answers for it unless --sandbox asks for it by name, which the
// status then shows.
func TestHalfConfiguredGateway(t *testing.T) {
	t.Parallel()
	ext := externalSandbox(t)
	realUpstox := []string{"--upstox-client-id", sandbox.UpstoxClientID, "--upstox-base-url", ext + "/upstox"}
	env := map[string]string{"FEEDGATE_UPSTOX_CLIENT_SECRET": sandbox.UpstoxClientSecret}

	t.Run("fyers not configured", func(t *testing.T) {
		t.Parallel()
		e := gatewaytest.Start(t, gatewaytest.Options{Args: realUpstox, Env: env})
		if e.SandboxURL() != "" {
			t.Errorf("a sandbox runs at %s although no broker asks for it", e.SandboxURL())
		}
		c := e.Clients(e.NewUser("half", false), gatewaytest.Protocols[1])
		e.Login(c, upstox, "half")
		if st := statusOf(t, c, 0, upstox); st.Sandbox || st.NotConfigured != "" || st.State != feedgatev1.ConnectionState_CONNECTION_STATE_CONNECTED {
			t.Errorf("upstox, a real app: %v", st)
		}
		for _, only := range []feedgatev1.Broker{0, fyers} {
			st := statusOf(t, c, only, fyers)
			if st.Sandbox || !strings.HasPrefix(st.NotConfigured, "Fyers is not configured on this gateway: set --fyers-app-id and FEEDGATE_FYERS_SECRET") {
				t.Errorf("fyers status (asked for %v): %v", only, st)
			}
		}
		ctx := context.Background()
		calls := map[string]func() error{
			"GetLoginURL": func() error {
				_, err := c.Connection.GetLoginURL(ctx, connect.NewRequest(&feedgatev1.GetLoginURLRequest{Broker: fyers}))
				return err
			},
			"CompleteLogin": func() error {
				_, err := c.Connection.CompleteLogin(ctx, connect.NewRequest(&feedgatev1.CompleteLoginRequest{Broker: fyers, Code: "x", State: "y"}))
				return err
			},
			"Disconnect": func() error {
				_, err := c.Connection.Disconnect(ctx, connect.NewRequest(&feedgatev1.DisconnectRequest{Broker: fyers}))
				return err
			},
			"GetOptionChain": func() error {
				_, err := c.MarketData.GetOptionChain(ctx, connect.NewRequest(&feedgatev1.GetOptionChainRequest{Broker: fyers, UnderlyingKey: underlyings[fyers], ExpiryDate: "2026-12-08"}))
				return err
			},
			"GetQuotes": func() error {
				_, err := c.MarketData.GetQuotes(ctx, connect.NewRequest(&feedgatev1.GetQuotesRequest{Broker: fyers, InstrumentKeys: []string{"NSE:SBIN-EQ"}}))
				return err
			},
			"StreamMarketFeed": func() error {
				s, err := c.MarketData.StreamMarketFeed(ctx, connect.NewRequest(&feedgatev1.StreamMarketFeedRequest{Broker: fyers, InstrumentKeys: []string{"NSE:SBIN-EQ"}}))
				if err != nil {
					return err
				}
				defer s.Close()
				for s.Receive() {
				}
				return s.Err()
			},
		}
		for name, call := range calls {
			err := call()
			var ce *connect.Error
			if !errors.As(err, &ce) || ce.Code() != connect.CodeFailedPrecondition || !strings.Contains(ce.Message(), "Fyers is not configured on this gateway") || !strings.Contains(ce.Message(), "--sandbox=fyers") {
				t.Errorf("%s for unconfigured Fyers: %v, want FailedPrecondition naming what to set", name, err)
			}
		}
	})

	t.Run("--sandbox=fyers", func(t *testing.T) {
		t.Parallel()
		e := gatewaytest.Start(t, gatewaytest.Options{Args: append(realUpstox, "--sandbox", "fyers"), Env: env})
		c := e.Clients(e.NewUser("half-sb", false), gatewaytest.Protocols[0])
		if cn := e.Login(c, fyers, "half-sb"); !cn.Sandbox {
			t.Errorf("fyers through --sandbox=fyers, after login: %v", cn)
		}
		if st := statusOf(t, c, 0, fyers); !st.Sandbox || st.NotConfigured != "" {
			t.Errorf("fyers through --sandbox=fyers: %v", st)
		}
		if st := statusOf(t, c, 0, upstox); st.Sandbox || st.NotConfigured != "" {
			t.Errorf("upstox, a real app: %v", st)
		}
	})
}

// TestDemoModeSaysSandbox: with no broker app configured, both brokers are
// the sandbox's, and every connection says so.
func TestDemoModeSaysSandbox(t *testing.T) {
	t.Parallel()
	e := gatewaytest.Start(t, gatewaytest.Options{})
	c := e.Clients(e.NewUser("demo", false), gatewaytest.Protocols[0])
	for _, b := range []feedgatev1.Broker{upstox, fyers} {
		if st := statusOf(t, c, 0, b); !st.Sandbox || st.NotConfigured != "" {
			t.Errorf("demo mode, %v: %v", b, st)
		}
	}
}
