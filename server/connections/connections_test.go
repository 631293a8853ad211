package connections_test

import (
	"context"
	"crypto/rand"
	"errors"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/feedgate/feedgate/server/auth"
	"github.com/feedgate/feedgate/server/broker"
	"github.com/feedgate/feedgate/server/clock"
	"github.com/feedgate/feedgate/server/connections"
	"github.com/feedgate/feedgate/server/seal"
	"github.com/feedgate/feedgate/server/secret"
	"github.com/feedgate/feedgate/server/store"
	"github.com/feedgate/feedgate/server/store/sqlitestore"
)

// fakeBroker is a broker.Client made of function fields: each test sets
// what it needs. Tokens are "tok-N" for the Nth code exchanged.
type fakeBroker struct {
	kind      broker.Kind
	exchanged atomic.Int64
	expiry    func(now time.Time) time.Time
	profile   func(broker.Credentials) error
	calls     atomic.Int64
	now       func() time.Time
}

func (f *fakeBroker) Kind() broker.Kind { return f.kind }
func (f *fakeBroker) LoginURL(state string) string {
	return "https://broker.example/login?state=" + state
}
func (f *fakeBroker) ExchangeCode(ctx context.Context, code string) (broker.Token, error) {
	if code == "bad" {
		return broker.Token{}, &broker.Error{Broker: f.kind, Class: broker.ClassBadInput, Field: "code"}
	}
	n := f.exchanged.Add(1)
	t := broker.Token{Access: secret.New("tok-" + string(rune('0'+n))), BrokerUserID: "AB12"}
	if f.expiry != nil {
		t.ExpiresAt = f.expiry(f.now())
	}
	return t, nil
}
func (f *fakeBroker) Profile(ctx context.Context, c broker.Credentials) (broker.Profile, error) {
	f.calls.Add(1)
	if f.profile != nil {
		return broker.Profile{}, f.profile(c)
	}
	return broker.Profile{}, nil
}
func (f *fakeBroker) OptionChain(context.Context, broker.Credentials, string, string) (*broker.OptionChain, error) {
	return nil, errors.New("unused")
}
func (f *fakeBroker) Quotes(context.Context, broker.Credentials, []string) (*broker.Quotes, error) {
	return nil, errors.New("unused")
}
func (f *fakeBroker) Logout(context.Context, broker.Credentials) error { return nil }
func (f *fakeBroker) ValidateInstrumentKey(string) error               { return nil }

var dead = &broker.Error{Broker: broker.Upstox, Class: broker.ClassAuthDead, HTTPStatus: 401, Code: "UDAPI100050"}

type env struct {
	m     *connections.Manager
	st    store.Store
	fb    *fakeBroker
	clk   *clock.Fake
	alice string
}

func newEnv(t *testing.T, path string, key []byte, fb *fakeBroker, clk *clock.Fake) *env {
	t.Helper()
	ctx := context.Background()
	if path == "" {
		path = filepath.Join(t.TempDir(), "db")
	}
	st, err := sqlitestore.Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	if key == nil {
		key = make([]byte, 32)
		_, _ = rand.Read(key)
	}
	s, _ := seal.New(key)
	if clk == nil {
		clk = clock.NewFake(time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC))
	}
	if fb == nil {
		fb = &fakeBroker{kind: broker.Upstox}
	}
	fb.now = clk.Now
	// No background sweep: these tests move the clock by hours and count broker calls.
	m, err := connections.New(connections.Config{Store: st, Sealer: s, Brokers: map[broker.Kind]broker.Client{broker.Upstox: fb}, Clock: clk, ValidationInterval: 10000 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Close)
	e := &env{m: m, st: st, fb: fb, clk: clk}
	if u, err := st.UserByName(ctx, "alice"); err == nil {
		e.alice = u.ID
	} else {
		u, _, err := auth.CreateUser(ctx, st, "alice", false, clk.Now())
		if err != nil {
			t.Fatal(err)
		}
		e.alice = u.ID
	}
	return e
}

func (e *env) login(t *testing.T) store.Connection {
	t.Helper()
	_, state, _, err := e.m.LoginURL(e.alice, broker.Upstox)
	if err != nil {
		t.Fatal(err)
	}
	c, err := e.m.CompleteLogin(context.Background(), e.alice, broker.Upstox, "code", state)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestLateDeathOfAnOldTokenLeavesTheNewLoginConnected(t *testing.T) {
	t.Parallel()
	e := newEnv(t, "", nil, nil, nil)
	ctx := context.Background()
	e.login(t)
	old, err := e.m.Session(ctx, e.alice, broker.Upstox)
	if err != nil {
		t.Fatal(err)
	}
	// The user logs in again while a call with the old token is in flight;
	// then that call's 401 arrives.
	e.login(t)
	err = e.m.ReportAuthDead(ctx, old, "option chain", dead)
	var ar *connections.AuthRequiredError
	if !errors.As(err, &ar) {
		t.Fatalf("ReportAuthDead = %v", err)
	}
	cur, err := e.m.Session(ctx, e.alice, broker.Upstox)
	if err != nil {
		t.Fatalf("the new login was disconnected by the old token's 401: %v", err)
	}
	if cur.Generation != 2 || cur.Creds.Token.Reveal() != "tok-2" {
		t.Errorf("session = gen %d", cur.Generation)
	}
	// The current generation's 401 does disconnect.
	if err := e.m.ReportAuthDead(ctx, cur, "quotes", dead); !errors.As(err, &ar) || ar.Reason != store.ReasonTokenRevoked {
		t.Fatalf("ReportAuthDead(current) = %v", err)
	}
	if _, err := e.m.Session(ctx, e.alice, broker.Upstox); !errors.As(err, &ar) {
		t.Errorf("still connected after the current token's 401")
	}
	evs, _ := e.st.Events(ctx, e.alice, broker.Upstox)
	kinds := ""
	for _, ev := range evs {
		kinds += ev.Kind + " "
	}
	if kinds != "login login disconnect " {
		t.Errorf("event log = %q", kinds)
	}
}

func TestCallNeverReachesTheBrokerWhileDisconnected(t *testing.T) {
	t.Parallel()
	e := newEnv(t, "", nil, nil, nil)
	ctx := context.Background()
	var calls atomic.Int64
	call := func() error {
		return e.m.Call(ctx, e.alice, broker.Upstox, "quotes", func(context.Context, broker.Credentials) error {
			calls.Add(1)
			return dead
		})
	}
	var ar *connections.AuthRequiredError
	if err := call(); !errors.As(err, &ar) || ar.Reason != store.ReasonNotConnected {
		t.Fatalf("before login: %v", err)
	}
	if calls.Load() != 0 {
		t.Fatal("called the broker with no token")
	}
	e.login(t)
	var wg sync.WaitGroup
	for i := 0; i < 20; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := call(); !errors.As(err, new(*connections.AuthRequiredError)) {
				t.Errorf("call = %v", err)
			}
		}()
	}
	wg.Wait()
	first := calls.Load()
	for i := 0; i < 20; i++ {
		_ = call()
	}
	if calls.Load() != first {
		t.Errorf("%d calls reached the broker after the token was known dead", calls.Load()-first)
	}
}

func TestExpiryTimerAndRestart(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "db")
	key := make([]byte, 32)
	_, _ = rand.Read(key)
	clk := clock.NewFake(time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC))
	fb := &fakeBroker{kind: broker.Upstox, expiry: func(now time.Time) time.Time { return now.Add(time.Hour) }}
	e := newEnv(t, path, key, fb, clk)
	ctx := context.Background()
	c := e.login(t)
	var changes []connections.Change
	var mu sync.Mutex
	e.m.OnChange(func(ch connections.Change) { mu.Lock(); changes = append(changes, ch); mu.Unlock() })
	clk.Advance(59 * time.Minute)
	if _, err := e.m.Session(ctx, e.alice, broker.Upstox); err != nil {
		t.Fatalf("expired early: %v", err)
	}
	clk.Advance(time.Minute)
	var ar *connections.AuthRequiredError
	if _, err := e.m.Session(ctx, e.alice, broker.Upstox); !errors.As(err, &ar) || ar.Reason != store.ReasonTokenExpired || !ar.DisconnectedAt.Equal(c.ExpiresAt) {
		t.Fatalf("after expiry: %v", err)
	}
	mu.Lock()
	if len(changes) != 1 || changes[0].Conn.Reason != store.ReasonTokenExpired {
		t.Errorf("subscribers saw %+v", changes)
	}
	mu.Unlock()
	if fb.calls.Load() != 0 {
		t.Errorf("expiry called the broker")
	}
	// A restart keeps the reason and time; a token that expired while the
	// gateway was down is expired at start.
	e.m.Close()
	e2 := newEnv(t, path, key, &fakeBroker{kind: broker.Upstox, expiry: fb.expiry}, clk)
	st, _ := e2.m.Status(ctx, e2.alice, broker.Upstox)
	if st[0].Reason != store.ReasonTokenExpired || !st[0].DisconnectedAt.Equal(c.ExpiresAt) {
		t.Errorf("after restart: %+v", st[0])
	}
	e2.login(t)
	e2.m.Close()
	clk.Advance(2 * time.Hour)
	e3 := newEnv(t, path, key, &fakeBroker{kind: broker.Upstox}, clk)
	if _, err := e3.m.Session(ctx, e3.alice, broker.Upstox); !errors.As(err, &ar) || ar.Reason != store.ReasonTokenExpired {
		t.Errorf("a token that expired during downtime: %v", err)
	}
}

func TestValidationCacheAndSweep(t *testing.T) {
	t.Parallel()
	fb := &fakeBroker{kind: broker.Upstox}
	e := newEnv(t, "", nil, fb, nil)
	ctx := context.Background()
	e.login(t)
	k := connections.Key{UserID: e.alice, Broker: broker.Upstox}
	if out, _ := e.m.Validate(ctx, k, false); out != connections.OutcomeValid {
		t.Fatalf("first validation: %v", out)
	}
	if out, _ := e.m.Validate(ctx, k, false); out != connections.OutcomeCached {
		t.Errorf("within the TTL: %v", out)
	}
	e.clk.Advance(5 * time.Minute)
	if out, _ := e.m.Validate(ctx, k, false); out != connections.OutcomeValid {
		t.Errorf("after the TTL: %v", out)
	}
	st := e.m.CacheStats()
	if st.Hits != 1 || st.Misses != 2 || st.Entries != 1 {
		t.Errorf("stats %+v", st)
	}
	fb.profile = func(broker.Credentials) error { return &broker.Error{Class: broker.ClassUpstream, HTTPStatus: 503} }
	if out, _ := e.m.Validate(ctx, k, true); out != connections.OutcomeError {
		t.Errorf("broker down: %v", out)
	}
	if _, err := e.m.Session(ctx, e.alice, broker.Upstox); err != nil {
		t.Error("a failed probe that does not prove the token dead disconnected it")
	}
	fb.profile = func(broker.Credentials) error { return dead }
	res, err := e.m.Sweep(ctx, "", true)
	if err != nil || res.Invalidated != 1 || res.Checked != 1 {
		t.Errorf("sweep = %+v, %v", res, err)
	}
	calls := fb.calls.Load()
	if res, _ := e.m.Sweep(ctx, "", true); res.Checked != 0 || fb.calls.Load() != calls {
		t.Errorf("a disconnected token was probed again: %+v", res)
	}
}

func TestWrongKeyAtStartIsAnError(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "db")
	e := newEnv(t, path, nil, nil, nil)
	e.login(t)
	e.m.Close()
	ctx := context.Background()
	st, _ := sqlitestore.Open(ctx, path)
	defer st.Close()
	other := make([]byte, 32)
	s, _ := seal.New(other)
	m, _ := connections.New(connections.Config{Store: st, Sealer: s, Brokers: map[broker.Kind]broker.Client{broker.Upstox: &fakeBroker{kind: broker.Upstox}}})
	defer m.Close()
	if err := m.Start(ctx); err == nil {
		t.Fatal("Start with the wrong key succeeded")
	}
}

func TestLoginStateBounds(t *testing.T) {
	t.Parallel()
	e := newEnv(t, "", nil, nil, nil)
	ctx := context.Background()
	_, first, _, _ := e.m.LoginURL(e.alice, broker.Upstox)
	for i := 0; i < 20; i++ {
		_, _, _, _ = e.m.LoginURL(e.alice, broker.Upstox)
		e.clk.Advance(time.Second)
	}
	var le *connections.LoginError
	if _, err := e.m.CompleteLogin(ctx, e.alice, broker.Upstox, "code", first); !errors.As(err, &le) {
		t.Errorf("the oldest of too many pending states still works: %v", err)
	}
	_, st, _, _ := e.m.LoginURL(e.alice, broker.Upstox)
	e.clk.Advance(11 * time.Minute)
	if _, err := e.m.CompleteLogin(ctx, e.alice, broker.Upstox, "code", st); !errors.As(err, &le) || le.Field != "state" {
		t.Errorf("expired state: %v", err)
	}
	_, st, _, _ = e.m.LoginURL(e.alice, broker.Upstox)
	if _, err := e.m.CompleteLogin(ctx, e.alice, broker.Upstox, "bad", st); !errors.As(err, &le) || le.Field != "code" {
		t.Errorf("refused code: %v", err)
	}
}
