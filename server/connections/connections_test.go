package connections_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/feedgate/feedgate/server/broker"
	"github.com/feedgate/feedgate/server/clock"
	"github.com/feedgate/feedgate/server/connections"
	"github.com/feedgate/feedgate/server/seal"
	"github.com/feedgate/feedgate/server/store"
	"github.com/feedgate/feedgate/server/store/sqlitestore"
)

func asAuthRequired(t testing.TB, err error) *connections.AuthRequiredError {
	t.Helper()
	ar, ok := connections.AsAuthRequired(err)
	if !ok {
		t.Fatalf("err = %v (%T), want *AuthRequiredError", err, err)
	}
	return ar
}

// A late 401 for an old token, reported after the user logged in again,
// leaves the new login connected: ReportAuthDead says "retry" (nil).
func TestLateDeathOfAnOldTokenLeavesTheNewLoginConnected(t *testing.T) {
	t.Parallel()
	e := newEnv(t, "", nil, nil, nil)
	ctx := context.Background()
	e.mustLogin(e.alice, "A")
	old, err := e.m.Session(ctx, e.alice, broker.Upstox)
	if err != nil {
		t.Fatal(err)
	}
	e.mustLogin(e.alice, "A")
	if err := e.m.ReportAuthDead(ctx, old, "option chain", dead); err != nil {
		t.Fatalf("ReportAuthDead(old generation) = %v, want nil (a newer login is active)", err)
	}
	cur, err := e.m.Session(ctx, e.alice, broker.Upstox)
	if err != nil {
		t.Fatalf("the new login was disconnected by the old token's 401: %v", err)
	}
	if cur.Generation != 2 || cur.Creds.Token.Reveal() != "tok-2" {
		t.Errorf("session = gen %d", cur.Generation)
	}
	// The current generation's 401 does disconnect.
	if ar := asAuthRequired(t, e.m.ReportAuthDead(ctx, cur, "quotes", dead)); ar.Reason != store.ReasonTokenRevoked {
		t.Fatalf("ReportAuthDead(current) reason %v", ar.Reason)
	}
	if _, err := e.m.Session(ctx, e.alice, broker.Upstox); err == nil {
		t.Errorf("still connected after the current token's 401")
	}
	evs, _ := e.db.Events(ctx, e.alice, broker.Upstox)
	kinds := ""
	for _, ev := range evs {
		kinds += ev.Kind + " "
	}
	if kinds != "login login disconnect " {
		t.Errorf("event log = %q", kinds)
	}
}

// Regression (issue 13, defect 4): a call whose 401 for the old token
// arrives after a new login is retried once, transparently, with the new
// session, and its result returned; before, the caller got AuthRequired
// although the new login was healthy.
func TestLateDeathOfAnOldTokenRetriesWithTheNewLogin(t *testing.T) {
	t.Parallel()
	e := newEnv(t, "", nil, nil, nil)
	e.mustLogin(e.alice, "A")
	var tokens []string
	err := e.m.Call(context.Background(), e.alice, broker.Upstox, "quotes", func(ctx context.Context, c broker.Credentials) error {
		tokens = append(tokens, c.Token.Reveal())
		if len(tokens) == 1 {
			// The user logs in again while this call is at the broker;
			// then the broker answers 401 for the old token.
			e.mustLogin(e.alice, "A")
			return dead
		}
		_, err := e.fb.Quotes(ctx, c, nil)
		return err
	})
	if err != nil {
		t.Fatalf("Call = %v, want the retry's success", err)
	}
	if len(tokens) != 2 || tokens[0] != "tok-1" || tokens[1] != "tok-2" {
		t.Errorf("calls carried %v, want tok-1 then tok-2", tokens)
	}
	if c := e.dbConn(e.alice); c.State != store.StateConnected || c.TokenGeneration != 2 {
		t.Errorf("connection after the late 401: %+v", c)
	}
	e.noViolations()
}

func TestCallNeverReachesTheBrokerWhileDisconnected(t *testing.T) {
	t.Parallel()
	e := newEnv(t, "", nil, nil, nil)
	ctx := context.Background()
	if ar := asAuthRequired(t, e.quotes(ctx, e.alice)); ar.Reason != store.ReasonNotConnected {
		t.Fatalf("before login: %v", ar.Reason)
	}
	if e.fb.count("quotes") != 0 {
		t.Fatal("called the broker with no token")
	}
	e.mustLogin(e.alice, "A")
	e.fb.revoke("A")
	var wg sync.WaitGroup
	for range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, ok := connections.AsAuthRequired(e.quotes(ctx, e.alice)); !ok {
				t.Errorf("a call during the revocation did not get AuthRequired")
			}
		}()
	}
	wg.Wait()
	first := e.fb.count("quotes")
	for range 20 {
		_ = e.quotes(ctx, e.alice)
	}
	if n := e.fb.count("quotes"); n != first {
		t.Errorf("%d calls reached the broker after the token was known dead", n-first)
	}
	e.noViolations()
}

// Regression (issue 13, defect 1): a 401 that arrives just as the caller
// cancels is recorded all the same. Before, the invalidation was written
// with the request's context: BeginTx failed, the connection stayed
// CONNECTED with the dead token, the caller got a context error (Internal
// at the API), and the next call sent the dead token again.
func TestDeathIsRecordedWhenTheCallerCancels(t *testing.T) {
	t.Parallel()
	e := newEnv(t, "", nil, nil, nil)
	e.mustLogin(e.alice, "A")
	e.fb.revoke("A")
	var changes atomic.Int64
	e.m.OnChange(func(ch connections.Change) {
		if ch.Conn.State == store.StateDisconnected {
			changes.Add(1)
		}
	})
	ctx, cancel := context.WithCancel(context.Background())
	err := e.m.Call(ctx, e.alice, broker.Upstox, "quotes", func(_ context.Context, c broker.Credentials) error {
		_, err := e.fb.Quotes(ctx, c, nil)
		cancel() // the client gives up as the 401 arrives
		return err
	})
	if ar := asAuthRequired(t, err); ar.Reason != store.ReasonTokenRevoked {
		t.Errorf("reason %v", ar.Reason)
	}
	if c := e.dbConn(e.alice); c.State != store.StateDisconnected || c.SealedToken != nil {
		t.Errorf("database after the cancelled call's 401: %+v", c)
	}
	if changes.Load() != 1 {
		t.Errorf("%d disconnections published, want 1 (streams must be told)", changes.Load())
	}
	_ = e.quotes(context.Background(), e.alice)
	if n := e.fb.count("quotes"); n != 1 {
		t.Errorf("%d quote calls reached the broker, want 1", n)
	}
	e.noViolations()
}

// Regression (issue 13, defect 1): with the disk refusing writes, a death
// is still fail-closed: the caller gets AuthRequired (not an internal
// error), memory refuses the token at once, streams are told, and the
// write is retried with backoff until the store takes it. Runs in a
// synctest bubble: the persister's backoff is real timers on fake time.
func TestDeathWhileTheStoreFails(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		e := newEnv(t, "", nil, nil, clock.Real{})
		ctx := context.Background()
		e.mustLogin(e.alice, "A")
		e.fb.revoke("A")
		var published atomic.Int64
		e.m.OnChange(func(ch connections.Change) {
			if ch.Conn.State == store.StateDisconnected {
				published.Add(1)
			}
		})
		e.st.FailWrites(true)
		if ar := asAuthRequired(t, e.quotes(ctx, e.alice)); ar.Reason != store.ReasonTokenRevoked {
			t.Errorf("reason %v", ar.Reason)
		}
		if published.Load() != 1 {
			t.Errorf("%d disconnections published while the store fails, want 1", published.Load())
		}
		if e.m.Pending() != 1 {
			t.Errorf("pending deaths = %d, want 1", e.m.Pending())
		}
		if c := e.dbConn(e.alice); c.State != store.StateConnected {
			t.Fatalf("the faulty store took the write: %+v", c)
		}
		for range 5 {
			if _, ok := connections.AsAuthRequired(e.quotes(ctx, e.alice)); !ok {
				t.Error("a call while the death is pending was not refused")
			}
			if _, err := e.m.Validate(ctx, connections.Key{UserID: e.alice, Broker: broker.Upstox}, true); err != nil {
				t.Error(err)
			}
		}
		if n := e.fb.count("quotes") + e.fb.count("profile"); n != 1 {
			t.Errorf("%d broker calls, want the one 401", n)
		}
		// The persister retries with backoff (250 ms, doubling to 30 s).
		before := e.st.Refused()
		e.advance(2 * time.Second)
		if tries := e.st.Refused() - before; tries < 2 || tries > 4 {
			t.Errorf("%d retries in 2 s of backoff from 250 ms", tries)
		}
		if c := e.dbConn(e.alice); c.State != store.StateConnected {
			t.Fatalf("written while the store still fails: %+v", c)
		}
		e.st.FailWrites(false)
		e.advance(30 * time.Second)
		if e.m.Pending() != 0 {
			t.Fatal("the persister did not write the death once the store recovered")
		}
		if c := e.dbConn(e.alice); c.State != store.StateDisconnected || c.Reason != store.ReasonTokenRevoked || c.SealedToken != nil {
			t.Errorf("after the store recovered: %+v", c)
		}
		if published.Load() != 1 {
			t.Errorf("the late write published again: %d", published.Load())
		}
		e.noViolations()
		e.close()
	})
}

// Regression (issue 13, defect 6): Close stops the expiry timers and waits
// for one already running; before, a timer's callback could write to a
// store the caller was closing.
func TestCloseWaitsForAnExpiryInProgress(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		fb := newFakeBroker(broker.Upstox, time.Now)
		fb.expiry = func(now time.Time) time.Time { return now.Add(time.Hour) }
		e := newEnv(t, "", nil, fb, clock.Real{})
		e.mustLogin(e.alice, "A")
		gate := make(chan struct{})
		e.m.OnChange(func(ch connections.Change) {
			if ch.Conn.Reason == store.ReasonTokenExpired {
				<-gate // the expiry is in progress
			}
		})
		e.advance(time.Hour)
		closed := make(chan struct{})
		go func() {
			e.m.Close()
			close(closed)
		}()
		synctest.Wait()
		select {
		case <-closed:
			t.Fatal("Close returned while an expiry callback was still running")
		default:
		}
		close(gate)
		<-closed
		if c := e.dbConn(e.alice); c.State != store.StateDisconnected || c.Reason != store.ReasonTokenExpired {
			t.Errorf("after the expiry: %+v", c)
		}
		e.close()
	})
}

// The background sweep runs every ValidationInterval on the manager's
// clock and disconnects a token the broker revoked, with one probe.
func TestSweepLoopFindsARevokedToken(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		ctx := context.Background()
		fb := newFakeBroker(broker.Upstox, time.Now)
		e := newEnv(t, "", nil, fb, clock.Real{})
		e.close()
		db, err := sqlitestore.Open(ctx, e.path)
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		s, _ := seal.New(e.key)
		m, _ := connections.New(connections.Config{Store: db, Sealer: s, Brokers: map[broker.Kind]broker.Client{broker.Upstox: fb},
			ValidationInterval: 30 * time.Minute})
		if err := m.Start(ctx); err != nil {
			t.Fatal(err)
		}
		defer m.Close()
		_, st, _, _ := m.LoginURL(ctx, e.alice, broker.Upstox)
		if _, err := m.CompleteLogin(ctx, e.alice, broker.Upstox, "A", st); err != nil {
			t.Fatal(err)
		}
		fb.revoke("A")
		time.Sleep(29 * time.Minute)
		synctest.Wait()
		if fb.count("profile") != 0 {
			t.Fatal("swept early")
		}
		time.Sleep(time.Minute)
		synctest.Wait()
		if n := fb.count("profile"); n != 1 {
			t.Fatalf("%d probes after one interval, want 1", n)
		}
		if _, err := m.Session(ctx, e.alice, broker.Upstox); err == nil {
			t.Error("the sweep did not disconnect the revoked token")
		}
		time.Sleep(time.Hour)
		synctest.Wait()
		if n := fb.count("profile"); n != 1 {
			t.Errorf("%d probes: a disconnected token was probed again", n)
		}
	})
}

// A login while a death is still pending writes the death first: the event
// log keeps the disconnection of generation 1 before the login of 2.
func TestLoginFlushesAPendingDeath(t *testing.T) {
	t.Parallel()
	e := newEnv(t, "", nil, nil, nil)
	ctx := context.Background()
	e.mustLogin(e.alice, "A")
	e.fb.revoke("A")
	e.st.FailWrites(true)
	_ = e.quotes(ctx, e.alice)
	if _, err := e.login(e.alice, "A"); err == nil {
		t.Fatal("a login succeeded on a store that refuses writes")
	}
	e.st.FailWrites(false)
	c := e.mustLogin(e.alice, "A")
	if c.TokenGeneration != 2 {
		t.Errorf("generation %d", c.TokenGeneration)
	}
	if e.m.Pending() != 0 {
		t.Errorf("pending = %d", e.m.Pending())
	}
	evs, _ := e.db.Events(ctx, e.alice, broker.Upstox)
	var kinds []string
	for _, ev := range evs {
		kinds = append(kinds, ev.Kind)
	}
	if len(kinds) != 3 || kinds[1] != "disconnect" || evs[1].Generation != 1 || kinds[2] != "login" {
		t.Errorf("events %v", kinds)
	}
	if err := e.quotes(ctx, e.alice); err != nil {
		t.Errorf("the new login: %v", err)
	}
	e.noViolations()
}

// Regression (issue 13, defect 2): reading an AuthRequired never creates
// or evicts login states. Before, every refused call minted a state (16
// per user, oldest evicted), so a user halfway through the broker's login
// page while a script made 16 calls came back to "unknown or already used".
func TestAuthRequiredNeverMintsLoginStates(t *testing.T) {
	t.Parallel()
	e := newEnv(t, "", nil, nil, nil)
	ctx := context.Background()
	loginURL, state, _, err := e.m.LoginURL(ctx, e.alice, broker.Upstox)
	if err != nil {
		t.Fatal(err)
	}
	for range 50 {
		ar := asAuthRequired(t, e.quotes(ctx, e.alice))
		if ar.LoginURL != loginURL {
			t.Fatalf("AuthRequired login URL %q, want the live state's %q", ar.LoginURL, loginURL)
		}
	}
	// Asking again hands out the same live state.
	if _, again, _, _ := e.m.LoginURL(ctx, e.alice, broker.Upstox); again != state {
		t.Errorf("a second GetLoginURL minted %q instead of reusing %q", again, state)
	}
	if _, err := e.m.CompleteLogin(ctx, e.alice, broker.Upstox, "A", state); err != nil {
		t.Fatalf("the login under way after 50 refused calls: %v", err)
	}
}

// A death creates one fresh login state with the disconnection, so the
// AuthRequired every stream and caller gets carries a login URL; a state
// with more than half its life left is reused instead; once it has
// expired the AuthRequired carries none (and still creates none).
func TestDeathCarriesALoginURL(t *testing.T) {
	t.Parallel()
	e := newEnv(t, "", nil, nil, nil)
	ctx := context.Background()
	e.mustLogin(e.alice, "A")
	e.fb.revoke("A")
	ar := asAuthRequired(t, e.quotes(ctx, e.alice))
	if ar.LoginURL == "" {
		t.Fatal("no login URL after a death")
	}
	_, state, _, _ := e.m.LoginURL(ctx, e.alice, broker.Upstox)
	if ar.LoginURL != e.fb.LoginURL(state) {
		t.Errorf("GetLoginURL after the death gave another state: %q vs %q", ar.LoginURL, state)
	}
	e.advance(11 * time.Minute)
	if ar := asAuthRequired(t, e.quotes(ctx, e.alice)); ar.LoginURL != "" {
		t.Errorf("an expired state's URL handed out: %q", ar.LoginURL)
	}
	if _, err := e.db.LoginState(ctx, state); err != nil {
		t.Errorf("the expired state was evicted by a read: %v", err)
	}
}

func TestExpiryTimerAndRestart(t *testing.T) {
	t.Parallel()
	clk := clock.NewFake(time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC))
	fb := newFakeBroker(broker.Upstox, clk.Now)
	fb.expiry = func(now time.Time) time.Time { return now.Add(time.Hour) }
	e := newEnv(t, "", nil, fb, clk)
	ctx := context.Background()
	c := e.mustLogin(e.alice, "A")
	var changes []connections.Change
	var mu sync.Mutex
	e.m.OnChange(func(ch connections.Change) { mu.Lock(); changes = append(changes, ch); mu.Unlock() })
	e.advance(59 * time.Minute)
	if _, err := e.m.Session(ctx, e.alice, broker.Upstox); err != nil {
		t.Fatalf("expired early: %v", err)
	}
	e.advance(time.Minute)
	ar, err := e.m.AuthRequired(ctx, connections.Key{UserID: e.alice, Broker: broker.Upstox})
	if err != nil || ar == nil || ar.Reason != store.ReasonTokenExpired || !ar.DisconnectedAt.Equal(c.ExpiresAt) {
		t.Fatalf("after expiry: %+v, %v", ar, err)
	}
	mu.Lock()
	if len(changes) != 1 || changes[0].Conn.Reason != store.ReasonTokenExpired {
		t.Errorf("subscribers saw %+v", changes)
	}
	mu.Unlock()
	if n := fb.count("profile") + fb.count("quotes"); n != 0 {
		t.Errorf("expiry called the broker")
	}
	// A restart keeps the reason and time; a token that expired while the
	// gateway was down is expired at start.
	e.restart()
	st, _ := e.m.Status(ctx, e.alice, broker.Upstox)
	if st[0].Reason != store.ReasonTokenExpired || !st[0].DisconnectedAt.Equal(c.ExpiresAt) {
		t.Errorf("after restart: %+v", st[0])
	}
	e.mustLogin(e.alice, "A")
	e.close()
	e.advance(2 * time.Hour)
	e.open()
	if ar := asAuthRequired(t, e.quotes(ctx, e.alice)); ar.Reason != store.ReasonTokenExpired {
		t.Errorf("a token that expired during downtime: %v", ar.Reason)
	}
	e.noViolations()
}

func TestValidationCacheAndSweep(t *testing.T) {
	t.Parallel()
	e := newEnv(t, "", nil, nil, nil)
	ctx := context.Background()
	e.mustLogin(e.alice, "A")
	k := connections.Key{UserID: e.alice, Broker: broker.Upstox}
	if out, _ := e.m.Validate(ctx, k, false); out != connections.OutcomeValid {
		t.Fatalf("first validation: %v", out)
	}
	if out, _ := e.m.Validate(ctx, k, false); out != connections.OutcomeCached {
		t.Errorf("within the TTL: %v", out)
	}
	e.advance(5 * time.Minute)
	if out, _ := e.m.Validate(ctx, k, false); out != connections.OutcomeValid {
		t.Errorf("after the TTL: %v", out)
	}
	st := e.m.CacheStats()
	if st.Hits != 1 || st.Misses != 2 || st.Entries != 1 {
		t.Errorf("stats %+v", st)
	}
	e.fb.before = func(op, _ string) error {
		if op == "profile" {
			return &broker.Error{Class: broker.ClassUpstream, HTTPStatus: 503}
		}
		return nil
	}
	if out, _ := e.m.Validate(ctx, k, true); out != connections.OutcomeError {
		t.Errorf("broker down: %v", out)
	}
	if _, err := e.m.Session(ctx, e.alice, broker.Upstox); err != nil {
		t.Error("a failed probe that does not prove the token dead disconnected it")
	}
	e.fb.before = nil
	e.fb.revoke("A")
	res, err := e.m.Sweep(ctx, "", true)
	if err != nil || res.Invalidated != 1 || res.Checked != 1 {
		t.Errorf("sweep = %+v, %v", res, err)
	}
	calls := e.fb.count("profile")
	if res, _ := e.m.Sweep(ctx, "", true); res.Checked != 0 || e.fb.count("profile") != calls {
		t.Errorf("a disconnected token was probed again: %+v", res)
	}
	e.noViolations()
}

// Regression (issue 13, defect 6): a validation that only updates
// last_validated_at publishes nothing; before, every touch sent a
// CONNECTED change to every watcher, which clients read as a new login.
func TestValidationIsNotPublished(t *testing.T) {
	t.Parallel()
	e := newEnv(t, "", nil, nil, nil)
	ctx := context.Background()
	e.mustLogin(e.alice, "A")
	var hooks atomic.Int64
	e.m.OnChange(func(connections.Change) { hooks.Add(1) })
	w, err := e.m.Watch(e.alice)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	for range 3 {
		if out, err := e.m.Validate(ctx, connections.Key{UserID: e.alice, Broker: broker.Upstox}, true); out != connections.OutcomeValid {
			t.Fatalf("validate: %v %v", out, err)
		}
	}
	select {
	case <-w.C:
		t.Errorf("a validation signalled the watcher: %+v", w.Changes())
	default:
	}
	if hooks.Load() != 0 {
		t.Errorf("%d hook calls for validations", hooks.Load())
	}
	if c := e.dbConn(e.alice); c.LastValidatedAt.IsZero() {
		t.Error("the validation was not recorded")
	}
}

func TestWrongKeyAtStartIsAnError(t *testing.T) {
	t.Parallel()
	e := newEnv(t, "", nil, nil, nil)
	e.mustLogin(e.alice, "A")
	e.close()
	ctx := context.Background()
	st, _ := sqlitestore.Open(ctx, e.path)
	defer st.Close()
	other := make([]byte, 32)
	s, _ := seal.New(other)
	m, _ := connections.New(connections.Config{Store: st, Sealer: s, Brokers: map[broker.Kind]broker.Client{broker.Upstox: newFakeBroker(broker.Upstox, time.Now)}})
	defer m.Close()
	if err := m.Start(ctx); err == nil {
		t.Fatal("Start with the wrong key succeeded")
	}
}

func TestLoginStateChecks(t *testing.T) {
	t.Parallel()
	e := newEnv(t, "", nil, nil, nil)
	ctx := context.Background()
	code := func(_ store.Connection, err error) connections.LoginCode {
		t.Helper()
		var le *connections.LoginError
		if !errors.As(err, &le) {
			t.Fatalf("err = %v, want *LoginError", err)
		}
		return le.Code
	}
	_, st, _, _ := e.m.LoginURL(ctx, e.alice, broker.Upstox)
	if c := code(e.m.CompleteLogin(ctx, e.bob, broker.Upstox, "B", st)); c != connections.LoginStateForeign {
		t.Errorf("bob with alice's state: %v", c)
	}
	if c := code(e.m.CompleteLogin(ctx, e.alice, broker.Upstox, "A", "")); c != connections.LoginStateMissing {
		t.Errorf("no state: %v", c)
	}
	if c := code(e.m.CompleteLogin(ctx, e.alice, broker.Upstox, "A", "made-up")); c != connections.LoginStateUnknown {
		t.Errorf("made-up state: %v", c)
	}
	if c := code(e.m.CompleteLogin(ctx, e.alice, broker.Upstox, "bad", st)); c != connections.LoginCodeRefused {
		t.Errorf("refused code: %v", c)
	}
	e.advance(11 * time.Minute)
	if c := code(e.m.CompleteLogin(ctx, e.alice, broker.Upstox, "A", st)); c != connections.LoginStateExpired {
		t.Errorf("expired state: %v", c)
	}
	// A used state cannot be used again.
	_, st, _, _ = e.m.LoginURL(ctx, e.alice, broker.Upstox)
	if _, err := e.m.CompleteLogin(ctx, e.alice, broker.Upstox, "A", st); err != nil {
		t.Fatal(err)
	}
	if c := code(e.m.CompleteLogin(ctx, e.alice, broker.Upstox, "A", st)); c != connections.LoginStateUnknown {
		t.Errorf("reused state: %v", c)
	}
}

// Regression (issue 13, defect 8): a login state is consumed only when
// the code exchange succeeds, so one broker 5xx does not force a whole new
// login through the broker's dialog.
func TestStateSurvivesAFailedExchange(t *testing.T) {
	t.Parallel()
	e := newEnv(t, "", nil, nil, nil)
	ctx := context.Background()
	_, st, _, _ := e.m.LoginURL(ctx, e.alice, broker.Upstox)
	fails := 1
	e.fb.exchangeErr = func() error {
		if fails > 0 {
			fails--
			return &broker.Error{Broker: broker.Upstox, Class: broker.ClassUpstream, HTTPStatus: 503, Attempts: 3}
		}
		return nil
	}
	if _, err := e.m.CompleteLogin(ctx, e.alice, broker.Upstox, "A", st); !errors.As(err, new(*broker.Error)) {
		t.Fatalf("exchange during a broker outage: %v", err)
	}
	c, err := e.m.CompleteLogin(ctx, e.alice, broker.Upstox, "A#retry", st)
	if err != nil {
		t.Fatalf("retrying with the same state: %v", err)
	}
	if c.State != store.StateConnected || c.TokenGeneration != 1 {
		t.Errorf("after the retry: %+v", c)
	}
}

// Regression (issue 13, defect 8 and OpenAlgo #1591): logging in again
// with the very token already stored (a repeated callback, a client's
// retry) changes nothing: no new generation, nothing published (open
// streams are not torn down), the state consumed.
func TestRepeatedLoginWithTheSameTokenIsANoOp(t *testing.T) {
	t.Parallel()
	e := newEnv(t, "", nil, nil, nil)
	ctx := context.Background()
	first := e.mustLogin(e.alice, "A")
	var hooks atomic.Int64
	e.m.OnChange(func(connections.Change) { hooks.Add(1) })
	e.fb.sameToken = true
	_, st, _, _ := e.m.LoginURL(ctx, e.alice, broker.Upstox)
	again, err := e.m.CompleteLogin(ctx, e.alice, broker.Upstox, "A", st)
	if err != nil {
		t.Fatal(err)
	}
	if again.TokenGeneration != first.TokenGeneration || hooks.Load() != 0 {
		t.Errorf("the same token again: generation %d -> %d, %d changes published", first.TokenGeneration, again.TokenGeneration, hooks.Load())
	}
	if _, err := e.db.LoginState(ctx, st); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("the state of the repeated login was not consumed: %v", err)
	}
	if evs, _ := e.db.Events(ctx, e.alice, broker.Upstox); len(evs) != 1 {
		t.Errorf("%d events, want the first login only", len(evs))
	}
}

// Regression (issue 13, defect 8): one broker account cannot be attached
// to two feedgate users (their feed sockets killed each other).
func TestOneBrokerAccountOneUser(t *testing.T) {
	t.Parallel()
	e := newEnv(t, "", nil, nil, nil)
	e.mustLogin(e.alice, "SHARED")
	_, err := e.login(e.bob, "SHARED")
	var ai *connections.AccountInUseError
	if !errors.As(err, &ai) || ai.Account != "SHARED" {
		t.Fatalf("bob logging in with alice's account: %v", err)
	}
	if c, _ := e.m.Status(context.Background(), e.bob, broker.Upstox); c[0].State != store.StateDisconnected {
		t.Errorf("bob after the refused login: %+v", c[0])
	}
	// Alice lets go; then bob may.
	if _, _, err := e.m.Disconnect(context.Background(), e.alice, broker.Upstox); err != nil {
		t.Fatal(err)
	}
	e.mustLogin(e.bob, "SHARED")
}

// Regression (issue 13, defect 8): a revoked user's pending callback is
// refused, even when the revocation lands while the code exchange is at
// the broker; revoking forgets its tokens and the sweep never probes them.
func TestRevokedUserIsForgotten(t *testing.T) {
	t.Parallel()
	e := newEnv(t, "", nil, nil, nil)
	ctx := context.Background()
	e.mustLogin(e.alice, "A")
	_, st, _, _ := e.m.LoginURL(ctx, e.alice, broker.Upstox)
	_, st2, _, _ := e.m.LoginURL(ctx, e.bob, broker.Upstox)
	// Bob is revoked while his exchange is at the broker.
	e.fb.exchangeErr = func() error {
		if err := e.db.RevokeUser(ctx, e.bob, e.clk.Now()); err != nil {
			t.Error(err)
		}
		return nil
	}
	if _, err := e.m.CompleteLogin(ctx, e.bob, broker.Upstox, "B", st2); !errors.As(err, new(*connections.LoginError)) {
		t.Errorf("a login revoked mid-exchange: %v", err)
	}
	e.fb.exchangeErr = nil
	if c, err := e.db.GetConnection(ctx, e.bob, broker.Upstox); err == nil && c.State == store.StateConnected {
		t.Errorf("bob's token was stored after his revocation: %+v", c)
	}
	// Alice is revoked (by the CLI, in another process): her pending
	// state dies with her and the running manager forgets her token.
	if err := e.db.RevokeUser(ctx, e.alice, e.clk.Now()); err != nil {
		t.Fatal(err)
	}
	var le *connections.LoginError
	if _, err := e.m.CompleteLogin(ctx, "", broker.Upstox, "A", st); !errors.As(err, &le) {
		t.Errorf("a revoked user's callback: %v", err)
	}
	e.m.UserRevoked(e.alice)
	if _, err := e.m.Session(ctx, e.alice, broker.Upstox); err == nil {
		t.Error("a revoked user's token is still handed out")
	}
	res, _ := e.m.Sweep(ctx, "", true)
	if res.Checked != 0 || e.fb.count("profile") != 0 {
		t.Errorf("the sweep probed a revoked user's token: %+v", res)
	}
	e.noViolations()
}

// Regression (issue 13, defects 6 and 8): Disconnect records the
// disconnection first and logs out at the broker after, outside the
// connection's lock: a hung logout neither holds up other calls nor leaves
// a crash able to restore a token the broker has ended.
func TestDisconnectRecordsFirstAndLogsOutOutsideTheLock(t *testing.T) {
	t.Parallel()
	e := newEnv(t, "", nil, nil, nil)
	ctx := context.Background()
	e.mustLogin(e.alice, "A")
	gate := make(chan struct{})
	e.fb.logoutGate = gate
	done := make(chan bool, 1)
	go func() {
		_, confirmed, err := e.m.Disconnect(ctx, e.alice, broker.Upstox)
		if err != nil {
			t.Error(err)
		}
		done <- confirmed
	}()
	for e.fb.count("logout") == 0 {
		time.Sleep(time.Millisecond)
	}
	// The logout is at the broker: the database already says so, and the
	// connection answers at once.
	if c := e.dbConn(e.alice); c.State != store.StateDisconnected || c.Reason != store.ReasonLoggedOut || c.SealedToken != nil {
		t.Errorf("database while the logout runs: %+v", c)
	}
	quick, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	if ar := asAuthRequired(t, e.quotes(quick, e.alice)); ar.Reason != store.ReasonLoggedOut {
		t.Errorf("reason %v", ar.Reason)
	}
	if _, err := e.m.Status(quick, e.alice, broker.Upstox); err != nil {
		t.Errorf("Status while the logout runs: %v", err)
	}
	close(gate)
	if !<-done {
		t.Error("the broker's logout was not reported confirmed")
	}
	e.noViolations()
}

// Regression (issue 13, defect 6): a user's watchers and code exchanges
// in progress are bounded.
func TestPerUserLimits(t *testing.T) {
	t.Parallel()
	e := newEnv(t, "", nil, nil, nil)
	ctx := context.Background()
	var ws []*connections.Watcher
	for range connections.DefaultMaxWatchers {
		w, err := e.m.Watch(e.alice)
		if err != nil {
			t.Fatal(err)
		}
		ws = append(ws, w)
	}
	var le *connections.LimitError
	if _, err := e.m.Watch(e.alice); !errors.As(err, &le) || le.Setting != "--max-watchers-per-user" {
		t.Errorf("watcher %d: %v", connections.DefaultMaxWatchers+1, err)
	}
	if w, err := e.m.Watch(e.bob); err != nil {
		t.Errorf("bob's first watcher: %v", err)
	} else {
		w.Close()
	}
	ws[0].Close()
	ws[0].Close()
	if w, err := e.m.Watch(e.alice); err != nil {
		t.Errorf("a watcher after one closed: %v", err)
	} else {
		ws[0] = w
	}
	for _, w := range ws {
		w.Close()
	}

	// Exchanges: hold DefaultMaxPendingLogins at the broker; one more is
	// refused.
	release := make(chan struct{})
	var entered sync.WaitGroup
	e.fb.exchangeErr = func() error { entered.Done(); <-release; return nil }
	var states []string
	for range connections.DefaultMaxPendingLogins + 1 {
		st := "st-" + string(rune('a'+len(states)))
		if err := e.db.CreateLoginState(ctx, store.LoginState{State: st, UserID: e.alice, Broker: broker.Upstox, CreatedAt: e.clk.Now(), ExpiresAt: e.clk.Now().Add(time.Minute)}); err != nil {
			t.Fatal(err)
		}
		states = append(states, st)
	}
	var wg sync.WaitGroup
	for i := range connections.DefaultMaxPendingLogins {
		entered.Add(1)
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, _ = e.m.CompleteLogin(ctx, e.alice, broker.Upstox, "A#"+states[i], states[i])
		}()
	}
	entered.Wait()
	if _, err := e.m.CompleteLogin(ctx, e.alice, broker.Upstox, "A#x", states[len(states)-1]); !errors.As(err, &le) || le.Setting != "--max-pending-logins" {
		t.Errorf("one exchange too many: %v", err)
	}
	close(release)
	wg.Wait()
}
