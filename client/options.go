package client

import (
	"net/http"

	"connectrpc.com/connect"
)

// An Option configures a Client. Options are made by the With functions of
// this package.
type Option interface {
	apply(*config)
}

type config struct {
	httpClient     connect.HTTPClient
	protocol       string
	connectOptions []connect.ClientOption
}

type optionFunc func(*config)

func (f optionFunc) apply(c *config) { f(c) }

// WithGRPC makes the Client use the gRPC protocol instead of the default
// Connect protocol. gRPC needs HTTP/2; the default HTTP client speaks it
// without TLS (h2c).
func WithGRPC() Option {
	return optionFunc(func(c *config) { c.protocol = protocolGRPC })
}

// WithGRPCWeb makes the Client use the gRPC-Web protocol instead of the
// default Connect protocol.
func WithGRPCWeb() Option {
	return optionFunc(func(c *config) { c.protocol = protocolGRPCWeb })
}

// WithHTTPClient makes the Client send its requests with hc instead of the
// default HTTP client (see [DefaultHTTPClient]). A nil hc is ignored.
//
// To use gRPC over a plaintext connection, hc must speak unencrypted HTTP/2.
func WithHTTPClient(hc *http.Client) Option {
	return optionFunc(func(c *config) {
		if hc != nil {
			c.httpClient = hc
		}
	})
}

// WithConnectOptions passes options to the generated connect clients, for
// example connect.WithInterceptors or connect.WithSendGzip. They are applied
// after the Client's own options, so a protocol option given here wins over
// WithGRPC.
func WithConnectOptions(opts ...connect.ClientOption) Option {
	return optionFunc(func(c *config) { c.connectOptions = append(c.connectOptions, opts...) })
}
