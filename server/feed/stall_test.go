package feed

import (
	"context"
	"crypto/rand"
	"net"
	"net/http/httptest"
	"path/filepath"
	"sync"
	"testing"
	"time"

	feedgatev1 "github.com/feedgate/feedgate/gen/go/feedgate/v1"
	"github.com/feedgate/feedgate/server/broker"
	"github.com/feedgate/feedgate/server/broker/upstox"
	"github.com/feedgate/feedgate/server/connections"
	"github.com/feedgate/feedgate/server/sandbox"
	"github.com/feedgate/feedgate/server/seal"
	"github.com/feedgate/feedgate/server/secret"
	"github.com/feedgate/feedgate/server/store"
	"github.com/feedgate/feedgate/server/store/sqlitestore"
)

// stallProxy is a TCP proxy on loopback that can freeze every connection
// open at the time: bytes stop flowing both ways but the sockets stay
// open, as with a dead NAT entry or a hung broker. Connections made after
// a freeze flow normally.
type stallProxy struct {
	ln     net.Listener
	target string

	mu     sync.Mutex
	pipes  []*pipe // not frozen yet
	all    []*pipe
	closed bool
	wg     sync.WaitGroup
}

type pipe struct {
	a, b   net.Conn
	frozen chan struct{}
	once   sync.Once
}

func newStallProxy(t *testing.T, target string) *stallProxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &stallProxy{ln: ln, target: target}
	p.wg.Add(1)
	go p.serve()
	return p
}

func (p *stallProxy) serve() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		up, err := net.Dial("tcp", p.target)
		if err != nil {
			c.Close()
			continue
		}
		pp := &pipe{a: c, b: up, frozen: make(chan struct{})}
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			c.Close()
			up.Close()
			return
		}
		p.pipes = append(p.pipes, pp)
		p.all = append(p.all, pp)
		p.mu.Unlock()
		p.wg.Add(2)
		go p.copy(pp, pp.a, pp.b)
		go p.copy(pp, pp.b, pp.a)
	}
}

// copy forwards src to dst until either side fails; once the pipe is
// frozen it forwards nothing more and waits for the proxy to close.
func (p *stallProxy) copy(pp *pipe, dst, src net.Conn) {
	defer p.wg.Done()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		select {
		case <-pp.frozen:
			return // the sockets stay open until Close
		default:
		}
		if n > 0 {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				break
			}
		}
		if err != nil {
			break
		}
	}
	pp.a.Close()
	pp.b.Close()
}

// freeze stops every connection open now.
func (p *stallProxy) freeze() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, pp := range p.pipes {
		pp.once.Do(func() { close(pp.frozen) })
	}
	n := len(p.pipes)
	p.pipes = nil
	return n
}

// close closes the listener and every socket, frozen ones included.
func (p *stallProxy) close() {
	p.mu.Lock()
	p.closed = true
	all := p.all
	p.mu.Unlock()
	p.ln.Close()
	for _, pp := range all {
		pp.a.Close()
		pp.b.Close()
	}
}

// TestSilentFeedSocketIsDetectedAndReconnected puts a stalling TCP proxy
// between the feed client and the sandbox's Upstox feed. Once the proxy
// freezes the live socket (open, but no byte and no ping gets through),
// the client's idle timeout notices, the stream is told RECONNECTING and
// then LIVE again on a freshly authorized socket, ticks resume, the
// connection stays CONNECTED, and no goroutine is left behind.
func TestSilentFeedSocketIsDetectedAndReconnected(t *testing.T) {
	checkLeaks(t)
	sb, err := sandbox.New(sandbox.Config{FeedInterval: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(sb.Handler())
	proxy := newStallProxy(t, srv.Listener.Addr().String())
	ctx := context.Background()
	st, err := sqlitestore.Open(ctx, filepath.Join(t.TempDir(), "feedgate.db"))
	if err != nil {
		t.Fatal(err)
	}
	var h [32]byte
	_, _ = rand.Read(h[:])
	if err := st.CreateUser(ctx, store.User{ID: "alice", Name: "alice", KeyHash: h, CreatedAt: time.Now()}); err != nil {
		t.Fatal(err)
	}
	key := make([]byte, 32)
	_, _ = rand.Read(key)
	sealer, _ := seal.New(key)
	up, err := upstox.New(upstox.Config{ClientID: sandbox.UpstoxClientID, ClientSecret: secret.New(sandbox.UpstoxClientSecret),
		RedirectURL: "http://127.0.0.1/cb", BaseURL: "http://" + proxy.ln.Addr().String() + "/upstox"})
	if err != nil {
		t.Fatal(err)
	}
	m, err := connections.New(connections.Config{Store: st, Sealer: sealer, Brokers: map[broker.Kind]broker.Client{broker.Upstox: up}})
	if err != nil {
		t.Fatal(err)
	}
	const idle = 500 * time.Millisecond
	hub, err := New(Config{Conns: m, Dialers: map[broker.Kind]broker.FeedDialer{broker.Upstox: up},
		FeedOptions: broker.FeedOptions{IdleTimeout: idle}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		hub.Close()
		m.Close()
		// The proxy's sockets first: the sandbox's feed writers are blocked
		// on the frozen ones, and the HTTP client keeps idle ones: closing
		// the sandbox first would wait out their timeouts.
		proxy.close()
		proxy.wg.Wait()
		_ = sb.Close()
		srv.Close()
		_ = st.Close()
	})
	e := &sbEnv{sb: sb, srv: srv, m: m, hub: hub}
	e.login(t, "alice", broker.Upstox)
	s := e.sub(t, "alice", broker.Upstox, nifty)
	defer s.Close()
	nextTicks(t, s)

	start := time.Now()
	if n := proxy.freeze(); n == 0 {
		t.Fatal("no connection to freeze")
	}
	want := []feedgatev1.UpstreamState{feedgatev1.UpstreamState_UPSTREAM_STATE_RECONNECTING, feedgatev1.UpstreamState_UPSTREAM_STATE_LIVE}
	var detected time.Duration
	for len(want) > 0 {
		ev, err := nextWithin(t, s, 10*time.Second)
		if err != nil {
			t.Fatalf("waiting for %v: %v", want[0], err)
		}
		if ev.Kind != EventUpstreamStatus {
			continue
		}
		if ev.UpstreamState != want[0] {
			t.Fatalf("status %v, want %v", ev.UpstreamState, want[0])
		}
		if detected == 0 {
			detected = time.Since(start)
		}
		want = want[1:]
	}
	nextTicks(t, s)
	t.Logf("silent socket detected after %v (idle timeout %v); live again after %v", detected.Round(time.Millisecond), idle, time.Since(start).Round(time.Millisecond))
	if detected > idle+2*time.Second {
		t.Errorf("silence detected after %v, idle timeout %v", detected, idle)
	}
	if n := e.calls("/v3/feed/market-data-feed/authorize"); n != 2 {
		t.Errorf("%d feed authorizations, want a fresh one for the reconnect", n)
	}
	if cs, err := m.Status(ctx, "alice", broker.Upstox); err != nil || cs[0].State != store.StateConnected {
		t.Errorf("connection after a silent socket: %+v, %v", cs, err)
	}
}
