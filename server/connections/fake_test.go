package connections_test

import (
	"context"
	"crypto/rand"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"go.uber.org/goleak"

	"github.com/feedgate/feedgate/server/auth"
	"github.com/feedgate/feedgate/server/broker"
	"github.com/feedgate/feedgate/server/clock"
	"github.com/feedgate/feedgate/server/connections"
	"github.com/feedgate/feedgate/server/seal"
	"github.com/feedgate/feedgate/server/secret"
	"github.com/feedgate/feedgate/server/store"
	"github.com/feedgate/feedgate/server/store/sqlitestore"
	"github.com/feedgate/feedgate/server/store/storefault"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fakeBroker is a scriptable broker.Client that remembers every token it
// issued and refuses, and judges the gateway: a call that carries a token
// after the broker said it is dead (or after its known expiry, or after its
// logout) is recorded as a violation. Codes are "<account>" or
// "<account>#<anything>"; each exchange issues a new token "tok-N" for the
// account, unless sameToken is set.
type fakeBroker struct {
	kind broker.Kind
	now  func() time.Time

	mu sync.Mutex
	n  int
	// expiry, if set, gives each new token its known expiry.
	expiry func(now time.Time) time.Time
	tokens map[string]*tokenInfo
	// current is each account's newest token.
	current map[string]string
	// violations are calls with a token known dead.
	violations []string
	// calls counts calls by operation.
	calls map[string]int
	// before, if set, runs at the start of every call with its operation
	// and token; a non-nil error is the call's answer.
	before func(op, token string) error
	// exchangeErr, if set, answers the next code exchanges.
	exchangeErr func() error
	// sameToken makes an exchange return the account's current token.
	sameToken bool
	// logoutGate, if set, holds every Logout until it is closed.
	logoutGate chan struct{}
}

type tokenInfo struct {
	account   string
	expiresAt time.Time
	revoked   bool   // at the broker, not yet seen by the gateway
	observed  string // how the gateway learnt it is dead; "" while alive
}

func newFakeBroker(kind broker.Kind, now func() time.Time) *fakeBroker {
	return &fakeBroker{kind: kind, now: now, tokens: map[string]*tokenInfo{}, current: map[string]string{}, calls: map[string]int{}}
}

func (f *fakeBroker) Kind() broker.Kind { return f.kind }
func (f *fakeBroker) LoginURL(state string) string {
	return "https://broker.example/login?state=" + state
}

func (f *fakeBroker) ExchangeCode(ctx context.Context, code string) (broker.Token, error) {
	f.mu.Lock()
	f.calls["exchange"]++
	hook, before := f.exchangeErr, f.before
	f.mu.Unlock()
	if before != nil {
		if err := before("exchange", ""); err != nil {
			return broker.Token{}, err
		}
	}
	if hook != nil {
		if err := hook(); err != nil {
			return broker.Token{}, err
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if code == "bad" {
		return broker.Token{}, &broker.Error{Broker: f.kind, Class: broker.ClassBadInput, Field: "code"}
	}
	account, _, _ := strings.Cut(code, "#")
	if f.sameToken {
		if tok := f.current[account]; tok != "" {
			ti := f.tokens[tok]
			return broker.Token{Access: secret.New(tok), BrokerUserID: account, ExpiresAt: ti.expiresAt}, nil
		}
	}
	f.n++
	tok := fmt.Sprintf("tok-%d", f.n)
	ti := &tokenInfo{account: account}
	if f.expiry != nil {
		ti.expiresAt = f.expiry(f.now())
	}
	f.tokens[tok] = ti
	f.current[account] = tok
	return broker.Token{Access: secret.New(tok), BrokerUserID: account, ExpiresAt: ti.expiresAt}, nil
}

var errUnused = fmt.Errorf("unused")

// use judges one call with token for op and returns the broker's answer.
func (f *fakeBroker) use(op, token string) error {
	f.mu.Lock()
	before := f.before
	f.mu.Unlock()
	if before != nil {
		if err := before(op, token); err != nil {
			return err
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls[op]++
	ti := f.tokens[token]
	switch {
	case ti == nil:
		f.violations = append(f.violations, fmt.Sprintf("%s with a token the broker never issued (%q)", op, token))
		return &broker.Error{Broker: f.kind, Class: broker.ClassAuthDead, HTTPStatus: 401, Op: op}
	case ti.observed != "":
		f.violations = append(f.violations, fmt.Sprintf("%s with %s, known dead (%s)", op, token, ti.observed))
		return &broker.Error{Broker: f.kind, Class: broker.ClassAuthDead, HTTPStatus: 401, Op: op}
	case !ti.expiresAt.IsZero() && !f.now().Before(ti.expiresAt):
		f.violations = append(f.violations, fmt.Sprintf("%s with %s after its known expiry", op, token))
		ti.observed = "expired"
		return &broker.Error{Broker: f.kind, Class: broker.ClassAuthDead, HTTPStatus: 401, Op: op, Expired: true}
	case ti.revoked:
		ti.observed = op + " answered 401"
		return &broker.Error{Broker: f.kind, Class: broker.ClassAuthDead, HTTPStatus: 401, Code: "UDAPI100050", Op: op}
	}
	return nil
}

// revoke ends account's current token at the broker (as the broker's own
// logout or a login elsewhere would); the gateway learns it on its next use.
func (f *fakeBroker) revoke(account string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if ti := f.tokens[f.current[account]]; ti != nil {
		ti.revoked = true
	}
}

// markExpired records that the gateway knows tok expired (its timer fired).
func (f *fakeBroker) markObserved(tok, how string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if ti := f.tokens[tok]; ti != nil && ti.observed == "" {
		ti.observed = how
	}
}

// deadToken reports whether tok is dead at the broker: revoked there, or
// past its expiry.
func (f *fakeBroker) deadToken(tok string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	ti := f.tokens[tok]
	return ti != nil && (ti.revoked || ti.observed != "" || (!ti.expiresAt.IsZero() && !f.now().Before(ti.expiresAt)))
}

// revokeToken ends tok at the broker.
func (f *fakeBroker) revokeToken(tok string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if ti := f.tokens[tok]; ti != nil {
		ti.revoked = true
	}
}

func (f *fakeBroker) violated() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.violations...)
}

func (f *fakeBroker) count(op string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls[op]
}

func (f *fakeBroker) Profile(ctx context.Context, c broker.Credentials) (broker.Profile, error) {
	return broker.Profile{}, f.use("profile", c.Token.Reveal())
}

func (f *fakeBroker) OptionChain(ctx context.Context, c broker.Credentials, _, _ string) (*broker.OptionChain, error) {
	if err := f.use("option chain", c.Token.Reveal()); err != nil {
		return nil, err
	}
	return &broker.OptionChain{}, nil
}

func (f *fakeBroker) Quotes(ctx context.Context, c broker.Credentials, _ []string) (*broker.Quotes, error) {
	if err := f.use("quotes", c.Token.Reveal()); err != nil {
		return nil, err
	}
	return &broker.Quotes{}, nil
}

func (f *fakeBroker) Logout(ctx context.Context, c broker.Credentials) error {
	err := f.use("logout", c.Token.Reveal())
	f.markObserved(c.Token.Reveal(), "logged out")
	f.mu.Lock()
	gate := f.logoutGate
	f.mu.Unlock()
	if gate != nil {
		select {
		case <-gate:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return err
}

func (f *fakeBroker) ValidateInstrumentKey(string) error { return nil }

var dead = &broker.Error{Broker: broker.Upstox, Class: broker.ClassAuthDead, HTTPStatus: 401, Code: "UDAPI100050"}

// tb is what env needs of a *testing.T or a *rapid.T.
type tb interface {
	Helper()
	Fatal(args ...any)
	Fatalf(format string, args ...any)
	Errorf(format string, args ...any)
	Cleanup(func())
}

// env is a Manager on a real SQLite file behind a fault injector, with a
// fake broker and a fake clock.
type env struct {
	t     tb
	m     *connections.Manager
	db    *sqlitestore.Store
	st    *storefault.Store
	fb    *fakeBroker
	clk   clock.Clock // a *clock.Fake, or clock.Real inside a synctest bubble
	path  string
	key   []byte
	alice string
	bob   string
}

// newEnv opens (or reopens, with the same path and key) a database, and
// starts a Manager on it.
func newEnv(t tb, path string, key []byte, fb *fakeBroker, clk clock.Clock) *env {
	t.Helper()
	if path == "" {
		path = filepath.Join(t.(interface{ TempDir() string }).TempDir(), "db")
	}
	if key == nil {
		key = make([]byte, 32)
		_, _ = rand.Read(key)
	}
	if clk == nil {
		clk = clock.NewFake(time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC))
	}
	if fb == nil {
		fb = newFakeBroker(broker.Upstox, clk.Now)
	}
	e := &env{t: t, fb: fb, clk: clk, path: path, key: key}
	e.open()
	return e
}

func (e *env) open() {
	e.t.Helper()
	ctx := context.Background()
	db, err := sqlitestore.Open(ctx, e.path)
	if err != nil {
		e.t.Fatal(err)
	}
	e.db, e.st = db, storefault.New(db)
	s, _ := seal.New(e.key)
	// No background sweep: these tests move the clock by hours and count
	// broker calls.
	m, err := connections.New(connections.Config{Store: e.st, Sealer: s, Brokers: map[broker.Kind]broker.Client{broker.Upstox: e.fb},
		Clock: e.clk, ValidationInterval: 10000 * time.Hour})
	if err != nil {
		e.t.Fatal(err)
	}
	if err := m.Start(ctx); err != nil {
		_ = db.Close()
		e.t.Fatal(err)
	}
	e.m = m
	e.t.Cleanup(e.close)
	for _, name := range []string{"alice", "bob"} {
		u, err := db.UserByName(ctx, name)
		if err != nil {
			u, _, err = auth.CreateUser(ctx, db, name, false, e.clk.Now())
			if err != nil {
				e.t.Fatal(err)
			}
		}
		if name == "alice" {
			e.alice = u.ID
		} else {
			e.bob = u.ID
		}
	}
}

// advance moves time on by d and lets every timer that fell due run: the
// fake clock's Advance, or inside a synctest bubble a sleep on the bubble's
// clock followed by synctest.Wait.
func (e *env) advance(d time.Duration) {
	if f, ok := e.clk.(*clock.Fake); ok {
		f.Advance(d)
		return
	}
	time.Sleep(d)
	synctest.Wait()
}

// close stops the Manager and closes the database (idempotent).
func (e *env) close() {
	if e.m == nil {
		return
	}
	e.m.Close()
	_ = e.db.Close()
	e.m = nil
}

// restart closes everything and opens it again on the same file.
func (e *env) restart() {
	e.close()
	e.open()
}

// login connects user to the broker as account, through LoginURL and
// CompleteLogin.
func (e *env) login(user, account string) (store.Connection, error) {
	ctx := context.Background()
	_, state, _, err := e.m.LoginURL(ctx, user, broker.Upstox)
	if err != nil {
		return store.Connection{}, err
	}
	return e.m.CompleteLogin(ctx, user, broker.Upstox, account+"#"+state[:4], state)
}

func (e *env) mustLogin(user, account string) store.Connection {
	e.t.Helper()
	c, err := e.login(user, account)
	if err != nil {
		e.t.Fatalf("login %s: %v", account, err)
	}
	return c
}

// quotes is a Call that asks the fake broker for quotes.
func (e *env) quotes(ctx context.Context, user string) error {
	return e.m.Call(ctx, user, broker.Upstox, "quotes", func(ctx context.Context, c broker.Credentials) error {
		_, err := e.fb.Quotes(ctx, c, nil)
		return err
	})
}

// dbConn reads the connection straight from the database, past the faults.
func (e *env) dbConn(user string) store.Connection {
	e.t.Helper()
	c, err := e.db.GetConnection(context.Background(), user, broker.Upstox)
	if err != nil {
		e.t.Fatalf("GetConnection: %v", err)
	}
	return c
}

func (e *env) noViolations() {
	e.t.Helper()
	for _, v := range e.fb.violated() {
		e.t.Errorf("broker violation: %s", v)
	}
}
