package feed

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/feedgate/feedgate/server/broker"
	"github.com/feedgate/feedgate/server/connections"
	"github.com/feedgate/feedgate/server/secret"
	"github.com/feedgate/feedgate/server/store"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// checkLeaks fails the test if goroutines started during it outlive it
// (goleak, ignoring those running before it). Call it first, so its
// cleanup runs after every other.
func checkLeaks(t testing.TB) {
	ignore := goleak.IgnoreCurrent()
	t.Cleanup(func() {
		if tr, ok := http.DefaultTransport.(*http.Transport); ok {
			tr.CloseIdleConnections()
		}
		goleak.VerifyNone(t, ignore)
	})
}

// fakeSessions is an in-memory connections manager.
type fakeSessions struct {
	mu      sync.Mutex
	hooks   []func(connections.Change)
	dead    map[connections.Key]*connections.AuthRequiredError
	gen     int64
	reports int
	// sessions counts Session calls.
	sessions int
	// liar, when set, makes ReportAuthDead claim a newer login replaced
	// the token while Session keeps handing out the same generation: a
	// manager that cannot record the death.
	liar bool
}

func newFakeSessions() *fakeSessions {
	return &fakeSessions{dead: map[connections.Key]*connections.AuthRequiredError{}, gen: 1}
}

func (f *fakeSessions) Session(_ context.Context, userID string, b broker.Kind) (connections.Session, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.sessions++
	k := connections.Key{UserID: userID, Broker: b}
	if ae := f.dead[k]; ae != nil {
		return connections.Session{}, ae
	}
	return connections.Session{Key: k, Creds: broker.Credentials{UserID: userID, Token: secret.New("tok")}, Generation: f.gen}, nil
}

func (f *fakeSessions) ReportAuthDead(_ context.Context, s connections.Session, _ string, _ error) error {
	f.mu.Lock()
	f.reports++
	liar := f.liar
	f.mu.Unlock()
	if liar {
		return nil
	}
	return f.disconnect(s.Key, store.ReasonTokenRevoked)
}

func (f *fakeSessions) AuthRequired(_ context.Context, k connections.Key) (*connections.AuthRequiredError, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.dead[k], nil
}

func (f *fakeSessions) OnChange(h func(connections.Change)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.hooks = append(f.hooks, h)
}

// disconnect marks k disconnected and publishes the change, as the manager does.
func (f *fakeSessions) disconnect(k connections.Key, r store.Reason) *connections.AuthRequiredError {
	f.mu.Lock()
	ae := &connections.AuthRequiredError{Broker: k.Broker, Reason: r, Message: "log in again"}
	f.dead[k] = ae
	hooks := f.hooks
	f.mu.Unlock()
	for _, h := range hooks {
		h(connections.Change{Key: k, Conn: store.Connection{UserID: k.UserID, Broker: k.Broker, State: store.StateDisconnected, Reason: r}})
	}
	return ae
}

// fakeDialer hands out fakeConns; dial, when set, decides each dial.
type fakeDialer struct {
	limits broker.FeedLimits
	dial   func(n int) error

	mu    sync.Mutex
	n     int
	conns []*fakeConn
	ready chan *fakeConn
}

func newFakeDialer() *fakeDialer {
	return &fakeDialer{limits: broker.UpstoxFeedLimits, ready: make(chan *fakeConn, 100)}
}

func (d *fakeDialer) FeedLimits() broker.FeedLimits { return d.limits }

func (d *fakeDialer) DialFeed(ctx context.Context, _ broker.Credentials, _ broker.FeedOptions) (broker.FeedConn, error) {
	d.mu.Lock()
	d.n++
	n := d.n
	d.mu.Unlock()
	if d.dial != nil {
		if err := d.dial(n); err != nil {
			return nil, err
		}
	}
	c := &fakeConn{subs: map[string]broker.FeedMode{}, batches: make(chan []broker.Tick, 1024), closed: make(chan struct{})}
	d.mu.Lock()
	d.conns = append(d.conns, c)
	d.mu.Unlock()
	d.ready <- c
	return c, nil
}

func (d *fakeDialer) dials() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.n
}

// fakeConn records subscriptions and delivers what the test pushes.
type fakeConn struct {
	mu      sync.Mutex
	subs    map[string]broker.FeedMode
	log     []string
	batches chan []broker.Tick
	once    sync.Once
	closed  chan struct{}
	fail    chan error
}

func (c *fakeConn) record(op string, keys []string, m broker.FeedMode) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, k := range keys {
		switch op {
		case "unsub":
			delete(c.subs, k)
		default:
			c.subs[k] = m
		}
	}
	c.log = append(c.log, fmt.Sprintf("%s %s %s", op, m, strings.Join(keys, ",")))
}

func (c *fakeConn) Subscribe(_ context.Context, keys []string, m broker.FeedMode) error {
	c.record("sub", keys, m)
	return nil
}
func (c *fakeConn) Unsubscribe(_ context.Context, keys []string) error {
	c.record("unsub", keys, 0)
	return nil
}
func (c *fakeConn) ChangeMode(_ context.Context, keys []string, m broker.FeedMode) error {
	c.record("change", keys, m)
	return nil
}

func (c *fakeConn) Next(ctx context.Context) ([]broker.Tick, error) {
	select {
	case b := <-c.batches:
		return b, nil
	case <-c.closed:
		return nil, &broker.Error{Class: broker.ClassUpstream, Message: "closed"}
	case <-ctx.Done():
		return nil, &broker.Error{Class: broker.ClassUpstream, Message: "canceled"}
	}
}

func (c *fakeConn) Close() error {
	c.once.Do(func() { close(c.closed) })
	return nil
}

func (c *fakeConn) isClosed() bool {
	select {
	case <-c.closed:
		return true
	default:
		return false
	}
}

func (c *fakeConn) snapshot() map[string]broker.FeedMode {
	c.mu.Lock()
	defer c.mu.Unlock()
	m := make(map[string]broker.FeedMode, len(c.subs))
	for k, v := range c.subs {
		m[k] = v
	}
	return m
}

// eventually polls cond until it holds or 5 s pass.
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// nextWithin calls st.Next with a timeout.
func nextWithin(t testing.TB, st *Stream, d time.Duration) (Event, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	return st.Next(ctx)
}

// nextTicks skips status events and returns the next tick batch.
func nextTicks(t testing.TB, st *Stream) Event {
	t.Helper()
	for {
		ev, err := nextWithin(t, st, 5*time.Second)
		if err != nil {
			t.Fatalf("Next: %v", err)
		}
		if ev.Kind == EventTicks {
			return ev
		}
	}
}

func ticks(keys ...string) []broker.Tick {
	out := make([]broker.Tick, len(keys))
	for i, k := range keys {
		out[i] = broker.Tick{InstrumentKey: k, LTP: float64(i + 1), Mode: broker.ModeFull, HasGreeks: true, Greeks: broker.Greeks{Delta: 0.5}, Volume: 7}
	}
	return out
}
