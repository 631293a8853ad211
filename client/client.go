package client

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"strings"
	"time"

	"connectrpc.com/connect"

	"github.com/feedgate/feedgate/gen/go/feedgate/v1/feedgatev1connect"
)

const (
	protocolConnect = "connect"
	protocolGRPC    = "grpc"
	protocolGRPCWeb = "grpcweb"
)

// Client is a feedgate client: the three generated service clients, each
// sending the API key as "Authorization: Bearer KEY" on every call.
//
// A Client is safe for concurrent use by multiple goroutines. Its fields are
// set by New and must not be changed afterwards.
type Client struct {
	// MarketData serves option chains, quotes and live feeds.
	MarketData feedgatev1connect.MarketDataServiceClient
	// Connection manages the caller's broker logins and their status.
	Connection feedgatev1connect.ConnectionServiceClient
	// Admin is the operator's token-health view; only admin keys may call
	// it (others get PermissionDenied).
	Admin feedgatev1connect.AdminServiceClient

	baseURL  string
	protocol string
}

// New returns a Client for the gateway at baseURL (for example
// "http://127.0.0.1:8080") that authenticates with apiKey. An empty apiKey
// sends no Authorization header, and every call fails with Unauthenticated.
//
// By default the Client speaks the Connect protocol through
// [DefaultHTTPClient]; see WithGRPC, WithGRPCWeb, WithHTTPClient and
// WithConnectOptions.
func New(baseURL, apiKey string, opts ...Option) *Client {
	cfg := config{protocol: protocolConnect}
	for _, o := range opts {
		if o != nil {
			o.apply(&cfg)
		}
	}
	if cfg.httpClient == nil {
		cfg.httpClient = DefaultHTTPClient()
	}
	baseURL = strings.TrimRight(baseURL, "/")
	copts := []connect.ClientOption{connect.WithInterceptors(bearer{key: apiKey})}
	switch cfg.protocol {
	case protocolGRPC:
		copts = append(copts, connect.WithGRPC())
	case protocolGRPCWeb:
		copts = append(copts, connect.WithGRPCWeb())
	}
	copts = append(copts, cfg.connectOptions...)
	return &Client{
		MarketData: feedgatev1connect.NewMarketDataServiceClient(cfg.httpClient, baseURL, copts...),
		Connection: feedgatev1connect.NewConnectionServiceClient(cfg.httpClient, baseURL, copts...),
		Admin:      feedgatev1connect.NewAdminServiceClient(cfg.httpClient, baseURL, copts...),
		baseURL:    baseURL,
		protocol:   cfg.protocol,
	}
}

// BaseURL returns the gateway's base URL the Client was made with.
func (c *Client) BaseURL() string { return c.baseURL }

// String describes the Client by its base URL and protocol. It never
// includes the API key.
func (c *Client) String() string {
	return fmt.Sprintf("feedgate client(%s, %s)", c.baseURL, c.protocol)
}

// GoString is String, so that %#v does not print the Client's internals.
func (c *Client) GoString() string { return c.String() }

// DefaultHTTPClient returns the HTTP client New uses when WithHTTPClient is
// not given. For http:// URLs it speaks HTTP/2 without TLS (h2c, with prior
// knowledge), which is what the gateway serves on its plaintext port and
// what gRPC needs; for https:// URLs it negotiates HTTP/2 or HTTP/1.1 with
// ALPN. It has no overall timeout (that would end live feeds) but sends
// HTTP/2 pings on idle connections, so a dead connection is noticed within
// about 45 seconds.
//
// (A single http.Transport with both HTTP1 and UnencryptedHTTP2 enabled
// would use HTTP/1.1 for http:// URLs, where gRPC does not work; hence one
// transport per scheme.)
func DefaultHTTPClient() *http.Client {
	dialer := &net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}
	h2 := &http.HTTP2Config{SendPingTimeout: 30 * time.Second, PingTimeout: 15 * time.Second}
	var plain http.Protocols
	plain.SetUnencryptedHTTP2(true)
	var secure http.Protocols
	secure.SetHTTP1(true)
	secure.SetHTTP2(true)
	return &http.Client{Transport: schemeTransport{
		// No proxy for h2c: a forward proxy would not speak HTTP/2 with
		// prior knowledge.
		http: &http.Transport{
			DialContext:         dialer.DialContext,
			Protocols:           &plain,
			HTTP2:               h2,
			MaxIdleConnsPerHost: 4,
			IdleConnTimeout:     90 * time.Second,
		},
		https: &http.Transport{
			Proxy:               http.ProxyFromEnvironment,
			DialContext:         dialer.DialContext,
			Protocols:           &secure,
			HTTP2:               h2,
			TLSClientConfig:     &tls.Config{MinVersion: tls.VersionTLS12},
			TLSHandshakeTimeout: 10 * time.Second,
			MaxIdleConnsPerHost: 4,
			IdleConnTimeout:     90 * time.Second,
		},
	}}
}

// schemeTransport sends http:// requests over h2c and the rest over TLS.
type schemeTransport struct {
	http, https *http.Transport
}

func (t schemeTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.URL.Scheme == "http" {
		return t.http.RoundTrip(r)
	}
	return t.https.RoundTrip(r)
}

// CloseIdleConnections closes both transports' idle connections, so that
// http.Client.CloseIdleConnections works on the default client.
func (t schemeTransport) CloseIdleConnections() {
	t.http.CloseIdleConnections()
	t.https.CloseIdleConnections()
}

// bearer is the interceptor that adds the API key to every request. Its
// String and GoString methods keep the key out of any formatted output.
type bearer struct{ key string }

func (b bearer) String() string   { return "bearer([REDACTED])" }
func (b bearer) GoString() string { return b.String() }

func (b bearer) set(h http.Header) {
	if b.key != "" {
		h.Set("Authorization", "Bearer "+b.key)
	}
}

func (b bearer) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		b.set(req.Header())
		return next(ctx, req)
	}
}

func (b bearer) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return func(ctx context.Context, spec connect.Spec) connect.StreamingClientConn {
		conn := next(ctx, spec)
		b.set(conn.RequestHeader())
		return conn
	}
}

func (b bearer) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return next
}
