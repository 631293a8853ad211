package connections_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
	"pgregory.net/rapid"

	feedgatev1 "github.com/feedgate/feedgate/gen/go/feedgate/v1"
	"github.com/feedgate/feedgate/server/broker"
	"github.com/feedgate/feedgate/server/clock"
	"github.com/feedgate/feedgate/server/connections"
	"github.com/feedgate/feedgate/server/feed"
	"github.com/feedgate/feedgate/server/ratelimit"
	"github.com/feedgate/feedgate/server/store"
)

// TestModel is a model-based test of the token lifecycle: random sequences
// of logins, calls that succeed or meet a revoked token (with the caller
// cancelling before or during the call), late 401s of an old generation,
// a 401 racing a new login, feed sockets dropped while the token is dead
// or alive, known expiry on a fake clock, validation sweeps, disconnects,
// a disk that refuses writes, and restarts on the same SQLite file, over
// the real Manager and the real feed hub (with a fake broker and a fake
// feed socket).
//
// After every step it checks what feedgate promises:
//
//  1. no broker call (a unary call, a probe, a feed authorize, a logout)
//     ever carries a token after the broker said it is dead, after its
//     known expiry, or after its logout (the fake broker judges each call);
//  2. DISCONNECTED is in the database before any AuthRequired is returned,
//     or the store is failing and the death is pending in memory;
//  3. an old generation's 401 never disconnects a newer login;
//  4. after a restart the state is the same;
//  5. every stream open at a death gets exactly one AUTH_REQUIRED, and no
//     other stream gets any;
//  6. memory says what the model expects: connected on the generation
//     of the last login, or disconnected;
//
// and, at the end of each run, that no goroutine outlives Close.
//
// go test ./server/connections -run TestModel -rapid.checks=100000 runs it
// longer (about 15 minutes per 10,000 checks on two cores).
func TestModel(t *testing.T) {
	rapid.Check(t, func(rt *rapid.T) {
		ignore := goleak.IgnoreCurrent()
		dir, err := os.MkdirTemp("", "feedgate-model-")
		if err != nil {
			rt.Fatal(err)
		}
		defer os.RemoveAll(dir)
		m := newModel(rt, filepath.Join(dir, "feedgate.db"))
		rt.Repeat(map[string]func(*rapid.T){
			"login":           m.login,
			"loginAsOther":    m.loginAsOther,
			"call":            m.call,
			"revokeAtBroker":  m.revokeAtBroker,
			"captureSession":  m.captureSession,
			"lateDeath":       m.lateDeath,
			"callRacingLogin": m.callRacingLogin,
			"openStream":      m.openStream,
			"closeStream":     m.closeStream,
			"dropFeedSocket":  m.dropFeedSocket,
			"advance":         m.advance,
			"sweep":           m.sweep,
			"disconnect":      m.disconnect,
			"storeFault":      m.storeFault,
			"restart":         m.restart,
			"":                m.check,
		})
		m.shutdown()
		if err := goleak.Find(ignore); err != nil {
			rt.Fatalf("goroutines outlived Close: %v", err)
		}
	})
}

var modelUsers = []string{"alice", "bob"}

// model is the system under test and what the test expects of it.
type model struct {
	t  *rapid.T
	e  *env
	fd *fakeDialer
	h  *feed.Hub

	ids     map[string]string // user name -> id
	account map[string]string // user name -> broker account
	// Expected memory state per user: connected on gen, or not.
	connected map[string]bool
	gen       map[string]int64
	// expires is the known expiry of each user's current token (zero: none).
	expires map[string]time.Time
	// tok is each user's current token, as the broker issued it.
	tok     map[string]string
	stale   map[string]connections.Session
	faulty  bool
	streams []*mstream
}

type mstream struct {
	user string
	st   *feed.Stream
	// dead is set when a death of the user's connection happened while
	// the stream was open (or it opened disconnected): it must get exactly
	// one AUTH_REQUIRED.
	dead bool
	// auths counts the AUTH_REQUIRED events read; end is the error the
	// stream ended with, once read.
	auths int
	end   error
}

// pump reads what s has for its client, without waiting.
func (s *mstream) pump() {
	for s.end == nil {
		ev, ok, err := s.st.Poll()
		switch {
		case err != nil:
			s.end = err
		case !ok:
			return
		case ev.Kind == feed.EventAuthRequired:
			s.auths++
		}
	}
}

// ended reports whether s has ended (reading what it has).
func (s *mstream) ended() bool {
	s.pump()
	return s.end != nil
}

func newModel(rt *rapid.T, path string) *model {
	clk := clock.NewFake(time.Date(2026, 11, 23, 4, 0, 0, 0, time.UTC))
	fb := newFakeBroker(broker.Upstox, clk.Now)
	m := &model{t: rt, ids: map[string]string{}, account: map[string]string{"alice": "A", "bob": "B"},
		connected: map[string]bool{}, gen: map[string]int64{}, expires: map[string]time.Time{}, tok: map[string]string{},
		stale: map[string]connections.Session{}}
	m.e = newEnv(rt, path, nil, fb, clk)
	m.ids["alice"], m.ids["bob"] = m.e.alice, m.e.bob
	m.fd = &fakeDialer{fb: fb, dialed: make(chan struct{}, 1024)}
	m.startHub()
	return m
}

func (m *model) startHub() {
	h, err := feed.New(feed.Config{Conns: m.e.m, Dialers: map[broker.Kind]broker.FeedDialer{broker.Upstox: m.fd},
		Clock: m.e.clk, Jitter: func(time.Duration) time.Duration { return 0 },
		ReconnectBudget: []ratelimit.Window{{N: 1 << 30, Per: time.Second}}})
	if err != nil {
		m.t.Fatal(err)
	}
	m.h = h
}

func (m *model) shutdown() {
	for _, s := range m.streams {
		s.st.Close()
	}
	m.streams = nil
	_ = m.h.Close()
	m.e.close()
}

// ctxFor draws a cancellation mode: none, cancelled before the call, or
// cancelled by the broker call itself (returned by during, to run inside
// the broker call).
func (m *model) ctxFor(t *rapid.T) (ctx context.Context, during func()) {
	ctx, cancel := context.WithCancel(context.Background())
	m.t.Cleanup(cancel)
	switch rapid.IntRange(0, 2).Draw(t, "cancel") {
	case 1:
		cancel()
	case 2:
		return ctx, cancel
	}
	return ctx, func() {}
}

// during arranges for hook to run at the start of the next broker call.
func (m *model) during(hook func()) func() {
	var once sync.Once
	m.e.fb.mu.Lock()
	m.e.fb.before = func(string, string) error { once.Do(hook); return nil }
	m.e.fb.mu.Unlock()
	return func() {
		m.e.fb.mu.Lock()
		m.e.fb.before = nil
		m.e.fb.mu.Unlock()
	}
}

func (m *model) user(t *rapid.T) string { return rapid.SampledFrom(modelUsers).Draw(t, "user") }

// died records that user's connection was disconnected: every open stream
// of the user must now be told.
func (m *model) died(user string) {
	m.connected[user] = false
	for _, s := range m.streams {
		if s.user == user {
			s.dead = true
		}
	}
}

// checkAuthRequired checks invariant 2 for an AuthRequired just returned.
func (m *model) checkAuthRequired(user string) {
	pending := m.e.m.Pending()
	c, err := m.e.db.GetConnection(context.Background(), m.ids[user], broker.Upstox)
	if err == nil && c.State == store.StateConnected && !(m.faulty || pending > 0) {
		m.t.Fatalf("%s: AuthRequired returned while the database still says CONNECTED (gen %d) and no death is pending", user, c.TokenGeneration)
	}
}

func (m *model) setExpiry(t *rapid.T, user string) {
	in := rapid.SampledFrom([]time.Duration{0, 30 * time.Minute, 2 * time.Hour, 23 * time.Hour}).Draw(t, "expires_in")
	m.e.fb.mu.Lock()
	defer m.e.fb.mu.Unlock()
	if in == 0 {
		m.e.fb.expiry = nil
		return
	}
	m.e.fb.expiry = func(now time.Time) time.Time { return now.Add(in) }
}

func (m *model) login(t *rapid.T) {
	user := m.user(t)
	m.setExpiry(t, user)
	ctx, during := m.ctxFor(t)
	done := m.during(during)
	_, state, _, err := m.e.m.LoginURL(ctx, m.ids[user], broker.Upstox)
	var c store.Connection
	if err == nil {
		c, err = m.e.m.CompleteLogin(ctx, m.ids[user], broker.Upstox, m.account[user]+"#"+state[:4], state)
	}
	done()
	if err != nil {
		if !m.faulty && ctx.Err() == nil {
			t.Fatalf("login %s: %v", user, err)
		}
		return
	}
	if m.faulty {
		t.Fatalf("login %s succeeded on a store that refuses writes", user)
	}
	if c.State != store.StateConnected || c.TokenGeneration <= m.gen[user] {
		t.Fatalf("login %s: %+v after generation %d", user, c, m.gen[user])
	}
	m.connectedAs(user, c)
}

// loginAsOther tries to attach the other user's broker account.
func (m *model) loginAsOther(t *rapid.T) {
	user := m.user(t)
	other := "bob"
	if user == "bob" {
		other = "alice"
	}
	ctx := context.Background()
	_, state, _, err := m.e.m.LoginURL(ctx, m.ids[user], broker.Upstox)
	if err != nil {
		if !m.faulty {
			t.Fatal(err)
		}
		return
	}
	c, err := m.e.m.CompleteLogin(ctx, m.ids[user], broker.Upstox, m.account[other]+"#x", state)
	dbOther, _ := m.e.db.GetConnection(ctx, m.ids[other], broker.Upstox)
	var ai *connections.AccountInUseError
	switch {
	case err == nil && dbOther.State == store.StateConnected:
		t.Fatalf("%s attached %s's connected broker account", user, other)
	case err == nil:
		// The account was free: it is user's now, and other can no longer
		// take it while user holds it.
		m.connectedAs(user, c)
		m.account[user], m.account[other] = m.account[other], m.account[user]
	case errors.As(err, &ai):
		if dbOther.State != store.StateConnected {
			t.Fatalf("refused as in use while %s's row is %s", other, dbOther.State)
		}
	case !m.faulty:
		t.Fatalf("login as %s's account: %v", other, err)
	}
}

func (m *model) call(t *rapid.T) {
	user := m.user(t)
	ctx, during := m.ctxFor(t)
	done := m.during(during)
	before := m.e.fb.count("quotes")
	err := m.e.quotes(ctx, m.ids[user])
	done()
	if _, ok := connections.AsAuthRequired(err); ok {
		m.checkAuthRequired(user)
		if m.connected[user] {
			if !m.e.fb.deadToken(m.tok[user]) {
				t.Fatalf("%s: AuthRequired for a live token: %v", user, err)
			}
			m.died(user)
		} else if n := m.e.fb.count("quotes"); n != before {
			t.Fatalf("%s: a disconnected connection called the broker", user)
		}
		return
	}
	switch {
	case !m.connected[user]:
		t.Fatalf("%s: a call on a disconnected connection answered %v", user, err)
	case err != nil && ctx.Err() == nil:
		t.Fatalf("%s: call: %v", user, err)
	}
}

func (m *model) revokeAtBroker(t *rapid.T) {
	m.e.fb.revokeToken(m.tok[m.user(t)])
}

// connectedAs records a successful login of user.
func (m *model) connectedAs(user string, c store.Connection) {
	m.gen[user], m.connected[user], m.expires[user] = c.TokenGeneration, true, c.ExpiresAt
	s, err := m.e.m.Session(context.Background(), m.ids[user], broker.Upstox)
	if err != nil || s.Generation != c.TokenGeneration {
		m.t.Fatalf("%s: no session right after login (gen %d): %v", user, c.TokenGeneration, err)
	}
	m.tok[user] = s.Creds.Token.Reveal()
}

func (m *model) captureSession(t *rapid.T) {
	user := m.user(t)
	if s, err := m.e.m.Session(context.Background(), m.ids[user], broker.Upstox); err == nil {
		m.stale[user] = s
	}
}

// lateDeath reports a 401 for a captured session of an older generation.
func (m *model) lateDeath(t *rapid.T) {
	user := m.user(t)
	s, ok := m.stale[user]
	if !ok || s.Generation >= m.gen[user] {
		t.Skip("no older session")
	}
	m.e.fb.markObserved(s.Creds.Token.Reveal(), "a late 401")
	err := m.e.m.ReportAuthDead(context.Background(), s, "late call", dead)
	if m.connected[user] && err != nil {
		t.Fatalf("%s: an old generation's 401 answered %v while a newer login is connected", user, err)
	}
	if m.connected[user] {
		if cur, err := m.e.m.Session(context.Background(), m.ids[user], broker.Upstox); err != nil || cur.Generation != m.gen[user] {
			t.Fatalf("%s: an old generation's 401 harmed the newer login: %v", user, err)
		}
	}
}

// callRacingLogin is a call whose broker answer (401 for the token it
// carried) arrives after the user logged in again: Call must retry once
// with the new token and return that result.
func (m *model) callRacingLogin(t *rapid.T) {
	user := m.user(t)
	if !m.connected[user] || m.faulty || m.e.fb.deadToken(m.tok[user]) {
		t.Skip("needs a live connection and a working store")
	}
	m.setExpiry(t, user)
	first := true
	err := m.e.m.Call(context.Background(), m.ids[user], broker.Upstox, "quotes", func(ctx context.Context, c broker.Credentials) error {
		if first {
			first = false
			if _, err := m.e.login(m.ids[user], m.account[user]); err != nil {
				t.Fatalf("login during the call: %v", err)
			}
			m.e.fb.markObserved(c.Token.Reveal(), "401 after a newer login")
			return dead
		}
		_, err := m.e.fb.Quotes(ctx, c, nil)
		return err
	})
	if err != nil {
		t.Fatalf("%s: a late 401 racing a login was not retried with the new token: %v", user, err)
	}
	c, _ := m.e.m.Status(context.Background(), m.ids[user], broker.Upstox)
	m.connectedAs(user, c[0])
}

func (m *model) openStream(t *rapid.T) {
	user := m.user(t)
	dialsBefore := m.fd.count()
	st, err := m.h.Subscribe(context.Background(), m.ids[user], broker.Upstox, []string{"NSE_INDEX|Nifty 50"}, broker.ModeLTPC)
	if err != nil {
		t.Fatalf("Subscribe: %v", err)
	}
	s := &mstream{user: user, st: st, dead: !m.connected[user]}
	m.streams = append(m.streams, s)
	if s.dead {
		return
	}
	// Wait for the upstream to be live (a new one dials), or for the dial
	// to find the token dead.
	waitFor(t, "the stream's upstream", func() bool {
		state, _ := st.Upstream()
		return state == feedgatev1.UpstreamState_UPSTREAM_STATE_LIVE || s.ended()
	})
	if s.ended() {
		if m.fd.count() == dialsBefore || !m.e.fb.deadToken(m.tok[user]) {
			t.Fatalf("%s: a new stream ended without a dial finding the token dead", user)
		}
		m.checkAuthRequired(user)
		m.died(user)
	}
}

func (m *model) closeStream(t *rapid.T) {
	if len(m.streams) == 0 {
		t.Skip("no stream")
	}
	i := rapid.IntRange(0, len(m.streams)-1).Draw(t, "stream")
	s := m.streams[i]
	if s.dead {
		t.Skip("the stream must first be told") // check does, then drops it
	}
	s.st.Close()
	m.streams = append(m.streams[:i], m.streams[i+1:]...)
}

// dropFeedSocket breaks the user's live feed socket: the upstream dials
// again with the current token, and finds it dead if the broker revoked it.
func (m *model) dropFeedSocket(t *rapid.T) {
	user := m.user(t)
	var live *mstream
	for _, s := range m.streams {
		if s.user == user && !s.dead {
			live = s
		}
	}
	if live == nil {
		t.Skip("no live stream")
	}
	before := m.fd.count()
	if !m.fd.drop(m.ids[user]) {
		t.Skip("no socket to drop")
	}
	waitFor(t, "the redial", func() bool { return m.fd.count() > before || live.ended() })
	waitFor(t, "the upstream", func() bool {
		state, _ := live.st.Upstream()
		return state == feedgatev1.UpstreamState_UPSTREAM_STATE_LIVE || live.ended()
	})
	if live.ended() {
		if !m.e.fb.deadToken(m.tok[user]) {
			t.Fatalf("%s: the feed ended although the token is alive", user)
		}
		m.checkAuthRequired(user)
		m.died(user)
	}
}

func (m *model) advance(t *rapid.T) {
	d := rapid.SampledFrom([]time.Duration{time.Second, 30 * time.Second, 20 * time.Minute, 3 * time.Hour, 20 * time.Hour}).Draw(t, "advance")
	m.e.clk.(*clock.Fake).Advance(d)
	now := m.e.clk.Now()
	for _, user := range modelUsers {
		if m.connected[user] && !m.expires[user].IsZero() && !now.Before(m.expires[user]) {
			m.died(user)
		}
	}
}

func (m *model) sweep(t *rapid.T) {
	ctx, during := m.ctxFor(t)
	done := m.during(during)
	_, _ = m.e.m.Sweep(ctx, "", true)
	done()
	for _, user := range modelUsers {
		if !m.connected[user] {
			continue
		}
		if _, err := m.e.m.Session(context.Background(), m.ids[user], broker.Upstox); err != nil {
			if !m.e.fb.deadToken(m.tok[user]) {
				t.Fatalf("%s: the sweep disconnected a live token", user)
			}
			m.checkAuthRequired(user)
			m.died(user)
		}
	}
}

func (m *model) disconnect(t *rapid.T) {
	user := m.user(t)
	ctx, _ := m.ctxFor(t)
	_, _, err := m.e.m.Disconnect(ctx, m.ids[user], broker.Upstox)
	switch {
	case err == nil && m.connected[user]:
		m.died(user)
	case err != nil && !m.faulty && ctx.Err() == nil:
		t.Fatalf("disconnect %s: %v", user, err)
	}
}

func (m *model) storeFault(t *rapid.T) {
	m.faulty = rapid.Bool().Draw(t, "faulty")
	m.e.st.FailWrites(m.faulty)
}

// restart heals the disk (so Close can flush pending deaths), stops the
// hub and the manager, reopens the database and starts them again: the
// state must be the same.
func (m *model) restart(t *rapid.T) {
	m.drainStreams()
	m.faulty = false
	m.e.st.FailWrites(false)
	before := m.status()
	for _, s := range m.streams {
		s.st.Close()
	}
	m.streams = nil
	_ = m.h.Close()
	m.e.restart()
	m.startHub()
	if after := m.status(); after != before {
		t.Fatalf("after a restart: %s, before: %s", after, before)
	}
}

func (m *model) status() string {
	var out string
	for _, user := range modelUsers {
		cs, err := m.e.m.Status(context.Background(), m.ids[user], broker.Upstox)
		if err != nil {
			m.t.Fatal(err)
		}
		c := cs[0]
		out += fmt.Sprintf("%s=%s/%s/gen%d ", user, c.State, c.Reason, c.TokenGeneration)
	}
	return out
}

// drainStreams checks invariant 5: each stream that must be told gets one
// AUTH_REQUIRED and then ends with the same error, and is then dropped;
// no other stream gets any.
func (m *model) drainStreams() {
	kept := m.streams[:0]
	for _, s := range m.streams {
		if !s.dead {
			s.pump()
			if s.auths > 0 || s.end != nil {
				m.t.Fatalf("%s: a stream was told AUTH_REQUIRED (%d, end %v) without a death", s.user, s.auths, s.end)
			}
			kept = append(kept, s)
			continue
		}
		waitFor(m.t, "AUTH_REQUIRED on a stream", s.ended)
		if _, ok := connections.AsAuthRequired(s.end); !ok {
			m.t.Fatalf("%s: the stream ended with %v, want AuthRequired", s.user, s.end)
		}
		if s.auths != 1 {
			m.t.Fatalf("%s: %d AUTH_REQUIRED on one stream, want exactly 1", s.user, s.auths)
		}
		s.st.Close()
	}
	m.streams = kept
}

func (m *model) check(t *rapid.T) {
	for _, v := range m.e.fb.violated() {
		t.Fatalf("broker: %s", v)
	}
	for _, user := range modelUsers {
		s, err := m.e.m.Session(context.Background(), m.ids[user], broker.Upstox)
		switch {
		case m.connected[user] && err != nil:
			t.Fatalf("%s: expected connected on generation %d, got %v", user, m.gen[user], err)
		case m.connected[user] && s.Generation != m.gen[user]:
			t.Fatalf("%s: generation %d, expected %d", user, s.Generation, m.gen[user])
		case !m.connected[user] && err == nil:
			t.Fatalf("%s: expected disconnected, has a session on generation %d", user, s.Generation)
		}
	}
	m.drainStreams()
}

// waitFor polls cond until it holds (5 s at most).
func waitFor(t *rapid.T, what string, cond func() bool) {
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(100 * time.Microsecond)
	}
}

// fakeDialer is the fake broker's feed: a dial is a broker call with the
// token (judged by the fake broker), and a socket stays open until
// dropped or closed.
type fakeDialer struct {
	fb     *fakeBroker
	dialed chan struct{}

	mu    sync.Mutex
	n     int
	conns map[string]*fakeFeedConn // by user id
}

func (d *fakeDialer) FeedLimits() broker.FeedLimits { return broker.UpstoxFeedLimits }

func (d *fakeDialer) DialFeed(ctx context.Context, c broker.Credentials, _ broker.FeedOptions) (broker.FeedConn, error) {
	err := d.fb.use("feed authorize", c.Token.Reveal())
	d.mu.Lock()
	defer d.mu.Unlock()
	d.n++
	if err != nil {
		return nil, err
	}
	fc := &fakeFeedConn{dropped: make(chan struct{}), closed: make(chan struct{})}
	if d.conns == nil {
		d.conns = map[string]*fakeFeedConn{}
	}
	d.conns[c.UserID] = fc
	return fc, nil
}

func (d *fakeDialer) count() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.n
}

// drop breaks the user's socket, if one is open.
func (d *fakeDialer) drop(userID string) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	fc := d.conns[userID]
	if fc == nil {
		return false
	}
	delete(d.conns, userID)
	fc.once.Do(func() { close(fc.dropped) })
	return true
}

type fakeFeedConn struct {
	dropped, closed chan struct{}
	once, closeOnce sync.Once
}

func (c *fakeFeedConn) Subscribe(context.Context, []string, broker.FeedMode) error  { return nil }
func (c *fakeFeedConn) Unsubscribe(context.Context, []string) error                 { return nil }
func (c *fakeFeedConn) ChangeMode(context.Context, []string, broker.FeedMode) error { return nil }
func (c *fakeFeedConn) Next(ctx context.Context) ([]broker.Tick, error) {
	select {
	case <-c.dropped:
		return nil, &broker.Error{Broker: broker.Upstox, Class: broker.ClassUpstream, Message: "socket dropped"}
	case <-c.closed:
		return nil, &broker.Error{Broker: broker.Upstox, Class: broker.ClassUpstream, Message: "closed"}
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}
func (c *fakeFeedConn) Close() error {
	c.closeOnce.Do(func() { close(c.closed) })
	return nil
}
