// Package client is the Go client of the feedgate market-data gateway.
//
// [New] builds a [Client] from the gateway's base URL and a feedgate API key.
// The Client exposes the three generated connect clients (MarketData,
// Connection and Admin); every call they make carries the API key as an
// "Authorization: Bearer" header, over the Connect protocol by default or
// gRPC with [WithGRPC]. The default HTTP client speaks HTTP/1.1 and HTTP/2
// without TLS (h2c), so gRPC works against a plaintext gateway.
//
// # Errors
//
// feedgate has one error contract. An Unauthenticated error that carries a
// feedgate.v1.AuthRequired detail means the user's broker connection needs a
// new login: [AuthRequired] extracts the detail, which names the broker, the
// reason and a login URL. An Unauthenticated error without that detail means
// the feedgate API key itself was refused: [IsKeyRejected] reports it. A client
// tells the two apart by the detail alone, never by the error text.
//
// # Live feeds
//
// [Client.Subscribe] runs StreamMarketFeed for as long as its context lives.
// It delivers ticks, heartbeats and upstream status changes to callbacks,
// reconnects with full-jitter exponential backoff after transient failures
// (Unavailable, DeadlineExceeded, transport errors, a server shutting down),
// and stops for good when the broker connection dies (AUTH_REQUIRED), calling
// OnAuthRequired exactly once and returning an error from which
// [AuthRequired] extracts the same value.
//
// # Concurrency
//
// A Client is safe for concurrent use by multiple goroutines, and so are the
// service clients it exposes. Subscribe may be called concurrently for
// several streams; the callbacks of one Subscribe call run on the goroutine
// that called it, one at a time.
//
// The API key is never included in errors, logs or the Client's String form.
package client
