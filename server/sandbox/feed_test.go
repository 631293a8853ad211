package sandbox

import (
	"context"
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"github.com/coder/websocket"
	"go.uber.org/goleak"
	"google.golang.org/protobuf/proto"

	"github.com/feedgate/feedgate/gen/go/upstox/feedv3"
)

func (e *env) feedURL(tok string) string {
	e.t.Helper()
	r := e.upstox("GET", "/v3/feed/market-data-feed/authorize", tok)
	d := obj(r.body["data"])
	u, _ := d["authorized_redirect_uri"].(string)
	if r.status != 200 || u == "" || d["authorizedRedirectUri"] != u {
		e.t.Fatalf("authorize: %d %s", r.status, r.raw)
	}
	return u
}

func readFeed(t *testing.T, ctx context.Context, c *websocket.Conn) *feedv3.FeedResponse {
	t.Helper()
	typ, b, err := c.Read(ctx)
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	if typ != websocket.MessageBinary {
		t.Fatalf("frame type %v", typ)
	}
	var fr feedv3.FeedResponse
	if err := proto.Unmarshal(b, &fr); err != nil {
		t.Fatal(err)
	}
	if fr.GetSandboxSentUnixNanos() == 0 {
		t.Fatal("sandboxSentUnixNanos not set")
	}
	return &fr
}

func sub(t *testing.T, ctx context.Context, c *websocket.Conn, method, mode string, keys ...string) {
	t.Helper()
	b, _ := json.Marshal(map[string]any{"guid": "g1", "method": method, "data": map[string]any{"mode": mode, "instrumentKeys": keys}})
	if err := c.Write(ctx, websocket.MessageBinary, b); err != nil {
		t.Fatal(err)
	}
}

func TestFeed(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Config{FeedInterval: 20 * time.Millisecond})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	tok := e.upstoxLogin("alice")
	u := e.feedURL(tok)
	c, _, err := websocket.Dial(ctx, u, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseNow()
	// The URL is single-use.
	if _, resp, err := websocket.Dial(ctx, u, nil); err == nil || resp == nil || resp.StatusCode != http.StatusForbidden {
		t.Fatalf("second dial: %v %v", err, resp)
	}
	if fr := readFeed(t, ctx, c); fr.Type != feedv3.Type_market_info || fr.MarketInfo.SegmentStatus["NSE_FO"] != feedv3.MarketStatus_NORMAL_OPEN {
		t.Fatalf("first message %v", fr)
	}
	opt := e.sb.OptionKeys(Upstox, nifty, "", 1)[0]
	sub(t, ctx, c, "sub", "full", nifty, opt)
	fr := readFeed(t, ctx, c)
	if fr.Type != feedv3.Type_initial_feed || len(fr.Feeds) != 2 {
		t.Fatalf("initial %v", fr)
	}
	if fr.Feeds[nifty].GetFullFeed().GetIndexFF().GetLtpc().GetLtp() < 20000 {
		t.Fatalf("index full feed %v", fr.Feeds[nifty])
	}
	mff := fr.Feeds[opt].GetFullFeed().GetMarketFF()
	if mff.GetOptionGreeks() == nil || len(mff.GetMarketLevel().GetBidAskQuote()) != 5 || fr.Feeds[opt].RequestMode != feedv3.RequestMode_full_d5 {
		t.Fatalf("option full feed %v", fr.Feeds[opt])
	}
	// REST and feed agree at the same clock.
	rest := e.upstox("GET", "/v3/market-quote/ltp?instrument_key=NSE_INDEX%7CNifty%2050", tok)
	if lp := obj(obj(rest.body["data"])["NSE_INDEX:Nifty 50"])["last_price"]; lp != fr.Feeds[nifty].GetFullFeed().GetIndexFF().GetLtpc().GetLtp() {
		t.Errorf("REST %v vs feed %v", lp, fr.Feeds[nifty])
	}
	if fr := readFeed(t, ctx, c); fr.Type != feedv3.Type_live_feed || len(fr.Feeds) != 2 {
		t.Fatalf("live %v", fr)
	}
	sub(t, ctx, c, "change_mode", "option_greeks", opt)
	sub(t, ctx, c, "unsub", "", nifty)
	for {
		fr := readFeed(t, ctx, c)
		if f, ok := fr.Feeds[opt]; ok && len(fr.Feeds) == 1 && f.GetFirstLevelWithGreeks() != nil {
			if f.GetFirstLevelWithGreeks().GetOptionGreeks().GetDelta() == 0 {
				t.Fatalf("greeks %v", f)
			}
			break
		}
	}
	// Revoke closes the socket with 1008 and the next authorize is 401.
	e.sb.Revoke(Upstox, "alice")
	for {
		if _, _, err := c.Read(ctx); err != nil {
			if got := websocket.CloseStatus(err); got != websocket.StatusPolicyViolation {
				t.Fatalf("close status %v (%v)", got, err)
			}
			break
		}
	}
	wantUpstoxError(t, e.upstox("GET", "/v3/feed/market-data-feed/authorize", tok), 401, upCodeInvalidToken)
	// The client can see the close before the server's handler has
	// finished counting the socket closed: wait for it, briefly.
	var st Stats
	for deadline := time.Now().Add(5 * time.Second); ; {
		st = e.sb.Stats()
		if len(st.FeedConnections) == 1 && st.FeedConnections[0].Open == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if len(st.FeedConnections) != 1 || st.FeedConnections[0].Total != 1 || st.FeedConnections[0].Open != 0 {
		t.Fatalf("feed stats %+v", st.FeedConnections)
	}
}

func TestFeedRefusals(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Config{FeedInterval: time.Hour})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	tok := e.upstoxLogin("bob")
	u := e.feedURL(tok)
	e.sb.Expire(Upstox, "bob")
	if _, resp, err := websocket.Dial(ctx, u, nil); err == nil || resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("dead token dial: %v", err)
	}
	tok = e.upstoxLogin("bob")
	c1, _, err := websocket.Dial(ctx, e.feedURL(tok), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c1.CloseNow()
	readFeed(t, ctx, c1)
	// A second socket of the account replaces the first.
	c2, _, err := websocket.Dial(ctx, e.feedURL(tok), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c2.CloseNow()
	if _, _, err := c1.Read(ctx); websocket.CloseStatus(err) != websocket.StatusPolicyViolation {
		t.Fatalf("older socket: %v", err)
	}
	readFeed(t, ctx, c2)
	// Over the LTPC limit closes the socket.
	keys := make([]string, 5001)
	for i := range keys {
		keys[i] = "NSE_FO|" + string(rune('a'+i%26)) + itoa(i)
	}
	sub(t, ctx, c2, "sub", "ltpc", keys...)
	for {
		_, _, err := c2.Read(ctx)
		if err != nil {
			if websocket.CloseStatus(err) != websocket.StatusPolicyViolation {
				t.Fatalf("limit close: %v", err)
			}
			break
		}
	}
}

func itoa(i int) string { b, _ := json.Marshal(i); return string(b) }

func TestCloseLeavesNoGoroutines(t *testing.T) {
	ignore := goleak.IgnoreCurrent()
	e := newEnv(t, Config{FeedInterval: 10 * time.Millisecond})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, _, err := websocket.Dial(ctx, e.feedURL(e.upstoxLogin("x")), nil)
	if err != nil {
		t.Fatal(err)
	}
	sub(t, ctx, c, "sub", "ltpc", nifty)
	readFeed(t, ctx, c)
	go func() { // the client answers the close handshake
		for {
			if _, _, err := c.Read(ctx); err != nil {
				return
			}
		}
	}()
	if err := e.sb.Close(); err != nil {
		t.Fatal(err)
	}
	if err := e.sb.Close(); err != nil {
		t.Fatal(err)
	}
	e.srv.Close()
	c.CloseNow()
	e.srv.Client().CloseIdleConnections()
	e.client.CloseIdleConnections()
	goleak.VerifyNone(t, ignore)
}
