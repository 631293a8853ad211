package upstox

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/feedgate/feedgate/gen/go/upstox/feedv3"
	"github.com/feedgate/feedgate/server/broker"
	"github.com/feedgate/feedgate/server/sandbox"
	"github.com/feedgate/feedgate/server/secret"
)

// feedResponse builds a FeedResponse of n instruments cycling through the
// three feed shapes.
func feedResponse(n int) *feedv3.FeedResponse {
	r := &feedv3.FeedResponse{Type: feedv3.Type_live_feed, CurrentTs: 1_700_000_000_123, Feeds: map[string]*feedv3.Feed{}}
	for i := range n {
		ltpc := &feedv3.LTPC{Ltp: 100 + float64(i), Ltt: 1_700_000_000_000 + int64(i), Ltq: int64(i + 1), Cp: 99.5}
		g := &feedv3.OptionGreeks{Delta: 0.5, Theta: -1.25, Gamma: 0.01, Vega: 3.5, Rho: 0.2}
		var f *feedv3.Feed
		switch i % 4 {
		case 0:
			f = &feedv3.Feed{FeedUnion: &feedv3.Feed_Ltpc{Ltpc: ltpc}}
		case 1:
			f = &feedv3.Feed{RequestMode: feedv3.RequestMode_option_greeks, FeedUnion: &feedv3.Feed_FirstLevelWithGreeks{
				FirstLevelWithGreeks: &feedv3.FirstLevelWithGreeks{Ltpc: ltpc, FirstDepth: &feedv3.Quote{BidQ: 10, BidP: 1.5, AskQ: 20, AskP: 1.6},
					OptionGreeks: g, Vtt: 12345, Oi: 678, Iv: 14.2}}}
		case 2:
			f = &feedv3.Feed{RequestMode: feedv3.RequestMode_full_d5, FeedUnion: &feedv3.Feed_FullFeed{FullFeed: &feedv3.FullFeed{
				FullFeedUnion: &feedv3.FullFeed_MarketFF{MarketFF: &feedv3.MarketFullFeed{Ltpc: ltpc,
					MarketLevel:  &feedv3.MarketLevel{BidAskQuote: []*feedv3.Quote{{BidQ: 5, BidP: 2.5, AskQ: 6, AskP: 2.6}, {BidQ: 7, BidP: 2.4, AskQ: 8, AskP: 2.7}}},
					OptionGreeks: g, MarketOHLC: &feedv3.MarketOHLC{Ohlc: []*feedv3.OHLC{{Interval: "1d", Open: 1, High: 2, Low: 0.5, Close: 1.5, Vol: 9, Ts: 1}}},
					Atp: 1.4, Vtt: 999, Oi: 55, Iv: 17.5, Tbq: 100, Tsq: 200}}}}}
		case 3:
			f = &feedv3.Feed{RequestMode: feedv3.RequestMode_full_d5, FeedUnion: &feedv3.Feed_FullFeed{FullFeed: &feedv3.FullFeed{
				FullFeedUnion: &feedv3.FullFeed_IndexFF{IndexFF: &feedv3.IndexFullFeed{Ltpc: ltpc}}}}}
		}
		r.Feeds[fmt.Sprintf("NSE_FO|%d", 40000+i)] = f
	}
	return r
}

// referenceTicks converts with the generated types, the obvious way.
func referenceTicks(r *feedv3.FeedResponse) map[string]broker.Tick {
	out := map[string]broker.Tick{}
	at := r.GetSandboxSentUnixNanos()
	if at == 0 {
		at = r.GetCurrentTs() * int64(time.Millisecond)
	}
	for k, f := range r.GetFeeds() {
		t := broker.Tick{InstrumentKey: k, BrokerTimeUnixNanos: at}
		setLTPC := func(l *feedv3.LTPC) {
			t.LTP, t.LTTUnixMs, t.LTQ, t.ClosePrice = l.GetLtp(), l.GetLtt(), l.GetLtq(), l.GetCp()
		}
		setGreeks := func(g *feedv3.OptionGreeks) {
			if g != nil {
				t.HasGreeks = true
				t.Greeks = broker.Greeks{Delta: g.Delta, Gamma: g.Gamma, Theta: g.Theta, Vega: g.Vega, Rho: g.Rho}
			}
		}
		switch {
		case f.GetLtpc() != nil:
			setLTPC(f.GetLtpc())
		case f.GetFirstLevelWithGreeks() != nil:
			x := f.GetFirstLevelWithGreeks()
			t.Mode = broker.ModeOptionGreeks
			setLTPC(x.GetLtpc())
			setGreeks(x.GetOptionGreeks())
			q := x.GetFirstDepth()
			t.BidQty, t.BidPrice, t.AskQty, t.AskPrice = q.GetBidQ(), q.GetBidP(), q.GetAskQ(), q.GetAskP()
			t.Volume, t.OI, t.IV = x.GetVtt(), x.GetOi(), x.GetIv()
		case f.GetFullFeed().GetMarketFF() != nil:
			x := f.GetFullFeed().GetMarketFF()
			t.Mode = broker.ModeFull
			setLTPC(x.GetLtpc())
			setGreeks(x.GetOptionGreeks())
			if qs := x.GetMarketLevel().GetBidAskQuote(); len(qs) > 0 {
				t.BidQty, t.BidPrice, t.AskQty, t.AskPrice = qs[0].GetBidQ(), qs[0].GetBidP(), qs[0].GetAskQ(), qs[0].GetAskP()
			}
			t.Volume, t.OI, t.IV = x.GetVtt(), x.GetOi(), x.GetIv()
		case f.GetFullFeed().GetIndexFF() != nil:
			t.Mode = broker.ModeFull
			setLTPC(f.GetFullFeed().GetIndexFF().GetLtpc())
		}
		out[k] = t
	}
	return out
}

func TestDecodeMatchesGeneratedTypes(t *testing.T) {
	t.Parallel()
	for _, sandboxTS := range []int64{0, 1_700_000_000_123_456_789} {
		r := feedResponse(40)
		r.SandboxSentUnixNanos = sandboxTS
		b, err := proto.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		got, err := newDecoder().decode(b)
		if err != nil {
			t.Fatal(err)
		}
		want := referenceTicks(r)
		if len(got) != len(want) {
			t.Fatalf("got %d ticks, want %d", len(got), len(want))
		}
		for _, g := range got {
			if w := want[g.InstrumentKey]; g != w {
				t.Errorf("tick %s:\n got %+v\nwant %+v", g.InstrumentKey, g, w)
			}
		}
	}
}

func TestDecodeMarketInfoHasNoTicks(t *testing.T) {
	t.Parallel()
	b, _ := proto.Marshal(&feedv3.FeedResponse{Type: feedv3.Type_market_info, CurrentTs: 5,
		MarketInfo: &feedv3.MarketInfo{SegmentStatus: map[string]feedv3.MarketStatus{"NSE_EQ": feedv3.MarketStatus_NORMAL_OPEN}}})
	got, err := newDecoder().decode(b)
	if err != nil || len(got) != 0 {
		t.Fatalf("decode(market_info) = %v, %v; want no ticks", got, err)
	}
}

func TestDecodeRejectsGarbage(t *testing.T) {
	t.Parallel()
	b, _ := proto.Marshal(feedResponse(3))
	if _, err := newDecoder().decode(b[:len(b)-3]); err == nil {
		t.Fatal("truncated message decoded without error")
	}
}

// FuzzDecode feeds arbitrary frames to the feed decoder. It proves: no
// panic; a decoder reused after another frame (as the feed client reuses
// it) answers exactly as a fresh one, so no state leaks between frames;
// every tick names a non-empty instrument key that is in the frame; and
// when the generated types accept the frame, every key the decoder reports
// is one of its feeds.
func FuzzDecode(f *testing.F) {
	for _, n := range []int{0, 1, 2, 3, 4, 9} {
		b, _ := proto.Marshal(feedResponse(n))
		f.Add(b)
		if len(b) > 3 {
			f.Add(b[:len(b)-3]) // truncated
		}
	}
	info, _ := proto.Marshal(&feedv3.FeedResponse{Type: feedv3.Type_market_info, CurrentTs: 5,
		MarketInfo: &feedv3.MarketInfo{SegmentStatus: map[string]feedv3.MarketStatus{"NSE_EQ": feedv3.MarketStatus_NORMAL_OPEN}}})
	f.Add(info)
	f.Add([]byte{})
	f.Add([]byte{0x12, 0x00})       // an empty feeds entry
	f.Add([]byte{0x12, 0x02, 0x0a}) // an entry cut inside its key
	warm, _ := proto.Marshal(feedResponse(4))
	f.Fuzz(func(t *testing.T, b []byte) {
		fresh, err := newDecoder().decode(b)
		reused := newDecoder()
		if _, err := reused.decode(warm); err != nil {
			t.Fatal(err)
		}
		again, err2 := reused.decode(b)
		if (err == nil) != (err2 == nil) || len(fresh) != len(again) {
			t.Fatalf("fresh decoder: %d ticks, %v; reused: %d ticks, %v", len(fresh), err, len(again), err2)
		}
		for i := range fresh {
			if fmt.Sprintf("%+v", fresh[i]) != fmt.Sprintf("%+v", again[i]) { // NaN-safe
				t.Fatalf("tick %d: fresh %+v, reused %+v", i, fresh[i], again[i])
			}
		}
		if err != nil {
			return
		}
		for _, tk := range fresh {
			if tk.InstrumentKey == "" || !bytes.Contains(b, []byte(tk.InstrumentKey)) {
				t.Fatalf("tick key %q is not in the frame", tk.InstrumentKey)
			}
		}
		var ref feedv3.FeedResponse
		if proto.Unmarshal(b, &ref) != nil {
			return
		}
		for _, tk := range fresh {
			if _, ok := ref.GetFeeds()[tk.InstrumentKey]; !ok {
				t.Fatalf("key %q decoded, but the generated types see feeds %v", tk.InstrumentKey, ref.GetFeeds())
			}
		}
	})
}

// BenchmarkDecodeFeed decodes a 100-instrument FeedResponse into ticks
// with the wire decoder the feed uses.
func BenchmarkDecodeFeed(b *testing.B) {
	msg, _ := proto.Marshal(feedResponse(100))
	d := newDecoder()
	b.SetBytes(int64(len(msg)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := d.decode(msg); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkDecodeFeedGenerated is the baseline: proto.Unmarshal into the
// generated types, then conversion.
func BenchmarkDecodeFeedGenerated(b *testing.B) {
	msg, _ := proto.Marshal(feedResponse(100))
	b.SetBytes(int64(len(msg)))
	b.ReportAllocs()
	for b.Loop() {
		var r feedv3.FeedResponse
		if err := proto.Unmarshal(msg, &r); err != nil {
			b.Fatal(err)
		}
		_ = referenceTicks(&r)
	}
}

// sandboxEnv is a sandbox broker on a loopback HTTP server.
type sandboxEnv struct {
	sb  *sandbox.Sandbox
	srv *httptest.Server
}

func newSandboxEnv(t *testing.T, interval time.Duration) *sandboxEnv {
	t.Helper()
	sb, err := sandbox.New(sandbox.Config{FeedInterval: interval})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(sb.Handler())
	t.Cleanup(func() {
		_ = sb.Close()
		srv.Close()
	})
	return &sandboxEnv{sb: sb, srv: srv}
}

// login drives the sandbox's OAuth flow as account and returns the client
// and credentials.
func (e *sandboxEnv) login(t *testing.T, account string) (*Client, broker.Credentials) {
	t.Helper()
	c, err := New(Config{ClientID: sandbox.UpstoxClientID, ClientSecret: secret.New(sandbox.UpstoxClientSecret),
		RedirectURL: "http://127.0.0.1/cb", BaseURL: e.srv.URL + "/upstox"})
	if err != nil {
		t.Fatal(err)
	}
	hc := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := hc.Get(c.LoginURL("st") + "&account=" + account)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	loc, err := url.Parse(resp.Header.Get("Location"))
	if err != nil || loc.Query().Get("code") == "" {
		t.Fatalf("login redirect %q: %v", resp.Header.Get("Location"), err)
	}
	tok, err := c.ExchangeCode(context.Background(), loc.Query().Get("code"))
	if err != nil {
		t.Fatal(err)
	}
	return c, broker.Credentials{UserID: "u-" + account, Token: tok.Access}
}

func TestFeedAgainstSandbox(t *testing.T) {
	t.Parallel()
	e := newSandboxEnv(t, 50*time.Millisecond)
	c, cr := e.login(t, "alice")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	fc, err := c.DialFeed(ctx, cr, broker.FeedOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer fc.Close()
	keys := []string{"NSE_INDEX|Nifty 50", "NSE_INDEX|Nifty Bank"}
	if err := fc.Subscribe(ctx, keys, broker.ModeFull); err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for len(seen) < len(keys) {
		ticks, err := fc.Next(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, tk := range ticks {
			if tk.LTP <= 0 || tk.BrokerTimeUnixNanos == 0 || tk.Mode != broker.ModeFull {
				t.Fatalf("implausible tick %+v", tk)
			}
			seen[tk.InstrumentKey] = true
		}
	}
	if err := fc.ChangeMode(ctx, keys[:1], broker.ModeLTPC); err != nil {
		t.Fatal(err)
	}
	if err := fc.Unsubscribe(ctx, keys[1:]); err != nil {
		t.Fatal(err)
	}
	// After the sandbox applies both, only Nifty 50 in LTPC arrives.
	deadline := time.Now().Add(5 * time.Second)
	for {
		ticks, err := fc.Next(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(ticks) == 1 && ticks[0].InstrumentKey == keys[0] && ticks[0].Mode == broker.ModeLTPC {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("still getting %+v", ticks)
		}
	}

	// A revoke closes the socket: the loss is upstream (a reconnect will
	// learn the rest), and the next dial is auth dead.
	e.sb.Revoke(sandbox.Upstox, "alice")
	for {
		if _, err = fc.Next(ctx); err != nil {
			break
		}
	}
	if be, ok := broker.AsError(err); !ok || be.Class != broker.ClassUpstream {
		t.Fatalf("Next after revoke = %v, want ClassUpstream", err)
	}
	if _, err := c.DialFeed(ctx, cr, broker.FeedOptions{}); !broker.IsAuthDead(err) {
		t.Fatalf("DialFeed after revoke = %v, want auth dead", err)
	}
}

func TestFeedHandshakeRefusedIsAuthDead(t *testing.T) {
	t.Parallel()
	e := newSandboxEnv(t, time.Second)
	c, cr := e.login(t, "bob")
	ctx := context.Background()
	uri, err := c.authorizeFeed(ctx, cr)
	if err != nil {
		t.Fatal(err)
	}
	fc, err := dialFeedURL(ctx, uri, 0)
	if err != nil {
		t.Fatal(err)
	}
	fc.Close()
	if _, err := dialFeedURL(ctx, uri, 0); !broker.IsAuthDead(err) {
		t.Fatalf("second use of a feed URL = %v, want auth dead (403)", err)
	}
}

func TestFeedSilentSocketIsLost(t *testing.T) {
	t.Parallel()
	e := newSandboxEnv(t, time.Hour) // no live rounds; pings only after 5 s
	c, cr := e.login(t, "carol")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	fc, err := c.DialFeed(ctx, cr, broker.FeedOptions{IdleTimeout: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer fc.Close()
	start := time.Now()
	_, err = fc.Next(ctx)
	if be, ok := broker.AsError(err); !ok || be.Class != broker.ClassUpstream || be.Message != "feed connection silent for too long" {
		t.Fatalf("Next on a silent socket = %v", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("silence detected after %v", d)
	}
}
