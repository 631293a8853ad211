package accesslog_test

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"

	"connectrpc.com/connect"

	feedgatev1 "github.com/feedgate/feedgate/gen/go/feedgate/v1"
	"github.com/feedgate/feedgate/server/gateway/gatewaytest"
)

type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) { s.mu.Lock(); defer s.mu.Unlock(); return s.b.Write(p) }
func (s *syncBuf) String() string              { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

func TestRPCsAreLoggedWithoutSecrets(t *testing.T) {
	t.Parallel()
	var buf syncBuf
	e := gatewaytest.Start(t, gatewaytest.Options{Logger: slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	key := e.NewUser("logged", false)
	c := e.Clients(key, gatewaytest.Protocols[0])
	e.Login(c, feedgatev1.Broker_BROKER_UPSTOX, "logged")
	_, _ = c.MarketData.GetQuotes(context.Background(), connect.NewRequest(&feedgatev1.GetQuotesRequest{Broker: feedgatev1.Broker_BROKER_UPSTOX, InstrumentKeys: []string{"bad"}}))
	wrong := e.Clients(key+"x", gatewaytest.Protocols[0])
	_, _ = wrong.Connection.GetConnectionStatus(context.Background(), connect.NewRequest(&feedgatev1.GetConnectionStatusRequest{}))
	out := buf.String()
	for _, want := range []string{`"procedure":"/feedgate.v1.ConnectionService/CompleteLogin"`, `"code":"ok"`, `"code":"invalid_argument"`, `"user_id":"u_`, `"msg":"rpc refused"`, `"code":"unauthenticated"`} {
		if !strings.Contains(out, want) {
			t.Errorf("log lacks %s", want)
		}
	}
	if strings.Contains(out, key) || strings.Contains(out, key[len(key)-12:]) {
		t.Error("the API key reached the log")
	}
}
