package gateway_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"connectrpc.com/grpchealth"
	"connectrpc.com/grpcreflect"

	feedgatev1 "github.com/feedgate/feedgate/gen/go/feedgate/v1"
	"github.com/feedgate/feedgate/gen/go/feedgate/v1/feedgatev1connect"
	"github.com/feedgate/feedgate/server/auth"
	"github.com/feedgate/feedgate/server/config"
	"github.com/feedgate/feedgate/server/gateway"
)

// h2cClient speaks HTTP/2 without TLS, as gRPC clients do.
func h2cClient() *http.Client {
	var p http.Protocols
	p.SetUnencryptedHTTP2(true)
	return &http.Client{Transport: &http.Transport{
		Protocols:       &p,
		TLSClientConfig: &tls.Config{},
		DialContext:     (&net.Dialer{}).DialContext,
	}}
}

type fixture struct {
	url      string
	g        *gateway.Gateway
	adminKey string
	userKey  string
	revoked  string
	stdout   *bytes.Buffer
}

func start(t *testing.T) *fixture {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	cfg, err := config.Load("test", []string{"--addr", "127.0.0.1:0", "--data-dir", t.TempDir(), "--sandbox-addr", "127.0.0.1:0"}, func(string) string { return "" }, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	g, err := gateway.New(ctx, cfg, gateway.Options{Stdout: &out})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- g.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	f := &fixture{url: "http://" + g.Addr(), g: g, stdout: &out}
	// The first start printed the admin key.
	for _, line := range strings.Split(out.String(), "\n") {
		if s := strings.TrimSpace(line); strings.HasPrefix(s, auth.KeyPrefix) {
			f.adminKey = s
		}
	}
	if f.adminKey == "" {
		t.Fatalf("first start printed no admin key: %q", out.String())
	}
	_, k, err := auth.CreateUser(ctx, g.Store(), "alice", false, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	f.userKey = k.Reveal()
	u, k2, err := auth.CreateUser(ctx, g.Store(), "mallory", false, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if err := g.Store().RevokeUser(ctx, u.ID, time.Now()); err != nil {
		t.Fatal(err)
	}
	f.revoked = k2.Reveal()
	return f
}

var protocols = []struct {
	name string
	opts []connect.ClientOption
}{
	{"connect", nil},
	{"grpc", []connect.ClientOption{connect.WithGRPC()}},
	{"grpcweb", []connect.ClientOption{connect.WithGRPCWeb()}},
}

func withKey[T any](key string, msg *T) *connect.Request[T] {
	req := connect.NewRequest(msg)
	if key != "" {
		req.Header().Set("Authorization", "Bearer "+key)
	}
	return req
}

func TestAuthentication(t *testing.T) {
	t.Parallel()
	f := start(t)
	for _, p := range protocols {
		t.Run(p.name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			conn := feedgatev1connect.NewConnectionServiceClient(h2cClient(), f.url, p.opts...)
			admin := feedgatev1connect.NewAdminServiceClient(h2cClient(), f.url, p.opts...)
			cases := []struct {
				name string
				call func() error
				want connect.Code
			}{
				{"no key", func() error {
					_, err := conn.GetConnectionStatus(ctx, withKey("", &feedgatev1.GetConnectionStatusRequest{}))
					return err
				}, connect.CodeUnauthenticated},
				{"wrong key", func() error {
					_, err := conn.GetConnectionStatus(ctx, withKey(auth.KeyPrefix+"not-a-real-key", &feedgatev1.GetConnectionStatusRequest{}))
					return err
				}, connect.CodeUnauthenticated},
				{"revoked key", func() error {
					_, err := conn.GetConnectionStatus(ctx, withKey(f.revoked, &feedgatev1.GetConnectionStatusRequest{}))
					return err
				}, connect.CodeUnauthenticated},
				{"user key on AdminService", func() error {
					_, err := admin.GetValidationCacheStats(ctx, withKey(f.userKey, &feedgatev1.GetValidationCacheStatsRequest{}))
					return err
				}, connect.CodePermissionDenied},
				{"revoked key on AdminService", func() error {
					_, err := admin.ListConnections(ctx, withKey(f.revoked, &feedgatev1.ListConnectionsRequest{}))
					return err
				}, connect.CodeUnauthenticated},
				{"no key on a stream", func() error {
					s, err := conn.WatchConnectionStatus(ctx, withKey("", &feedgatev1.WatchConnectionStatusRequest{}))
					if err != nil {
						return err
					}
					defer s.Close()
					for s.Receive() {
					}
					return s.Err()
				}, connect.CodeUnauthenticated},
				{"user key on a user RPC passes authentication", func() error {
					_, err := conn.GetConnectionStatus(ctx, withKey(f.userKey, &feedgatev1.GetConnectionStatusRequest{}))
					return err
				}, notAuthError},
				{"admin key on AdminService passes authorization", func() error {
					_, err := admin.GetValidationCacheStats(ctx, withKey(f.adminKey, &feedgatev1.GetValidationCacheStatsRequest{}))
					return err
				}, notAuthError},
			}
			for _, c := range cases {
				err := c.call()
				got := connect.CodeOf(err)
				if c.want == notAuthError {
					if err != nil && (got == connect.CodeUnauthenticated || got == connect.CodePermissionDenied) {
						t.Errorf("%s: refused with %v: %v", c.name, got, err)
					}
					continue
				}
				if got != c.want {
					t.Errorf("%s: code %v (%v), want %v", c.name, got, err, c.want)
				}
				var ce *connect.Error
				if err != nil && asConnect(err, &ce) && len(ce.Details()) != 0 {
					t.Errorf("%s: API-key errors carry no detail, got %d", c.name, len(ce.Details()))
				}
			}
		})
	}
}

// notAuthError is a sentinel: any outcome but an authentication failure.
const notAuthError connect.Code = 1000

func asConnect(err error, ce **connect.Error) bool {
	e, ok := err.(*connect.Error)
	if ok {
		*ce = e
	}
	return ok
}

func TestHealthAndReflectionNeedNoKey(t *testing.T) {
	t.Parallel()
	f := start(t)
	ctx := context.Background()
	for _, p := range protocols[:2] {
		hc := grpchealth.NewClient(h2cClient(), f.url, p.opts...)
		res, err := hc.Check(ctx, &grpchealth.CheckRequest{Service: feedgatev1connect.MarketDataServiceName})
		if err != nil || res.Status != grpchealth.StatusServing {
			t.Errorf("%s: health = %+v, %v", p.name, res, err)
		}
	}
	rc := grpcreflect.NewClient(h2cClient(), f.url)
	stream := rc.NewStream(ctx)
	defer stream.Close()
	names, err := stream.ListServices()
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]bool{
		"feedgate.v1.MarketDataService": false, "feedgate.v1.ConnectionService": false,
		"feedgate.v1.AdminService": false, "grpc.health.v1.Health": false,
	}
	for _, n := range names {
		if _, ok := want[string(n)]; ok {
			want[string(n)] = true
		}
	}
	for n, seen := range want {
		if !seen {
			t.Errorf("reflection does not list %s (got %v)", n, names)
		}
	}
	// The error detail type is resolvable, so grpcurl can print it, and it
	// carries the proto comments, so grpcurl describe shows them.
	fds, err := stream.FileContainingSymbol("feedgate.v1.AuthRequired")
	if err != nil || len(fds) == 0 {
		t.Fatalf("AuthRequired not resolvable by reflection: %v", err)
	}
	if loc := fds[0].GetSourceCodeInfo().GetLocation(); len(loc) == 0 || !strings.Contains(fmt.Sprint(loc), "needs a new login") {
		t.Errorf("reflection serves no comments for %s", fds[0].GetName())
	}
	if fds, err := stream.FileContainingSymbol("grpc.health.v1.Health"); err != nil || len(fds) == 0 {
		t.Errorf("grpc.health.v1.Health not describable: %v", err)
	}
}

func TestFirstStartOnlyOnce(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ctx := context.Background()
	for i, wantKey := range []bool{true, false} {
		cfg, err := config.Load("test", []string{"--addr", "127.0.0.1:0", "--data-dir", dir}, func(string) string { return "" }, &bytes.Buffer{})
		if err != nil {
			t.Fatal(err)
		}
		var out bytes.Buffer
		g, err := gateway.New(ctx, cfg, gateway.Options{Stdout: &out})
		if err != nil {
			t.Fatal(err)
		}
		if got := strings.Contains(out.String(), auth.KeyPrefix); got != wantKey {
			t.Errorf("start %d: printed a key = %v, want %v", i, got, wantKey)
		}
		if err := g.Close(); err != nil {
			t.Fatal(err)
		}
	}
}
