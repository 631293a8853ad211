// Package storetest is the conformance suite every store.Store
// implementation must pass. An implementation's test calls Run with a
// function that opens a store at a path (and opens it again at the same
// path, to prove durability).
package storetest

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/feedgate/feedgate/server/broker"
	"github.com/feedgate/feedgate/server/store"
)

// Opener opens the store kept at path, creating it if needed.
type Opener func(t *testing.T, path string) store.Store

// Run runs the suite.
func Run(t *testing.T, open Opener) {
	t.Helper()
	cases := []struct {
		name string
		fn   func(*testing.T, Opener)
	}{
		{"Users", testUsers},
		{"ConnectionLifecycle", testConnectionLifecycle},
		{"UpdateAbortLeavesRowUntouched", testUpdateAbort},
		{"ConcurrentUpdatesLoseNothing", testConcurrentUpdates},
		{"ListConnectionsFiltersAndPages", testListConnections},
		{"ReopenKeepsEverything", testReopen},
		{"ClosedStoreRefuses", testClosed},
		{"LoginStates", testLoginStates},
		{"LoginStateConsumedWithTheLogin", testLoginStateConsumed},
		{"OneBrokerAccountOneUser", testAccountInUse},
		{"RevokeUserDisconnectsAndForgets", testRevokeUser},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			c.fn(t, open)
		})
	}
}

func newPath(t *testing.T) string { return filepath.Join(t.TempDir(), "feedgate.db") }

// ts is a fixed time with nanosecond precision, to catch truncation.
var ts = time.Date(2026, 11, 20, 9, 15, 30, 123456789, time.UTC)

func mkUser(i int, admin bool) store.User {
	return store.User{
		ID:        fmt.Sprintf("u_%04d", i),
		Name:      fmt.Sprintf("user-%d", i),
		Admin:     admin,
		KeyHash:   sha256.Sum256([]byte(fmt.Sprintf("key-%d", i))),
		CreatedAt: ts.Add(time.Duration(i) * time.Second),
	}
}

func mustCreate(t *testing.T, s store.Store, u store.User) {
	t.Helper()
	if err := s.CreateUser(context.Background(), u); err != nil {
		t.Fatalf("CreateUser(%s): %v", u.Name, err)
	}
}

func testUsers(t *testing.T, open Opener) {
	ctx := context.Background()
	s := open(t, newPath(t))
	alice, bob := mkUser(1, false), mkUser(2, true)
	mustCreate(t, s, alice)
	mustCreate(t, s, bob)

	dupName := mkUser(3, false)
	dupName.Name = alice.Name
	if err := s.CreateUser(ctx, dupName); !errors.Is(err, store.ErrConflict) {
		t.Errorf("duplicate name: err = %v, want ErrConflict", err)
	}
	dupKey := mkUser(4, false)
	dupKey.KeyHash = alice.KeyHash
	if err := s.CreateUser(ctx, dupKey); !errors.Is(err, store.ErrConflict) {
		t.Errorf("duplicate key: err = %v, want ErrConflict", err)
	}

	got, err := s.UserByKeyHash(ctx, bob.KeyHash)
	if err != nil || got != bob {
		t.Errorf("UserByKeyHash = %+v, %v; want %+v", got, err, bob)
	}
	if got, err := s.UserByName(ctx, "user-1"); err != nil || got.ID != alice.ID {
		t.Errorf("UserByName = %+v, %v", got, err)
	}
	if _, err := s.UserByKeyHash(ctx, sha256.Sum256([]byte("nope"))); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("unknown key: err = %v, want ErrNotFound", err)
	}
	if _, err := s.UserByID(ctx, "u_missing"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("unknown id: err = %v, want ErrNotFound", err)
	}
	users, err := s.ListUsers(ctx)
	if err != nil || len(users) != 2 || users[0].ID != alice.ID || users[1].ID != bob.ID {
		t.Errorf("ListUsers = %+v, %v", users, err)
	}
	if n, err := s.CountUsers(ctx); err != nil || n != 2 {
		t.Errorf("CountUsers = %d, %v", n, err)
	}
	revokeAt := ts.Add(time.Hour)
	if err := s.RevokeUser(ctx, alice.ID, revokeAt); err != nil {
		t.Fatal(err)
	}
	// Revoking again keeps the first time.
	if err := s.RevokeUser(ctx, alice.ID, revokeAt.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	got, _ = s.UserByID(ctx, alice.ID)
	if got.Active() || !got.RevokedAt.Equal(revokeAt) {
		t.Errorf("after revoke: %+v", got)
	}
	if err := s.RevokeUser(ctx, "u_missing", revokeAt); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("revoke unknown: %v", err)
	}
}

func connect(gen int64, at time.Time) store.UpdateFunc {
	return func(c *store.Connection) (*store.Event, error) {
		c.State, c.Reason = store.StateConnected, store.ReasonNone
		c.SealedToken = []byte(fmt.Sprintf("sealed-%d", gen))
		c.TokenGeneration = gen
		c.BrokerUserID = "AB-" + c.UserID // one broker account per user
		c.IssuedAt, c.ConnectedAt, c.ExpiresAt = at, at, at.Add(18*time.Hour)
		c.UpdatedAt = at
		return &store.Event{Kind: "login", At: at}, nil
	}
}

func testConnectionLifecycle(t *testing.T, open Opener) {
	ctx := context.Background()
	s := open(t, newPath(t))
	u := mkUser(1, false)
	mustCreate(t, s, u)
	if _, err := s.GetConnection(ctx, u.ID, broker.Upstox); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("missing connection: %v", err)
	}
	c, err := s.UpdateConnection(ctx, u.ID, broker.Upstox, connect(1, ts))
	if err != nil {
		t.Fatal(err)
	}
	got, err := s.GetConnection(ctx, u.ID, broker.Upstox)
	if err != nil {
		t.Fatal(err)
	}
	if !equalConn(got, c) || got.State != store.StateConnected || string(got.SealedToken) != "sealed-1" || !got.ExpiresAt.Equal(ts.Add(18*time.Hour)) {
		t.Errorf("GetConnection = %+v, want %+v", got, c)
	}
	disc := ts.Add(time.Minute)
	_, err = s.UpdateConnection(ctx, u.ID, broker.Upstox, func(c *store.Connection) (*store.Event, error) {
		if c.TokenGeneration != 1 {
			t.Errorf("fn saw generation %d", c.TokenGeneration)
		}
		c.State, c.Reason, c.SealedToken, c.DisconnectedAt, c.LastError = store.StateDisconnected, store.ReasonTokenRevoked, nil, disc, "HTTP 401 UDAPI100050"
		c.UpdatedAt = disc
		return &store.Event{Kind: "disconnect", Detail: "option chain"}, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	got, _ = s.GetConnection(ctx, u.ID, broker.Upstox)
	if got.State != store.StateDisconnected || got.Reason != store.ReasonTokenRevoked || got.SealedToken != nil ||
		!got.DisconnectedAt.Equal(disc) || got.LastError != "HTTP 401 UDAPI100050" || got.TokenGeneration != 1 {
		t.Errorf("after disconnect: %+v", got)
	}
	// The other broker is separate.
	if _, err := s.GetConnection(ctx, u.ID, broker.Fyers); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("fyers connection should not exist: %v", err)
	}
	evs, err := s.Events(ctx, u.ID, broker.Upstox)
	if err != nil {
		t.Fatal(err)
	}
	if len(evs) != 2 || evs[0].Kind != "login" || evs[0].State != store.StateConnected || evs[0].Generation != 1 ||
		!evs[0].At.Equal(ts) || evs[1].Kind != "disconnect" || evs[1].Reason != store.ReasonTokenRevoked ||
		!evs[1].At.Equal(disc) || evs[1].Detail != "option chain" || evs[0].ID >= evs[1].ID {
		t.Errorf("events = %+v", evs)
	}
	// A connection for a user that does not exist is refused.
	if _, err := s.UpdateConnection(ctx, "u_ghost", broker.Upstox, connect(1, ts)); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("update for unknown user: %v, want ErrNotFound", err)
	}
}

func equalConn(a, b store.Connection) bool {
	return a.UserID == b.UserID && a.Broker == b.Broker && a.State == b.State && a.Reason == b.Reason &&
		string(a.SealedToken) == string(b.SealedToken) && a.TokenGeneration == b.TokenGeneration &&
		a.BrokerUserID == b.BrokerUserID && a.IssuedAt.Equal(b.IssuedAt) && a.ExpiresAt.Equal(b.ExpiresAt) &&
		a.ConnectedAt.Equal(b.ConnectedAt) && a.DisconnectedAt.Equal(b.DisconnectedAt) &&
		a.LastValidatedAt.Equal(b.LastValidatedAt) && a.LastError == b.LastError && a.UpdatedAt.Equal(b.UpdatedAt)
}

func testUpdateAbort(t *testing.T, open Opener) {
	ctx := context.Background()
	s := open(t, newPath(t))
	u := mkUser(1, false)
	mustCreate(t, s, u)
	before, err := s.UpdateConnection(ctx, u.ID, broker.Fyers, connect(1, ts))
	if err != nil {
		t.Fatal(err)
	}
	boom := errors.New("boom")
	_, err = s.UpdateConnection(ctx, u.ID, broker.Fyers, func(c *store.Connection) (*store.Event, error) {
		c.State, c.SealedToken = store.StateDisconnected, nil
		return &store.Event{Kind: "disconnect"}, boom
	})
	if !errors.Is(err, boom) {
		t.Fatalf("err = %v, want boom", err)
	}
	after, _ := s.GetConnection(ctx, u.ID, broker.Fyers)
	if !equalConn(before, after) {
		t.Errorf("aborted update changed the row: %+v -> %+v", before, after)
	}
	if evs, _ := s.Events(ctx, u.ID, broker.Fyers); len(evs) != 1 {
		t.Errorf("aborted update appended an event: %+v", evs)
	}
}

func testConcurrentUpdates(t *testing.T, open Opener) {
	ctx := context.Background()
	s := open(t, newPath(t))
	u := mkUser(1, false)
	mustCreate(t, s, u)
	if _, err := s.UpdateConnection(ctx, u.ID, broker.Upstox, connect(0, ts)); err != nil {
		t.Fatal(err)
	}
	const workers, each = 16, 10
	var wg sync.WaitGroup
	errs := make(chan error, workers*each)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < each; i++ {
				_, err := s.UpdateConnection(ctx, u.ID, broker.Upstox, func(c *store.Connection) (*store.Event, error) {
					c.TokenGeneration++
					c.UpdatedAt = time.Now()
					return &store.Event{Kind: "bump"}, nil
				})
				if err != nil {
					errs <- err
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("concurrent update: %v", err)
	}
	got, _ := s.GetConnection(ctx, u.ID, broker.Upstox)
	if got.TokenGeneration != workers*each {
		t.Errorf("generation = %d after %d increments: updates were lost", got.TokenGeneration, workers*each)
	}
	evs, _ := s.Events(ctx, u.ID, broker.Upstox)
	if len(evs) != workers*each+1 {
		t.Errorf("%d events, want %d", len(evs), workers*each+1)
	}
}

func testListConnections(t *testing.T, open Opener) {
	ctx := context.Background()
	s := open(t, newPath(t))
	for i := 1; i <= 5; i++ {
		u := mkUser(i, false)
		mustCreate(t, s, u)
		for _, b := range broker.Kinds {
			if _, err := s.UpdateConnection(ctx, u.ID, b, connect(1, ts)); err != nil {
				t.Fatal(err)
			}
		}
	}
	// Disconnect user 2 and 4 on Upstox.
	for _, id := range []string{"u_0002", "u_0004"} {
		if _, err := s.UpdateConnection(ctx, id, broker.Upstox, func(c *store.Connection) (*store.Event, error) {
			c.State, c.Reason = store.StateDisconnected, store.ReasonTokenExpired
			return nil, nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	all, err := s.ListConnections(ctx, store.ConnectionFilter{})
	if err != nil || len(all) != 10 {
		t.Fatalf("all: %d, %v", len(all), err)
	}
	for i := 1; i < len(all); i++ {
		p, c := all[i-1], all[i]
		if p.Connection.UserID > c.Connection.UserID || (p.Connection.UserID == c.Connection.UserID && p.Connection.Broker >= c.Connection.Broker) {
			t.Errorf("not ordered at %d", i)
		}
		if c.User.ID != c.Connection.UserID || c.User.Name == "" {
			t.Errorf("user not joined: %+v", c.User)
		}
	}
	disc, _ := s.ListConnections(ctx, store.ConnectionFilter{State: store.StateDisconnected})
	if len(disc) != 2 || disc[0].Connection.UserID != "u_0002" || disc[1].Connection.UserID != "u_0004" {
		t.Errorf("disconnected = %+v", disc)
	}
	fy, _ := s.ListConnections(ctx, store.ConnectionFilter{Broker: broker.Fyers, State: store.StateConnected})
	if len(fy) != 5 {
		t.Errorf("fyers connected = %d, want 5", len(fy))
	}
	// Pages of 3 cover everything exactly once.
	var seen []string
	f := store.ConnectionFilter{Limit: 3}
	for {
		page, err := s.ListConnections(ctx, f)
		if err != nil {
			t.Fatal(err)
		}
		for _, uc := range page {
			seen = append(seen, uc.Connection.UserID+"/"+string(uc.Connection.Broker))
		}
		if len(page) < 3 {
			break
		}
		last := page[len(page)-1].Connection
		f.AfterUserID, f.AfterBroker = last.UserID, last.Broker
	}
	if len(seen) != 10 {
		t.Errorf("paging saw %d: %v", len(seen), seen)
	}
}

func testReopen(t *testing.T, open Opener) {
	ctx := context.Background()
	path := newPath(t)
	s := open(t, path)
	u := mkUser(1, true)
	mustCreate(t, s, u)
	want, err := s.UpdateConnection(ctx, u.ID, broker.Fyers, connect(7, ts))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s2 := open(t, path)
	gotU, err := s2.UserByKeyHash(ctx, u.KeyHash)
	if err != nil || gotU != u {
		t.Errorf("user after reopen = %+v, %v", gotU, err)
	}
	got, err := s2.GetConnection(ctx, u.ID, broker.Fyers)
	if err != nil || !equalConn(got, want) {
		t.Errorf("connection after reopen = %+v, %v; want %+v", got, err, want)
	}
	if evs, _ := s2.Events(ctx, u.ID, broker.Fyers); len(evs) != 1 {
		t.Errorf("events after reopen = %+v", evs)
	}
}

func testClosed(t *testing.T, open Opener) {
	s := open(t, newPath(t))
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.UserByID(context.Background(), "x"); !errors.Is(err, store.ErrClosed) {
		t.Errorf("after close: %v, want ErrClosed", err)
	}
}

func loginState(state, userID string, b broker.Kind, at time.Time, ttl time.Duration) store.LoginState {
	return store.LoginState{State: state, UserID: userID, Broker: b, CreatedAt: at, ExpiresAt: at.Add(ttl)}
}

func testLoginStates(t *testing.T, open Opener) {
	ctx := context.Background()
	path := newPath(t)
	s := open(t, path)
	u := mkUser(1, false)
	mustCreate(t, s, u)
	if _, err := s.LatestLoginState(ctx, u.ID, broker.Upstox); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("no states yet: %v", err)
	}
	a := loginState("state-a", u.ID, broker.Upstox, ts, 10*time.Minute)
	b := loginState("state-b", u.ID, broker.Upstox, ts.Add(time.Minute), 10*time.Minute)
	f := loginState("state-f", u.ID, broker.Fyers, ts.Add(2*time.Minute), 10*time.Minute)
	for _, ls := range []store.LoginState{a, b, f} {
		if err := s.CreateLoginState(ctx, ls); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.CreateLoginState(ctx, a); !errors.Is(err, store.ErrConflict) {
		t.Errorf("a duplicate state: %v, want ErrConflict", err)
	}
	if err := s.CreateLoginState(ctx, loginState("ghost", "u_ghost", broker.Upstox, ts, time.Minute)); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("a state for an unknown user: %v, want ErrNotFound", err)
	}
	got, err := s.LoginState(ctx, "state-a")
	if err != nil || got != a {
		t.Errorf("LoginState = %+v, %v; want %+v", got, err, a)
	}
	if got, err := s.LatestLoginState(ctx, u.ID, broker.Upstox); err != nil || got != b {
		t.Errorf("LatestLoginState(upstox) = %+v, %v; want %+v", got, err, b)
	}
	if got, err := s.LatestLoginState(ctx, u.ID, broker.Fyers); err != nil || got != f {
		t.Errorf("LatestLoginState(fyers) = %+v, %v; want %+v", got, err, f)
	}
	// States survive a reopen.
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = open(t, path)
	if got, err := s.LoginState(ctx, "state-b"); err != nil || got != b {
		t.Errorf("after reopen: %+v, %v", got, err)
	}
	if err := s.DeleteLoginState(ctx, "state-b"); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteLoginState(ctx, "state-b"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("deleting twice: %v, want ErrNotFound", err)
	}
	if got, err := s.LatestLoginState(ctx, u.ID, broker.Upstox); err != nil || got != a {
		t.Errorf("LatestLoginState after delete = %+v, %v", got, err)
	}
	// A new state purges the ones that expired by its creation.
	late := loginState("state-late", u.ID, broker.Upstox, ts.Add(11*time.Minute), 10*time.Minute)
	if err := s.CreateLoginState(ctx, late); err != nil {
		t.Fatal(err)
	}
	if _, err := s.LoginState(ctx, "state-a"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("an expired state was kept: %v", err)
	}
	if _, err := s.LoginState(ctx, "state-f"); err != nil {
		t.Errorf("a live state was purged: %v", err)
	}
}

func testLoginStateConsumed(t *testing.T, open Opener) {
	ctx := context.Background()
	s := open(t, newPath(t))
	u := mkUser(1, false)
	mustCreate(t, s, u)
	if err := s.CreateLoginState(ctx, loginState("st-1", u.ID, broker.Upstox, ts, 10*time.Minute)); err != nil {
		t.Fatal(err)
	}
	login := func(state string) error {
		_, err := s.UpdateConnection(ctx, u.ID, broker.Upstox, func(c *store.Connection) (*store.Event, error) {
			ev, err := connect(c.TokenGeneration+1, ts)(c)
			ev.ConsumeLoginState = state
			return ev, err
		})
		return err
	}
	if err := login("st-1"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.LoginState(ctx, "st-1"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("the consumed state is still there: %v", err)
	}
	// A second login with the same state fails as a whole.
	if err := login("st-1"); !errors.Is(err, store.ErrLoginStateUsed) {
		t.Fatalf("reusing a state: %v, want ErrLoginStateUsed", err)
	}
	if c, _ := s.GetConnection(ctx, u.ID, broker.Upstox); c.TokenGeneration != 1 {
		t.Errorf("the refused login changed the row: generation %d", c.TokenGeneration)
	}
	if evs, _ := s.Events(ctx, u.ID, broker.Upstox); len(evs) != 1 {
		t.Errorf("the refused login appended an event: %d events", len(evs))
	}
	// A state of another broker is not consumed by this one.
	if err := s.CreateLoginState(ctx, loginState("st-f", u.ID, broker.Fyers, ts, 10*time.Minute)); err != nil {
		t.Fatal(err)
	}
	if err := login("st-f"); !errors.Is(err, store.ErrLoginStateUsed) {
		t.Errorf("consuming another broker's state: %v, want ErrLoginStateUsed", err)
	}
	// A change can create a state atomically with itself.
	ns := loginState("st-new", u.ID, broker.Upstox, ts.Add(time.Minute), 10*time.Minute)
	if _, err := s.UpdateConnection(ctx, u.ID, broker.Upstox, func(c *store.Connection) (*store.Event, error) {
		c.State, c.Reason, c.SealedToken = store.StateDisconnected, store.ReasonTokenRevoked, nil
		return &store.Event{Kind: "disconnect", NewLoginState: &ns}, nil
	}); err != nil {
		t.Fatal(err)
	}
	if got, err := s.LoginState(ctx, "st-new"); err != nil || got != ns {
		t.Errorf("the state created with the change: %+v, %v", got, err)
	}
	boom := errors.New("boom")
	ns2 := loginState("st-aborted", u.ID, broker.Upstox, ts.Add(time.Minute), 10*time.Minute)
	_, _ = s.UpdateConnection(ctx, u.ID, broker.Upstox, func(c *store.Connection) (*store.Event, error) {
		return &store.Event{Kind: "x", NewLoginState: &ns2}, boom
	})
	if _, err := s.LoginState(ctx, "st-aborted"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("an aborted update created its state: %v", err)
	}
}

func testAccountInUse(t *testing.T, open Opener) {
	ctx := context.Background()
	s := open(t, newPath(t))
	alice, bob := mkUser(1, false), mkUser(2, false)
	mustCreate(t, s, alice)
	mustCreate(t, s, bob)
	as := func(account string, gen int64) store.UpdateFunc {
		return func(c *store.Connection) (*store.Event, error) {
			ev, err := connect(gen, ts)(c)
			c.BrokerUserID = account
			return ev, err
		}
	}
	if _, err := s.UpdateConnection(ctx, alice.ID, broker.Upstox, as("SHARED", 1)); err != nil {
		t.Fatal(err)
	}
	// Alice logging in again with her own account is fine.
	if _, err := s.UpdateConnection(ctx, alice.ID, broker.Upstox, as("SHARED", 2)); err != nil {
		t.Fatalf("the same user again: %v", err)
	}
	// Bob cannot connect the account Alice holds, on that broker.
	if _, err := s.UpdateConnection(ctx, bob.ID, broker.Upstox, as("SHARED", 1)); !errors.Is(err, store.ErrAccountInUse) {
		t.Fatalf("a second user on one account: %v, want ErrAccountInUse", err)
	}
	if _, err := s.GetConnection(ctx, bob.ID, broker.Upstox); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("the refused login wrote a row: %v", err)
	}
	// The same account id on the other broker is another account.
	if _, err := s.UpdateConnection(ctx, bob.ID, broker.Fyers, as("SHARED", 1)); err != nil {
		t.Errorf("the same id on another broker: %v", err)
	}
	// Once Alice is disconnected, Bob may connect it.
	if _, err := s.UpdateConnection(ctx, alice.ID, broker.Upstox, func(c *store.Connection) (*store.Event, error) {
		c.State, c.Reason, c.SealedToken = store.StateDisconnected, store.ReasonLoggedOut, nil
		return &store.Event{Kind: "logout"}, nil
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.UpdateConnection(ctx, bob.ID, broker.Upstox, as("SHARED", 1)); err != nil {
		t.Errorf("after the first user let go: %v", err)
	}
	if _, err := s.UpdateConnection(ctx, alice.ID, broker.Upstox, as("SHARED", 3)); !errors.Is(err, store.ErrAccountInUse) {
		t.Errorf("the first user taking it back: %v, want ErrAccountInUse", err)
	}
}

func testRevokeUser(t *testing.T, open Opener) {
	ctx := context.Background()
	s := open(t, newPath(t))
	alice, bob := mkUser(1, false), mkUser(2, false)
	mustCreate(t, s, alice)
	mustCreate(t, s, bob)
	for _, u := range []store.User{alice, bob} {
		for _, b := range broker.Kinds {
			if _, err := s.UpdateConnection(ctx, u.ID, b, connect(1, ts)); err != nil {
				t.Fatal(err)
			}
			if err := s.CreateLoginState(ctx, loginState("st-"+u.ID+"-"+string(b), u.ID, b, ts, 10*time.Minute)); err != nil {
				t.Fatal(err)
			}
		}
	}
	at := ts.Add(time.Hour)
	if err := s.RevokeUser(ctx, alice.ID, at); err != nil {
		t.Fatal(err)
	}
	for _, b := range broker.Kinds {
		c, err := s.GetConnection(ctx, alice.ID, b)
		if err != nil || c.State != store.StateDisconnected || c.Reason != store.ReasonLoggedOut || c.SealedToken != nil || !c.DisconnectedAt.Equal(at) {
			t.Errorf("alice/%s after revoke: %+v, %v", b, c, err)
		}
		evs, _ := s.Events(ctx, alice.ID, b)
		if last := evs[len(evs)-1]; last.Kind != "user_revoked" || last.State != store.StateDisconnected || last.Generation != 1 {
			t.Errorf("alice/%s last event: %+v", b, last)
		}
		if _, err := s.LoginState(ctx, "st-"+alice.ID+"-"+string(b)); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("alice's %s login state survived her revocation: %v", b, err)
		}
		if c, _ := s.GetConnection(ctx, bob.ID, b); c.State != store.StateConnected {
			t.Errorf("bob/%s was touched: %+v", b, c)
		}
		if _, err := s.LoginState(ctx, "st-"+bob.ID+"-"+string(b)); err != nil {
			t.Errorf("bob's %s login state: %v", b, err)
		}
	}
	// Revoking again changes nothing and appends nothing.
	if err := s.RevokeUser(ctx, alice.ID, at.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if evs, _ := s.Events(ctx, alice.ID, broker.Upstox); len(evs) != 2 {
		t.Errorf("a second revoke appended events: %+v", evs)
	}
}
