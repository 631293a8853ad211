package api_test

import (
	"context"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"

	feedgatev1 "github.com/feedgate/feedgate/gen/go/feedgate/v1"
	"github.com/feedgate/feedgate/server/gateway/gatewaytest"
	"github.com/feedgate/feedgate/server/sandbox"
)

// Regression (issue 13, defect 5): login CSRF, end to end. The attacker
// starts a login for their own feedgate user (GetLoginURL in their own
// browser), then gets the victim's browser to finish the broker's login
// with the victim's broker account. The callback arrives in a browser that
// does not hold the attacker's binding cookie: it refuses with a page that
// says so, and nothing is attached to anyone. Before, the state alone was
// trusted and the victim's broker account became the attacker's.
func TestLoginCSRFIsRefused(t *testing.T) {
	t.Parallel()
	e := gatewaytest.Start(t, gatewaytest.Options{})
	ctx := context.Background()
	for _, b := range []feedgatev1.Broker{upstox, fyers} {
		attacker, _ := e.BrowserClients(e.NewUser("csrf-attacker-"+brokerName(b), false), gatewaytest.Protocols[0])
		victimKey := e.NewUser("csrf-victim-"+brokerName(b), false)
		victim, victimBrowser := e.BrowserClients(victimKey, gatewaytest.Protocols[0])
		// The victim has a dashboard session of their own, with a live
		// binding for their own login.
		if _, err := victim.Connection.GetLoginURL(ctx, connect.NewRequest(&feedgatev1.GetLoginURLRequest{Broker: b})); err != nil {
			t.Fatal(err)
		}
		lu, err := attacker.Connection.GetLoginURL(ctx, connect.NewRequest(&feedgatev1.GetLoginURLRequest{Broker: b}))
		if err != nil {
			t.Fatal(err)
		}
		// The victim's browser goes through the broker's login with the
		// attacker's URL, as the victim's account, and lands on the
		// callback.
		cb := gatewaytest.Approve(t, lu.Msg.Url, "csrf-victim-account-"+brokerName(b))
		res, err := victimBrowser.Get(cb.String())
		if err != nil {
			t.Fatal(err)
		}
		page, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode != http.StatusForbidden || !strings.Contains(string(page), "did not connect any") ||
			!strings.Contains(string(page), "feedgate login --redirect") {
			t.Errorf("%s: the callback in the victim's browser answered %d: %.300s", brokerName(b), res.StatusCode, page)
		}
		if ct := res.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/html") {
			t.Errorf("content type %q", ct)
		}
		for who, c := range map[string]gatewaytest.Clients{"attacker": attacker, "victim": victim} {
			if st := connState(t, c, b); st.State == feedgatev1.ConnectionState_CONNECTION_STATE_CONNECTED {
				t.Errorf("%s: the %s's connection was attached by the forged callback: %v", brokerName(b), who, st)
			}
		}
		if n := e.Calls(brokerName(b), exchangePath(b), 0, ""); n != 0 {
			t.Errorf("%s: the code was exchanged at the broker %d times", brokerName(b), n)
		}
		// The victim, misled into finishing it with the command line
		// (CompleteLogin with their own key), is refused too: the state
		// is the attacker's user's.
		_, err = victim.Connection.CompleteLogin(ctx, connect.NewRequest(&feedgatev1.CompleteLoginRequest{
			Broker: b, Code: gatewaytest.BrokerCode(b, cb), State: cb.Query().Get("state")}))
		if connect.CodeOf(err) != connect.CodeInvalidArgument || !strings.Contains(err.Error(), "another user") {
			t.Errorf("%s: CompleteLogin of the attacker's state with the victim's key: %v", brokerName(b), err)
		}
	}
}

func exchangePath(b feedgatev1.Broker) string {
	if b == fyers {
		return "/api/v3/validate-authcode"
	}
	return "/v2/login/authorization/token"
}

// Regression (issue 13, defect 8): a coalesced option-chain call runs on a
// context of its own that lives as long as the latest of its callers'
// deadlines; each caller still stops at its own. Before, the shared call
// kept the first caller's deadline: a caller with no deadline got
// Unavailable because another caller of the same user had 50 ms.
func TestCoalescedChainOutlivesTheShortestDeadline(t *testing.T) {
	t.Parallel()
	e := gatewaytest.Start(t, gatewaytest.Options{})
	c := e.Clients(e.NewUser("coalesce", false), gatewaytest.Protocols[1])
	e.Login(c, upstox, "coalesce")
	expiry := nearestExpiry(t, e)
	e.Sandbox().AddFault(sandbox.Fault{Broker: sandbox.Upstox, PathPrefix: "/v2/option/chain", LatencyMS: 400})
	before := e.Calls("upstox", "/v2/option/chain", 0, "")
	req := func() *connect.Request[feedgatev1.GetOptionChainRequest] {
		return connect.NewRequest(&feedgatev1.GetOptionChainRequest{Broker: upstox, UnderlyingKey: nifty, ExpiryDate: expiry})
	}
	var wg sync.WaitGroup
	var short, long error
	var longRes *connect.Response[feedgatev1.GetOptionChainResponse]
	wg.Add(2)
	go func() {
		defer wg.Done()
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		defer cancel()
		_, short = c.MarketData.GetOptionChain(ctx, req())
	}()
	go func() {
		defer wg.Done()
		// Join the flight the first caller started (the order only decides
		// whether the test can see the defect, never whether it fails).
		time.Sleep(10 * time.Millisecond)
		longRes, long = c.MarketData.GetOptionChain(context.Background(), req())
	}()
	wg.Wait()
	if connect.CodeOf(short) != connect.CodeDeadlineExceeded {
		t.Errorf("the 50 ms caller: %v, want DeadlineExceeded", short)
	}
	if long != nil || len(longRes.Msg.GetStrikes()) == 0 {
		t.Fatalf("the caller without a deadline: %v", long)
	}
	if n := e.Calls("upstox", "/v2/option/chain", 0, "") - before; n != 1 {
		t.Errorf("%d broker calls for two coalesced callers, want 1", n)
	}
}

// Regression (issue 13, defect 6): one key cannot open unbounded streams
// or watchers: past the limit, ResourceExhausted naming the setting.
func TestPerUserStreamAndWatcherLimits(t *testing.T) {
	t.Parallel()
	e := gatewaytest.Start(t, gatewaytest.Options{Args: []string{"--max-streams-per-user", "3", "--max-watchers-per-user", "2"}})
	ctx := context.Background()
	key := e.NewUser("limits", false)
	c := e.Clients(key, gatewaytest.Protocols[1])
	e.Login(c, upstox, "limits")
	var streams []*feedStream
	for range 3 {
		s := openFeed(t, c, upstox, []string{nifty}, feedgatev1.FeedMode_FEED_MODE_LTPC)
		s.next(t, 5*time.Second, isTicks)
		streams = append(streams, s)
	}
	s4 := openFeed(t, c, upstox, []string{nifty}, feedgatev1.FeedMode_FEED_MODE_LTPC)
	if _, err := s4.waitEnd(t, 5*time.Second); connect.CodeOf(err) != connect.CodeResourceExhausted || !strings.Contains(err.Error(), "--max-streams-per-user") {
		t.Errorf("the 4th stream: %v", err)
	}
	// Another user is not limited by this one.
	other := e.Clients(e.NewUser("limits-other", false), gatewaytest.Protocols[1])
	e.Login(other, upstox, "limits-other")
	openFeed(t, other, upstox, []string{nifty}, feedgatev1.FeedMode_FEED_MODE_LTPC).next(t, 5*time.Second, isTicks)
	// Closing one frees its place.
	streams[0].cancel()
	deadline := time.Now().Add(5 * time.Second)
	for {
		s := openFeed(t, c, upstox, []string{nifty}, feedgatev1.FeedMode_FEED_MODE_LTPC)
		ok := false
		select {
		case m := <-s.msgs:
			ok = m != nil
		case err := <-s.done:
			if connect.CodeOf(err) != connect.CodeResourceExhausted {
				t.Fatalf("after closing a stream: %v", err)
			}
		case <-time.After(5 * time.Second):
		}
		if ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("a closed stream's place was never given back")
		}
		time.Sleep(20 * time.Millisecond)
	}
	// Watchers.
	var ws []*connect.ServerStreamForClient[feedgatev1.WatchConnectionStatusResponse]
	for range 3 {
		w, err := c.Connection.WatchConnectionStatus(ctx, connect.NewRequest(&feedgatev1.WatchConnectionStatusRequest{}))
		if err != nil {
			t.Fatal(err)
		}
		ws = append(ws, w)
	}
	for i, w := range ws {
		got := w.Receive()
		if i < 2 && !got {
			t.Errorf("watcher %d: %v", i+1, w.Err())
		}
		if i == 2 && (got || connect.CodeOf(w.Err()) != connect.CodeResourceExhausted || !strings.Contains(w.Err().Error(), "--max-watchers-per-user")) {
			t.Errorf("the 3rd watcher: %v", w.Err())
		}
	}
	for _, w := range ws {
		w.Close()
	}
}
