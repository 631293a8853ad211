package metrics

import (
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
)

func TestExposition(t *testing.T) {
	t.Parallel()
	r := NewRegistry()
	f := NewFeed(r)
	f.TicksIn.With("upstox").Add(5)
	f.TicksIn.With("fyers").Inc()
	g := f.Upstreams.With("upstox", "live")
	g.Inc()
	g.Inc()
	g.Dec()
	r.Gauge("odd", "a \\ help\nline", "l").With("q\"u\\o\nte").Set(-3)
	srv := httptest.NewServer(r.Handler())
	defer srv.Close()
	resp, err := http.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != ContentType {
		t.Fatalf("content type %q", ct)
	}
	b, _ := io.ReadAll(resp.Body)
	want := `# HELP feedgate_feed_streams_open Client feed streams open.
# TYPE feedgate_feed_streams_open gauge
# HELP feedgate_feed_upstreams Upstream feed connections by state.
# TYPE feedgate_feed_upstreams gauge
feedgate_feed_upstreams{broker="upstox",state="live"} 1
# HELP feedgate_feed_ticks_in_total Ticks received from upstream feeds.
# TYPE feedgate_feed_ticks_in_total counter
feedgate_feed_ticks_in_total{broker="fyers"} 1
feedgate_feed_ticks_in_total{broker="upstox"} 5
# HELP feedgate_feed_ticks_out_total Ticks delivered to client streams.
# TYPE feedgate_feed_ticks_out_total counter
# HELP feedgate_feed_ticks_conflated_total Ticks replaced by a newer tick of the same instrument before a slow client read them.
# TYPE feedgate_feed_ticks_conflated_total counter
# HELP feedgate_feed_reconnects_total Upstream feed reconnect attempts after a transport loss.
# TYPE feedgate_feed_reconnects_total counter
# HELP feedgate_feed_auth_disconnects_total Upstream feeds ended because the broker connection was disconnected.
# TYPE feedgate_feed_auth_disconnects_total counter
# HELP odd a \\ help\nline
# TYPE odd gauge
odd{l="q\"u\\o\nte"} -3
`
	if string(b) != want {
		t.Fatalf("got:\n%s\nwant:\n%s", b, want)
	}
	resp2, _ := http.Post(srv.URL, "text/plain", nil)
	resp2.Body.Close()
	if resp2.StatusCode != http.StatusMethodNotAllowed {
		t.Fatalf("POST status %d", resp2.StatusCode)
	}
}
