package metrics

// Feed holds the feed hub's metrics. Labels are broker and state only.
type Feed struct {
	// OpenStreams counts client streams open, by broker.
	OpenStreams *GaugeVec
	// Upstreams counts upstream feed connections by broker and state
	// (connecting, live, reconnecting).
	Upstreams *GaugeVec
	// TicksIn counts ticks received from upstream feeds.
	TicksIn *CounterVec
	// TicksOut counts ticks handed to client streams.
	TicksOut *CounterVec
	// Conflated counts ticks replaced by a newer tick of the same
	// instrument before a slow client read them.
	Conflated *CounterVec
	// Reconnects counts upstream reconnect attempts after a transport loss.
	Reconnects *CounterVec
	// AuthDisconnects counts upstreams ended because the broker connection
	// was disconnected (token dead or logged out).
	AuthDisconnects *CounterVec
}

// NewFeed registers the feed metrics in r.
func NewFeed(r *Registry) *Feed {
	return &Feed{
		OpenStreams:     r.Gauge("feedgate_feed_streams_open", "Client feed streams open.", "broker"),
		Upstreams:       r.Gauge("feedgate_feed_upstreams", "Upstream feed connections by state.", "broker", "state"),
		TicksIn:         r.Counter("feedgate_feed_ticks_in_total", "Ticks received from upstream feeds.", "broker"),
		TicksOut:        r.Counter("feedgate_feed_ticks_out_total", "Ticks delivered to client streams.", "broker"),
		Conflated:       r.Counter("feedgate_feed_ticks_conflated_total", "Ticks replaced by a newer tick of the same instrument before a slow client read them.", "broker"),
		Reconnects:      r.Counter("feedgate_feed_reconnects_total", "Upstream feed reconnect attempts after a transport loss.", "broker"),
		AuthDisconnects: r.Counter("feedgate_feed_auth_disconnects_total", "Upstream feeds ended because the broker connection was disconnected.", "broker"),
	}
}
