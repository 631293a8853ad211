package feed

import (
	"context"
	"crypto/rand"
	"errors"
	"path/filepath"
	"testing"
	"testing/synctest"
	"time"

	"github.com/feedgate/feedgate/server/auth"
	"github.com/feedgate/feedgate/server/broker"
	"github.com/feedgate/feedgate/server/connections"
	"github.com/feedgate/feedgate/server/seal"
	"github.com/feedgate/feedgate/server/store"
	"github.com/feedgate/feedgate/server/store/sqlitestore"
	"github.com/feedgate/feedgate/server/store/storefault"
)

// Regression (issue 13, defect 3): a feed whose token the broker refuses
// while the disk refuses the disconnection dials once, not in a loop.
// Before, ReportAuthDead failed, the connection stayed CONNECTED, and the
// upstream redialled the dead token with no pause (344,116 dials in 200 ms
// with a fake dialer). Now the real manager records the death in memory
// at once (fail-closed): the streams are told and no dial follows.
func TestDeadTokenIsNotRedialledWhileTheStoreFails(t *testing.T) {
	checkLeaks(t)
	ctx := context.Background()
	db, err := sqlitestore.Open(ctx, filepath.Join(t.TempDir(), "feedgate.db"))
	if err != nil {
		t.Fatal(err)
	}
	faulty := storefault.New(db)
	key := make([]byte, 32)
	_, _ = rand.Read(key)
	sealer, _ := seal.New(key)
	u, _, err := auth.CreateUser(ctx, db, "alice", false, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	sealed, _ := sealer.Seal([]byte("tok"), u.ID+"/upstox")
	if _, err := db.UpdateConnection(ctx, u.ID, broker.Upstox, func(c *store.Connection) (*store.Event, error) {
		c.State, c.SealedToken, c.TokenGeneration = store.StateConnected, sealed, 1
		return &store.Event{Kind: "login"}, nil
	}); err != nil {
		t.Fatal(err)
	}
	d := newFakeDialer()
	d.dial = func(int) error {
		return &broker.Error{Broker: broker.Upstox, Class: broker.ClassAuthDead, HTTPStatus: 401, Message: "401"}
	}
	m, err := connections.New(connections.Config{Store: faulty, Sealer: sealer, Brokers: map[broker.Kind]broker.Client{broker.Upstox: stubClient{}}})
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Start(ctx); err != nil {
		t.Fatal(err)
	}
	hub, err := New(Config{Conns: m, Dialers: map[broker.Kind]broker.FeedDialer{broker.Upstox: d},
		BackoffBase: time.Millisecond, BackoffCap: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		hub.Close()
		m.Close()
		_ = db.Close()
	})
	faulty.FailWrites(true)
	st, err := hub.Subscribe(ctx, u.ID, broker.Upstox, []string{"K"}, broker.ModeLTPC)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ae := waitAuthRequired(t, st, 5*time.Second)
	if ae.Reason != store.ReasonTokenRevoked {
		t.Errorf("reason %v", ae.Reason)
	}
	if n := d.dials(); n != 1 {
		t.Errorf("%d dials with a token the broker refused, want 1", n)
	}
	if m.Pending() != 1 {
		t.Errorf("pending deaths %d, want 1 (the store refuses writes)", m.Pending())
	}
}

// The upstream never dials a token generation it saw refused, even if the
// manager hands it out again (here a manager that cannot record the death
// and claims a newer login): it waits at least a second, reads the session
// again, and still does not dial. Fake time in a synctest bubble.
func TestNeverDialsAGenerationKnownDead(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ss := newFakeSessions()
		ss.liar = true
		d := newFakeDialer()
		d.dial = func(int) error {
			return &broker.Error{Broker: broker.Upstox, Class: broker.ClassAuthDead, HTTPStatus: 401, Message: "401"}
		}
		hub, err := New(Config{Conns: ss, Dialers: map[broker.Kind]broker.FeedDialer{broker.Upstox: d},
			BackoffBase: time.Millisecond, BackoffCap: time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		st, err := hub.Subscribe(context.Background(), "alice", broker.Upstox, []string{"K"}, broker.ModeLTPC)
		if err != nil {
			t.Fatal(err)
		}
		time.Sleep(10 * time.Second)
		synctest.Wait()
		ss.mu.Lock()
		sessions := ss.sessions
		ss.mu.Unlock()
		if n := d.dials(); n != 1 {
			t.Errorf("%d dials in 10 s, want 1: the refused generation was dialled again", n)
		}
		if sessions < 2 || sessions > 12 {
			t.Errorf("%d session reads in 10 s, want a re-read about every second", sessions)
		}
		st.Close()
		hub.Close()
	})
}

// stubClient is a broker.Client that is never called.
type stubClient struct{}

var errStub = errors.New("not called in this test")

func (stubClient) Kind() broker.Kind      { return broker.Upstox }
func (stubClient) LoginURL(string) string { return "" }
func (stubClient) ExchangeCode(context.Context, string) (broker.Token, error) {
	return broker.Token{}, errStub
}
func (stubClient) Profile(context.Context, broker.Credentials) (broker.Profile, error) {
	return broker.Profile{}, errStub
}
func (stubClient) OptionChain(context.Context, broker.Credentials, string, string) (*broker.OptionChain, error) {
	return nil, errStub
}
func (stubClient) Quotes(context.Context, broker.Credentials, []string) (*broker.Quotes, error) {
	return nil, errStub
}
func (stubClient) Logout(context.Context, broker.Credentials) error { return errStub }
func (stubClient) ValidateInstrumentKey(string) error               { return nil }
