package gateway_test

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	feedgatev1 "github.com/feedgate/feedgate/gen/go/feedgate/v1"
	"github.com/feedgate/feedgate/server/gateway/gatewaytest"
	"github.com/feedgate/feedgate/server/hardening"
)

// gzipBomb returns n zero bytes gzipped (about n/1000 bytes).
func gzipBomb(t *testing.T, n int) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&buf, gzip.BestCompression)
	chunk := make([]byte, 1<<20)
	for written := 0; written < n; written += len(chunk) {
		if _, err := zw.Write(chunk); err != nil {
			t.Fatal(err)
		}
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// grpcFrame is one gRPC length-prefixed message.
func grpcFrame(compressed bool, payload []byte) []byte {
	b := make([]byte, 5, 5+len(payload))
	if compressed {
		b[0] = 1
	}
	binary.BigEndian.PutUint32(b[1:], uint32(len(payload)))
	return append(b, payload...)
}

// countingBody is a request body that produces n bytes (after prefix) on
// demand and counts how many the server pulled.
type countingBody struct {
	prefix []byte
	n      int64
	pulled atomic.Int64
}

func (b *countingBody) Read(p []byte) (int, error) {
	if len(b.prefix) > 0 {
		k := copy(p, b.prefix)
		b.prefix = b.prefix[k:]
		b.pulled.Add(int64(k))
		return k, nil
	}
	if b.n <= 0 {
		return 0, io.EOF
	}
	k := min(int64(len(p)), b.n)
	clear(p[:k])
	b.n -= k
	b.pulled.Add(k)
	return int(k), nil
}

// grpcCall posts body to path as a gRPC request over h2c and returns the
// grpc-status and grpc-message (from trailers, or headers for a
// trailers-only answer).
func grpcCall(t *testing.T, url, path string, body io.Reader, hdr map[string]string) (string, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url+path, body)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/grpc")
	req.Header.Set("TE", "trailers")
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res, err := gatewaytest.H2C().Do(req.WithContext(ctx))
	if err != nil {
		t.Fatalf("POST %s: %v", path, err)
	}
	_, _ = io.Copy(io.Discard, res.Body)
	res.Body.Close()
	status, msg := res.Trailer.Get("Grpc-Status"), res.Trailer.Get("Grpc-Message")
	if status == "" {
		status, msg = res.Header.Get("Grpc-Status"), res.Header.Get("Grpc-Message")
	}
	return status, msg
}

// Regression (issue 13, hostile traffic): a gzip bomb to the health check,
// which needs no key, is refused as too large once 1 MiB has been inflated.
// Before, health and reflection had no read limit: a 1 MB bomb grew the
// server to 4.2 GB; and connect-go, asked for a message over the limit,
// inflated it to the end just to report its size.
func TestGzipBombIsNotInflated(t *testing.T) {
	t.Parallel()
	e := gatewaytest.Start(t, gatewaytest.Options{})
	const inflated = 64 << 20
	bomb := gzipBomb(t, inflated)
	for _, path := range []string{"/grpc.health.v1.Health/Check", "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"} {
		start := time.Now()
		status, msg := grpcCall(t, e.URL, path, bytes.NewReader(grpcFrame(true, bomb)), map[string]string{"Grpc-Encoding": "gzip"})
		took := time.Since(start)
		if status != strconv.Itoa(int(connect.CodeResourceExhausted)) {
			t.Errorf("%s: %d-byte bomb answered grpc-status %q %q, want ResourceExhausted", path, len(bomb), status, msg)
		}
		if strings.Contains(msg, strconv.Itoa(inflated)) {
			t.Errorf("%s: the bomb was inflated to the end to report its size: %q", path, msg)
		}
		t.Logf("%s: %d KB gzip of %d MB refused in %v: %s", path, len(bomb)>>10, inflated>>20, took.Round(time.Millisecond), msg)
	}
}

// Regression (issue 13, hostile traffic): a plain body far over the limit
// is not read to its end, on the endpoints that need no key too.
func TestHugeBodyIsNotRead(t *testing.T) {
	t.Parallel()
	e := gatewaytest.Start(t, gatewaytest.Options{})
	const size = 100 << 20
	for _, path := range []string{"/grpc.health.v1.Health/Check", "/feedgate.v1.ConnectionService/GetConnectionStatus"} {
		hdr := make([]byte, 5)
		binary.BigEndian.PutUint32(hdr[1:], size)
		body := &countingBody{prefix: hdr, n: size}
		status, _ := grpcCall(t, e.URL, path, body, map[string]string{"Authorization": "Bearer " + e.AdminKey})
		if status == "0" || status == "" {
			t.Errorf("%s: a %d MB message answered grpc-status %q", path, size>>20, status)
		}
		if n := body.pulled.Load(); n > 8<<20 {
			t.Errorf("%s: the server read %d MB of a %d MB body it refuses", path, n>>20, size>>20)
		}
	}
}

// Regression (issue 13, hostile traffic): a request without a plausible
// API key is refused before its body is read or inflated. Before, connect
// read and decompressed the whole message before the auth interceptor ran:
// ten unauthenticated 1 MB bombs cost 2 s of CPU.
func TestUnauthenticatedBodyIsNeverRead(t *testing.T) {
	t.Parallel()
	e := gatewaytest.Start(t, gatewaytest.Options{})
	bomb := gzipBomb(t, 64<<20)
	const size = 100 << 20
	for _, auth := range []string{"", "Bearer nonsense", "Bearer fgk_" + strings.Repeat("A", 43)} {
		// A bomb within the compressed-size limit: inflated first, it
		// would be ResourceExhausted; refused first, Unauthenticated.
		status, msg := grpcCall(t, e.URL, "/feedgate.v1.MarketDataService/GetQuotes", bytes.NewReader(grpcFrame(true, bomb)),
			map[string]string{"Grpc-Encoding": "gzip", "Authorization": auth})
		if status != strconv.Itoa(int(connect.CodeUnauthenticated)) {
			t.Errorf("Authorization %q, a gzip bomb: grpc-status %q %q, want Unauthenticated", auth, status, msg)
		}
		// A huge plain body: not read. (HTTP/2 flow control lets the
		// client send one stream window, about 1 MiB, before the server
		// reads anything.)
		hdr := make([]byte, 5)
		binary.BigEndian.PutUint32(hdr[1:], size)
		body := &countingBody{prefix: hdr, n: size}
		status, msg = grpcCall(t, e.URL, "/feedgate.v1.MarketDataService/GetQuotes", body, map[string]string{"Authorization": auth})
		if status != strconv.Itoa(int(connect.CodeUnauthenticated)) {
			t.Errorf("Authorization %q, %d MB: grpc-status %q %q, want Unauthenticated", auth, size>>20, status, msg)
		}
		if n := body.pulled.Load(); n > 4<<20 {
			t.Errorf("Authorization %q: the server read %d MB of the body before refusing it", auth, n>>20)
		}
	}
	// Over Connect and gRPC-Web too, in their own protocols.
	for _, p := range []gatewaytest.Protocol{{Name: "connect"}, {Name: "grpcweb", Opts: []connect.ClientOption{connect.WithGRPCWeb()}}} {
		c := e.Clients("", p)
		_, err := c.Connection.GetConnectionStatus(context.Background(), connect.NewRequest(&feedgatev1.GetConnectionStatusRequest{}))
		if connect.CodeOf(err) != connect.CodeUnauthenticated {
			t.Errorf("%s without a key: %v", p.Name, err)
		}
	}
}

// Regression (issue 13, hostile traffic): idle connections cannot take
// every descriptor: beyond --max-conns-per-addr from one address, and
// --max-conns in all, new connections are closed at once, and other
// addresses are still served. (20,000 idle connections used to exhaust the
// process's descriptors; legitimate calls and broker dials failed.)
func TestConnectionCaps(t *testing.T) {
	t.Parallel()
	e := gatewaytest.Start(t, gatewaytest.Options{Args: []string{"--max-conns", "60", "--max-conns-per-addr", "20"}})
	addr := strings.TrimPrefix(e.URL, "http://")
	_, port, _ := net.SplitHostPort(addr)
	dial := func(from string) net.Conn {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}, Timeout: 5 * time.Second}
		c, err := d.Dial("tcp", net.JoinHostPort("127.0.0.1", port))
		if err != nil {
			t.Fatalf("dial from %s: %v", from, err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	// closedByServer reports whether the server closed c (a read sees EOF)
	// rather than waiting for its request.
	closedByServer := func(c net.Conn) bool {
		_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
		_, err := c.Read(make([]byte, 1))
		var ne net.Error
		return !(errors.As(err, &ne) && ne.Timeout())
	}
	// (Checked at once: an idle connection is also closed by the server's
	// 10 s header timeout.)
	var refused atomic.Int64
	var wg sync.WaitGroup
	for range 30 {
		c := dial("127.0.0.2")
		wg.Add(1)
		go func() {
			defer wg.Done()
			if closedByServer(c) {
				refused.Add(1)
			}
		}()
	}
	wg.Wait()
	if n := refused.Load(); n != 10 {
		t.Errorf("%d of 30 idle connections from one address closed at once, want 10 (the cap is 20)", n)
	}
	// Another address is served meanwhile.
	hc := &http.Client{Transport: &http.Transport{DialContext: (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.3")}}).DialContext}}
	res, err := hc.Get(e.URL + "/")
	if err != nil || res.StatusCode != http.StatusOK {
		t.Fatalf("another address while one is at its cap: %v %v", res, err)
	}
	res.Body.Close()
	hc.CloseIdleConnections()
	// The total cap: 20 (held) + 20 + 20 = 60 from three addresses; the
	// next is closed whatever its address.
	for _, from := range []string{"127.0.0.4", "127.0.0.5"} {
		for range 20 {
			dial(from)
		}
	}
	if c := dial("127.0.0.6"); !closedByServer(c) {
		t.Error("a connection beyond --max-conns was kept")
	}
}

// Regression (issue 13, hostile traffic): HTTP/2 rapid reset (HEADERS then
// RST_STREAM, as fast as the socket allows) on one connection gets that
// connection closed within its budget of unauthenticated or cancelled
// requests. Before, it kept both cores busy with no end.
func TestRapidResetClosesTheConnection(t *testing.T) {
	t.Parallel()
	e := gatewaytest.Start(t, gatewaytest.Options{})
	for _, path := range []string{"/grpc.health.v1.Health/Check", "/feedgate.v1.ConnectionService/GetConnectionStatus", "/"} {
		c, err := net.Dial("tcp", strings.TrimPrefix(e.URL, "http://"))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if _, err := io.WriteString(c, http2.ClientPreface); err != nil {
			t.Fatal(err)
		}
		fr := http2.NewFramer(c, c)
		if err := fr.WriteSettings(); err != nil {
			t.Fatal(err)
		}
		closed := make(chan struct{})
		go func() { // read until the server hangs up
			defer close(closed)
			for {
				if _, err := fr.ReadFrame(); err != nil {
					return
				}
			}
		}()
		var hb bytes.Buffer
		enc := hpack.NewEncoder(&hb)
		method := "POST"
		if path == "/" {
			method = "GET"
		}
		for _, f := range []hpack.HeaderField{{Name: ":method", Value: method}, {Name: ":scheme", Value: "http"},
			{Name: ":authority", Value: "feedgate"}, {Name: ":path", Value: path}, {Name: "content-type", Value: "application/grpc"}} {
			_ = enc.WriteField(f)
		}
		block := hb.Bytes()
		// Send as fast as the socket takes them, for up to 10 s.
		sent, start := 0, time.Now()
		var writeErr error
	loop:
		for id := uint32(1); time.Since(start) < 10*time.Second; id += 2 {
			select {
			case <-closed:
				break loop
			default:
			}
			if writeErr = fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: block, EndHeaders: true, EndStream: true}); writeErr != nil {
				break
			}
			if writeErr = fr.WriteRSTStream(id, http2.ErrCodeCancel); writeErr != nil {
				break
			}
			sent++
		}
		select {
		case <-closed:
		case <-time.After(5 * time.Second):
			t.Fatalf("%s: the server still holds the connection after %d reset streams in %v (%v)", path, sent, time.Since(start), writeErr)
		}
		t.Logf("%s: the server closed the connection after %d reset streams sent in %v", path, sent, time.Since(start).Round(time.Millisecond))
	}
	// The gateway still serves everyone else.
	c := e.Clients(e.AdminKey, gatewaytest.Protocols[1])
	if _, err := c.Connection.GetConnectionStatus(context.Background(), connect.NewRequest(&feedgatev1.GetConnectionStatusRequest{})); err != nil {
		t.Errorf("after the floods: %v", err)
	}
}

// Regression (issue 13, hostile traffic): refused calls are logged a few a
// second, with a count of those left out; before, each wrote a 236-byte
// INFO line, a log-volume attack for anyone who can reach the port.
func TestRefusedCallsAreLoggedSampled(t *testing.T) {
	t.Parallel()
	var logs hardening.LogBuffer
	e := gatewaytest.Start(t, gatewaytest.Options{Logger: slog.New(slog.NewJSONHandler(&logs, nil))})
	c := e.Clients("fgk_"+strings.Repeat("x", 43), gatewaytest.Protocols[0])
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 100 {
				_, _ = c.Connection.GetConnectionStatus(context.Background(), connect.NewRequest(&feedgatev1.GetConnectionStatusRequest{}))
			}
		}()
	}
	wg.Wait()
	lines := strings.Count(logs.String(), `"msg":"rpc refused"`)
	if lines > 40 {
		t.Errorf("%d log lines for 800 refused calls, want a few dozen at most", lines)
	}
	// The next line written reports how many were left out.
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(logs.String(), "suppressed_since_last") {
		if time.Now().After(deadline) {
			t.Fatal("no line reports how many refusals were left out")
		}
		_, _ = c.Connection.GetConnectionStatus(context.Background(), connect.NewRequest(&feedgatev1.GetConnectionStatusRequest{}))
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("800 refused calls: %d log lines", lines)
}
