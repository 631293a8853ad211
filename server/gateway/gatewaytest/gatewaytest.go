// Package gatewaytest starts a real feedgate gateway with its in-process
// sandbox broker for tests, and drives the real OAuth redirect chain to
// connect sandbox accounts. Nothing in it is a mock: calls go over real
// HTTP to real connect handlers, a real SQLite file and the sandbox broker.
package gatewaytest

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	feedgatev1 "github.com/feedgate/feedgate/gen/go/feedgate/v1"
	"github.com/feedgate/feedgate/gen/go/feedgate/v1/feedgatev1connect"
	"github.com/feedgate/feedgate/server/auth"
	"github.com/feedgate/feedgate/server/clock"
	"github.com/feedgate/feedgate/server/config"
	"github.com/feedgate/feedgate/server/gateway"
	"github.com/feedgate/feedgate/server/sandbox"
)

// Env is a running gateway.
type Env struct {
	T        testing.TB
	G        *gateway.Gateway
	URL      string
	AdminKey string
	DataDir  string
	stop     func()
}

// Options adjust Start.
type Options struct {
	// DataDir reuses a data directory (to test restarts); "" makes one.
	DataDir string
	// Args are extra serve flags.
	Args []string
	// Env is extra environment for config.Load.
	Env   map[string]string
	Clock clock.Clock
	// Logger receives the gateway's logs; nil discards them.
	Logger *slog.Logger
}

// Start runs a gateway until the test ends.
func Start(t testing.TB, o Options) *Env {
	t.Helper()
	dir := o.DataDir
	if dir == "" {
		dir = t.TempDir()
	}
	args := append([]string{"--addr", "127.0.0.1:0", "--data-dir", dir, "--sandbox-addr", "127.0.0.1:0",
		"--sandbox-feed-interval", "50ms"}, o.Args...)
	cfg, err := config.Load("test", args, func(k string) string { return o.Env[k] }, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var out bytes.Buffer
	g, err := gateway.New(ctx, cfg, gateway.Options{Stdout: &out, Clock: o.Clock, Logger: o.Logger})
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- g.Run(ctx) }()
	e := &Env{T: t, G: g, URL: "http://" + g.Addr(), DataDir: dir}
	for _, line := range strings.Split(out.String(), "\n") {
		if s := strings.TrimSpace(line); strings.HasPrefix(s, auth.KeyPrefix) {
			e.AdminKey = s
		}
	}
	var once bool
	e.stop = func() {
		if once {
			return
		}
		once = true
		cancel()
		if err := <-done; err != nil {
			t.Errorf("gateway Run: %v", err)
		}
	}
	t.Cleanup(e.stop)
	return e
}

// Stop shuts the gateway down now (for restart tests).
func (e *Env) Stop() { e.stop() }

// Sandbox is the in-process sandbox broker.
func (e *Env) Sandbox() *sandbox.Sandbox { return e.G.Sandbox() }

// SandboxURL is the sandbox's base URL.
func (e *Env) SandboxURL() string { return e.G.SandboxURL() }

// NewUser creates a user and returns its API key.
func (e *Env) NewUser(name string, admin bool) string {
	e.T.Helper()
	_, key, err := auth.CreateUser(context.Background(), e.G.Store(), name, admin, time.Now())
	if err != nil {
		e.T.Fatal(err)
	}
	return key.Reveal()
}

// H2C is an HTTP client speaking HTTP/2 without TLS (as gRPC clients do).
func H2C() *http.Client {
	var p http.Protocols
	p.SetUnencryptedHTTP2(true)
	return &http.Client{Transport: &http.Transport{Protocols: &p, TLSClientConfig: &tls.Config{}, DialContext: (&net.Dialer{}).DialContext}}
}

// Protocol is a named set of connect client options.
type Protocol struct {
	Name string
	Opts []connect.ClientOption
}

// Protocols are the wire protocols every end-to-end case runs over.
var Protocols = []Protocol{
	{"connect", nil},
	{"grpc", []connect.ClientOption{connect.WithGRPC()}},
}

// Clients holds the three service clients for one key and protocol.
type Clients struct {
	MarketData feedgatev1connect.MarketDataServiceClient
	Connection feedgatev1connect.ConnectionServiceClient
	Admin      feedgatev1connect.AdminServiceClient
}

// bearer adds the API key to every request.
type bearer string

func (b bearer) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		req.Header().Set("Authorization", "Bearer "+string(b))
		return next(ctx, req)
	}
}

func (b bearer) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return func(ctx context.Context, spec connect.Spec) connect.StreamingClientConn {
		c := next(ctx, spec)
		c.RequestHeader().Set("Authorization", "Bearer "+string(b))
		return c
	}
}

func (b bearer) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return next
}

// Clients returns clients using key over protocol p.
func (e *Env) Clients(key string, p Protocol) Clients {
	return e.clients(key, p, H2C())
}

// BrowserClients returns clients using key over protocol p that keep
// cookies as a browser does, and a client for the browser's navigations
// (it follows no redirects) sharing their cookie jar: the cookie that
// GetLoginURL sets goes back with the OAuth callback, as in the browser
// that asked for the login.
func (e *Env) BrowserClients(key string, p Protocol) (Clients, *http.Client) {
	jar, err := cookiejar.New(nil)
	if err != nil {
		e.T.Fatal(err)
	}
	hc := H2C()
	hc.Jar = jar
	nav := &http.Client{Jar: jar, Timeout: 10 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	return e.clients(key, p, hc), nav
}

func (e *Env) clients(key string, p Protocol, hc *http.Client) Clients {
	opts := append([]connect.ClientOption{connect.WithInterceptors(bearer(key))}, p.Opts...)
	return Clients{
		MarketData: feedgatev1connect.NewMarketDataServiceClient(hc, e.URL, opts...),
		Connection: feedgatev1connect.NewConnectionServiceClient(hc, e.URL, opts...),
		Admin:      feedgatev1connect.NewAdminServiceClient(hc, e.URL, opts...),
	}
}

var noRedirect = &http.Client{
	CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	Timeout:       10 * time.Second,
}

// Approve opens a login URL at the sandbox broker as account and returns
// the redirect it answers with (the gateway's callback with code and state).
func Approve(t testing.TB, loginURL, account string) *url.URL {
	t.Helper()
	res, err := noRedirect.Get(loginURL + "&account=" + url.QueryEscape(account))
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusFound && res.StatusCode != http.StatusSeeOther {
		t.Fatalf("sandbox login dialog: HTTP %d", res.StatusCode)
	}
	loc, err := url.Parse(res.Header.Get("Location"))
	if err != nil {
		t.Fatal(err)
	}
	return loc
}

// BrokerCode returns the auth code from a broker redirect.
func BrokerCode(b feedgatev1.Broker, redirect *url.URL) string {
	if b == feedgatev1.Broker_BROKER_FYERS {
		return redirect.Query().Get("auth_code")
	}
	return redirect.Query().Get("code")
}

// Login connects key's user to broker b as the sandbox account, through
// GetLoginURL, the sandbox's dialog and CompleteLogin.
func (e *Env) Login(c Clients, b feedgatev1.Broker, account string) *feedgatev1.Connection {
	e.T.Helper()
	ctx := context.Background()
	lu, err := c.Connection.GetLoginURL(ctx, connect.NewRequest(&feedgatev1.GetLoginURLRequest{Broker: b}))
	if err != nil {
		e.T.Fatalf("GetLoginURL: %v", err)
	}
	loc := Approve(e.T, lu.Msg.Url, account)
	res, err := c.Connection.CompleteLogin(ctx, connect.NewRequest(&feedgatev1.CompleteLoginRequest{
		Broker: b, Code: BrokerCode(b, loc), State: loc.Query().Get("state"),
	}))
	if err != nil {
		e.T.Fatalf("CompleteLogin: %v", err)
	}
	return res.Msg.Connection
}

// SandboxPost posts JSON to the sandbox's control API.
func (e *Env) SandboxPost(path string, body any) {
	e.T.Helper()
	b, _ := json.Marshal(body)
	res, err := http.Post(e.SandboxURL()+path, "application/json", bytes.NewReader(b))
	if err != nil {
		e.T.Fatal(err)
	}
	defer res.Body.Close()
	if res.StatusCode/100 != 2 {
		msg, _ := io.ReadAll(res.Body)
		e.T.Fatalf("sandbox %s: HTTP %d %s", path, res.StatusCode, msg)
	}
}

// Revoke revokes every token of a sandbox account, via the control API.
func (e *Env) Revoke(broker, account string) {
	e.SandboxPost("/sandbox/revoke", map[string]string{"broker": broker, "account": account})
}

// Calls counts the sandbox's recorded calls matching broker, path prefix,
// status (0 = any) and account ("" = any).
func (e *Env) Calls(broker, pathPrefix string, status int, account string) int {
	e.T.Helper()
	n := 0
	for _, c := range e.Sandbox().Stats().Calls {
		if string(c.Broker) == broker && strings.HasPrefix(c.Path, pathPrefix) && (status == 0 || c.Status == status) && (account == "" || c.Account == account) {
			n += int(c.Count)
		}
	}
	return n
}
