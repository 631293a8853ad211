package main

import (
	"context"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"runtime/pprof"
	"strings"
	"sync"
	"time"

	feedgatev1 "github.com/feedgate/feedgate/gen/go/feedgate/v1"
	"github.com/feedgate/feedgate/server/sandbox"
)

const ticksInSeries = `feedgate_feed_ticks_in_total{broker="upstox"}`
const streamsOpenSeries = `feedgate_feed_streams_open{broker="upstox"}`

// streamReq is the stream request every scenario uses.
func (e *env) streamReq(instruments int) *feedgatev1.StreamMarketFeedRequest {
	return &feedgatev1.StreamMarketFeedRequest{Broker: feedgatev1.Broker_BROKER_UPSTOX,
		InstrumentKeys: e.keys[:instruments], Mode: feedgatev1.FeedMode_FEED_MODE_OPTION_GREEKS}
}

// fanoutScenario runs users×perUser streams, each on the same instruments,
// with the sandbox sending one tick per instrument every interval, against
// the gateway and the bare servers.
func (e *env) fanoutScenario(ctx context.Context, name string, users, perUser, instruments int, interval time.Duration) (Summary, error) {
	streams := users * perUser
	perStream := float64(instruments) * float64(time.Second) / float64(interval)
	s := Summary{Scenario: name, Description: fmt.Sprintf("%d user(s) x %d stream(s) on %d instruments, %g ticks/s offered per stream (%g deliveries/s)",
		users, perUser, instruments, perStream, perStream*float64(streams))}
	kinds := []string{kindGateway}
	if e.cfg.Bare {
		kinds = append(kinds, kindConnect, kindGRPC)
	}
	for _, k := range kinds {
		r, err := e.fanout(ctx, k, users, perUser, instruments, interval, name == "fanout")
		if err != nil {
			return s, fmt.Errorf("%s: %w", k, err)
		}
		r.OfferedPerStream = perStream
		s.Results = append(s.Results, r)
	}
	s.ratios()
	g := s.Results[0]
	switch name {
	case "fanout":
		s.target("delivered >= 99% of offered", "99%", fmt.Sprintf("%.2f%%", g.DeliveredPct), g.DeliveredPct >= 99)
		s.target("p99 publish-to-receive < 100 ms", "100 ms", fmt.Sprintf("%.2f ms", g.Latency.P99), g.Latency.P99 < 100 && g.Latency.N > 0)
	case "light":
		if len(s.Results) > 1 {
			b := s.Results[1].Latency.P99
			s.target("p99 within 2x bare connect-go + 1 ms", fmt.Sprintf("%.2f ms", 2*b+1), fmt.Sprintf("%.2f ms", g.Latency.P99), g.Latency.P99 <= 2*b+1 && g.Latency.N > 0)
		}
	}
	return s, nil
}

// fanout measures one server.
func (e *env) fanout(ctx context.Context, kind string, users, perUser, instruments int, interval time.Duration, profile bool) (Result, error) {
	streams := users * perUser
	r := Result{Server: kind, Streams: streams, Users: users, Instruments: instruments}
	if kind != kindGateway {
		r.Users = 0
	}
	srv, err := e.start(serverSpec{Kind: kind, Instruments: instruments, Interval: interval})
	if err != nil {
		return r, err
	}
	defer srv.stop()
	r.Scope = srv.scope()
	keys := make([]userKey, users)
	if kind == kindGateway {
		if err := e.sandboxConfig(interval, false); err != nil {
			return r, err
		}
		if keys, err = e.users(ctx, srv, users); err != nil {
			return r, err
		}
		if err := e.loginAll(ctx, srv, keys); err != nil {
			return r, err
		}
	}
	ss := newStreamSet(srv.Addr, e.cfg.PerConn)
	defer ss.close()
	req := e.streamReq(instruments)
	for u := range users {
		for range perUser {
			if _, err := ss.open(keys[u].Key, req); err != nil {
				return r, err
			}
		}
	}
	if !waitFor(60*time.Second, func() bool { return ss.gotTick.Load() == int64(streams) }) {
		return r, fmt.Errorf("only %d of %d streams got a tick within 60 s", ss.gotTick.Load(), streams)
	}
	sleepCtx(ctx, e.cfg.Warmup)

	ticksIn := func() float64 {
		if kind == kindGateway {
			v, _ := metric(srv.Addr, ticksInSeries)
			return v
		}
		return 0
	}
	// Both boundaries lie halfway between rounds (the gateway's users
	// share the sandbox's phase only loosely, but one upstream's rounds
	// are 100k deliveries each, so a boundary inside one would move
	// delivered% by a whole round).
	t0 := ss.midRound(time.Now(), interval)
	ss.openWindowAt(t0) // before t0: ticks sent after it count however soon they arrive
	sleepCtx(ctx, time.Until(t0))
	o0, st0, self0 := ticksIn(), srv.stats(false), must(procCPU(os.Getpid()))
	var prof sync.WaitGroup
	if profile && kind == kindGateway && e.cfg.CPUProfile != "" && srv.Debug != "" {
		if srv.PID != os.Getpid() {
			// The load generator's own profile, to see what it costs.
			if f, err := os.Create(e.cfg.CPUProfile + ".client"); err == nil {
				if pprof.StartCPUProfile(f) == nil {
					defer func() { pprof.StopCPUProfile(); f.Close() }()
				}
			}
		}
		prof.Go(func() { e.fetchProfile(srv.Debug, e.cfg.Window, "") })
	}
	sleepCtx(ctx, time.Until(t0.Add(e.cfg.Window-interval)))
	t1 := ss.midRound(time.Now(), interval)
	sleepCtx(ctx, time.Until(t1))
	o1, st1, self1 := ticksIn(), srv.stats(false), must(procCPU(os.Getpid()))
	win := t1.Sub(t0)
	prof.Wait()
	// Ticks sent within the window but still queued count if they arrive
	// within the grace period (a bare server may hold seconds of backlog).
	ss.closeWindowAt(ctx, t1, min(2*time.Second, e.cfg.Window))
	ss.close()
	h, delivered, conflated, msgs, received := ss.tally(ss.recs)
	r.ReceivedPerSec = math.Round(float64(received) / win.Seconds())
	r.Errors = errs(ss.recs)
	r.Window = win.Seconds()
	// Offered: for the gateway, every round the sandbox sent within the
	// window (seen by any stream of the user) carries one tick per
	// instrument for each of the user's streams; the gateway's own count
	// of ticks received is kept as a cross-check. For a bare server, the
	// ticks its generator sent within the window, times the streams.
	if kind == kindGateway {
		r.Offered = ss.roundCount() * int64(instruments) * int64(perUser)
		r.GatewayTicksIn = int64(o1 - o0)
	} else {
		var a, b procStats
		_ = getJSON(fmt.Sprintf("%s/feedload/stats?at=%d", srv.Debug, t0.UnixNano()), &a)
		_ = getJSON(fmt.Sprintf("%s/feedload/stats?at=%d", srv.Debug, t1.UnixNano()), &b)
		r.Offered = int64(b.Published-a.Published) * int64(streams)
	}
	r.Delivered = delivered
	r.Conflated = conflated
	r.Messages = msgs
	if kind != kindGateway {
		r.Dropped = (st1.Drops - st0.Drops)
	}
	r.DeliveredPerSec = float64(delivered) / r.Window
	if r.Offered > 0 {
		r.DeliveredPct = round2(100 * float64(delivered) / float64(r.Offered))
	}
	if msgs > 0 {
		r.TicksPerMsg = round2(float64(delivered) / float64(msgs))
	}
	r.Latency = h.summary()
	r.ServerCPU = round2(float64(st1.CPUNanos-st0.CPUNanos) / float64(win))
	r.ClientCPU = round2(float64(self1-self0) / float64(win))
	r.ServerRSSMB = round2(float64(st1.RSS) / (1 << 20))
	r.Goroutines = st1.Goroutines
	return r, nil
}

// fetchProfile writes the server's CPU profile over the next d to the
// -cpuprofile file plus suffix.
func (e *env) fetchProfile(debugURL string, d time.Duration, suffix string) {
	res, err := http.Get(fmt.Sprintf("%s/debug/pprof/profile?seconds=%d", debugURL, max(1, int(d.Seconds()))))
	if err != nil {
		fmt.Fprintln(e.log, "feedload: cpu profile:", err)
		return
	}
	defer res.Body.Close()
	f, err := os.Create(e.cfg.CPUProfile + suffix)
	if err != nil {
		fmt.Fprintln(e.log, "feedload: cpu profile:", err)
		return
	}
	defer f.Close()
	_, _ = io.Copy(f, res.Body)
}

// revocation: one user with victims streams, others users with perOther
// streams each; the sandbox revokes the victim's account.
func (e *env) revocation(ctx context.Context, victims, others, perOther int) (Summary, error) {
	const instruments = 10
	interval := 100 * time.Millisecond
	s := Summary{Scenario: "revocation", Description: fmt.Sprintf("1 user with %d streams revoked at the sandbox while %d other users stream (%d streams each, %d instruments, %v rounds)",
		victims, others, perOther, instruments, interval)}
	r := Result{Server: kindGateway, Streams: victims + others*perOther, Users: 1 + others, Instruments: instruments}
	srv, err := e.start(serverSpec{Kind: kindGateway})
	if err != nil {
		return s, err
	}
	defer srv.stop()
	r.Scope = srv.scope()
	if err := e.sandboxConfig(interval, false); err != nil {
		return s, err
	}
	keys, err := e.users(ctx, srv, 1+others)
	if err != nil {
		return s, err
	}
	if err := e.loginAll(ctx, srv, keys); err != nil {
		return s, err
	}
	ss := newStreamSet(srv.Addr, e.cfg.PerConn)
	defer ss.close()
	req := e.streamReq(instruments)
	// Interleave the victim's streams with the others' on the
	// connections, as real clients would be.
	var victimRecs, otherRecs []*streamRec
	for i := 0; i < max(victims, others*perOther); i++ {
		if i < victims {
			rec, err := ss.open(keys[0].Key, req)
			if err != nil {
				return s, err
			}
			victimRecs = append(victimRecs, rec)
		}
		if i < others*perOther {
			rec, err := ss.open(keys[1+i%others].Key, req)
			if err != nil {
				return s, err
			}
			otherRecs = append(otherRecs, rec)
		}
	}
	total := int64(len(victimRecs) + len(otherRecs))
	if !waitFor(60*time.Second, func() bool { return ss.gotTick.Load() == total }) {
		return s, fmt.Errorf("only %d of %d streams got a tick within 60 s", ss.gotTick.Load(), total)
	}
	sleepCtx(ctx, e.cfg.Warmup)
	victim := keys[0].Name
	calls0, by0, err := e.sandboxCalls(victim, "")
	if err != nil {
		return s, err
	}
	ss.openWindow()
	var prof sync.WaitGroup
	if e.cfg.CPUProfile != "" && srv.Debug != "" {
		prof.Go(func() { e.fetchProfile(srv.Debug, time.Second, ".revocation") })
		time.Sleep(50 * time.Millisecond)
	}
	defer prof.Wait()
	t0 := time.Now()
	if os.Getenv("FEEDLOAD_GATEWAY_LOG") != "" {
		fmt.Fprintf(e.log, "feedload: revoking %s at %s\n", victim, t0.Format(time.StampMicro))
	}
	if err := postJSON(e.sbURL+"/sandbox/revoke", map[string]string{"broker": "upstox", "account": victim}, nil); err != nil {
		return s, err
	}
	reached := waitFor(20*time.Second, func() bool { return ss.authN.Load() >= int64(victims) })
	// Let any late broker calls (there should be none) land, and keep
	// measuring the other users for the same period.
	sleepCtx(ctx, max(time.Second, e.cfg.Window/2))
	ss.closeWindow(ctx, 200*time.Millisecond)
	calls1, by1, err := e.sandboxCalls(victim, "")
	if err != nil {
		return s, err
	}
	ss.close()
	var auth hist
	var missing int
	for _, rec := range victimRecs {
		if rec.authAt.IsZero() {
			missing++
			continue
		}
		auth.add(rec.authAt.Sub(t0))
	}
	oh, delivered, _, _, _ := ss.tally(otherRecs)
	r.Auth = auth.summary()
	r.AuthMissing = missing
	r.BrokerCalls = calls1 - calls0
	r.CallsByPath = map[string]int64{}
	for k, v := range by1 {
		if d := v - by0[k]; d > 0 {
			r.CallsByPath[k] = d
			if strings.HasSuffix(k, " 401") {
				r.Broker401 += d
			}
		}
	}
	r.Latency = oh.summary()
	r.Delivered = delivered
	r.Window = time.Since(t0).Seconds()
	r.Errors = errs(otherRecs)
	s.Results = append(s.Results, r)
	s.target("auth_required reaches every stream", fmt.Sprint(victims), fmt.Sprint(victims-missing), reached && missing == 0)
	s.target("revocation-to-auth_required p99 < 50 ms", "50 ms", fmt.Sprintf("%.2f ms", r.Auth.P99), r.Auth.P99 < 50 && missing == 0)
	s.target("exactly one broker call (the 401) after revocation", "1 call, 1x 401", fmt.Sprintf("%d calls, %dx 401", r.BrokerCalls, r.Broker401), r.BrokerCalls == 1 && r.Broker401 == 1)
	return s, nil
}

// unary measures GetOptionChain through the gateway at 1 and 64 callers,
// beside the same request made directly to the sandbox.
func (e *env) unary(ctx context.Context) (Summary, error) {
	s := Summary{Scenario: "unary", Description: "GetOptionChain (Nifty 50, " + e.expiry + ", ~30 KB of broker JSON) through the gateway vs the same GET /v2/option/chain made directly to the sandbox; sandbox rate limits off. " +
		"The gateway keeps each user under Upstox's 50 requests/s, so the closed-loop runs spread requests over users (1 caller: 16 users in turn; 64 callers: one user each); " +
		"'same user' is 64 callers of one user making the identical request (coalesced; broker calls paced by that user's limit)"}
	srv, err := e.start(serverSpec{Kind: kindGateway})
	if err != nil {
		return s, err
	}
	defer srv.stop()
	if err := e.sandboxConfig(100*time.Millisecond, false); err != nil {
		return s, err
	}
	nUsers := min(64, max(2, int(64*e.cfg.Scale)))
	keys, err := e.users(ctx, srv, nUsers)
	if err != nil {
		return s, err
	}
	if err := e.loginAll(ctx, srv, keys); err != nil {
		return s, err
	}
	brokerCalls := func() int64 {
		var st sandbox.Stats
		if err := getJSON(e.sbURL+"/sandbox/stats", &st); err != nil {
			return -1
		}
		names := map[string]bool{}
		for _, k := range keys {
			names[k.Name] = true
		}
		var n int64
		for _, c := range st.Calls {
			if names[c.Account] && c.Path == "/v2/option/chain" {
				n += c.Count
			}
		}
		return n
	}
	cc, err := dial(srv.Addr)
	if err != nil {
		return s, err
	}
	defer cc.Close()
	req := &feedgatev1.GetOptionChainRequest{Broker: feedgatev1.Broker_BROKER_UPSTOX, UnderlyingKey: underlying, ExpiryDate: e.expiry}
	gwAs := func(ctx context.Context, user int) error {
		var resp feedgatev1.GetOptionChainResponse
		return unaryCall(ctx, cc, keys[user].Key, "/feedgate.v1.MarketDataService/GetOptionChain", req, &resp)
	}
	direct := func(ctx context.Context, _, _ int) error { _, err := e.directChain(ctx, e.expiry); return err }
	d := e.cfg.Window / 2
	runs := []struct {
		name    string
		callers int
		f       func(ctx context.Context, caller, i int) error
	}{
		{"direct-broker", 1, direct},
		{kindGateway, 1, func(ctx context.Context, _, i int) error { return gwAs(ctx, i%min(16, nUsers)) }},
		{"direct-broker", 64, direct},
		{kindGateway, 64, func(ctx context.Context, c, _ int) error { return gwAs(ctx, c%nUsers) }},
		{kindGateway + " (same user)", 64, func(ctx context.Context, _, _ int) error { return gwAs(ctx, 0) }},
	}
	for _, run := range runs {
		for c := range min(run.callers, nUsers) {
			_ = run.f(ctx, c, c) // warm connections and caches
		}
		sleepCtx(ctx, min(1100*time.Millisecond, e.cfg.Window)) // let the per-user limits refill
		calls0 := brokerCalls()
		var prof sync.WaitGroup
		if run.name == kindGateway && run.callers == 1 && e.cfg.CPUProfile != "" && srv.Debug != "" {
			prof.Go(func() { e.fetchProfile(srv.Debug, d, ".unary") })
		}
		r, err := e.load(ctx, run.name, run.callers, d, run.f)
		prof.Wait()
		if err != nil {
			return s, fmt.Errorf("%s: %w", run.name, err)
		}
		if run.name != "direct-broker" {
			r.Scope = srv.scope()
			r.BrokerCalls = brokerCalls() - calls0
		}
		s.Results = append(s.Results, r)
	}
	// Coalescing: bursts of 64 identical requests of one user released at
	// once.
	const bursts, width = 5, 64
	sleepCtx(ctx, min(1100*time.Millisecond, e.cfg.Window))
	calls0 := brokerCalls()
	for range bursts {
		start := make(chan struct{})
		var wg sync.WaitGroup
		for range width {
			wg.Go(func() { <-start; _ = gwAs(ctx, 1) })
		}
		// Slow the first broker call of the burst, so every request of it
		// is in flight before that call returns.
		if err := postJSON(e.sbURL+"/sandbox/faults", map[string]any{"broker": "upstox", "path_prefix": "/v2/option/chain", "latency_ms": 100, "count": 1}, nil); err != nil {
			return s, err
		}
		close(start)
		wg.Wait()
	}
	calls := brokerCalls() - calls0
	s.Results = append(s.Results, Result{Server: kindGateway + " (bursts)", Callers: width, Requests: bursts * width, BrokerCalls: calls})
	s.Coalescing = fmt.Sprintf("%d bursts of %d identical concurrent requests of one user (the first broker call of each slowed by 100 ms at the sandbox) -> %d broker calls", bursts, width, calls)
	over := s.Results[1].Latency.P50 - s.Results[0].Latency.P50
	s.Ratios = map[string]float64{
		"gateway_over_direct_p50_ms_1_caller":   round3(over),
		"gateway_over_direct_p50_ms_64_callers": round3(s.Results[3].Latency.P50 - s.Results[2].Latency.P50),
		"gateway_vs_direct_rps_1_caller":        round2(s.Results[1].RPS / s.Results[0].RPS),
		"gateway_vs_direct_rps_64_callers":      round2(s.Results[3].RPS / s.Results[2].RPS),
	}
	s.target("unary p50 overhead over direct < 1 ms at one caller", "1 ms", fmt.Sprintf("%.3f ms", over), over < 1)
	s.target("identical concurrent requests of one user coalesced", fmt.Sprintf("%d calls", bursts), fmt.Sprintf("%d calls", calls), calls <= bursts)
	return s, nil
}

// load runs callers goroutines calling f(ctx, caller, i) for d.
func (e *env) load(ctx context.Context, name string, callers int, d time.Duration, f func(ctx context.Context, caller, i int) error) (Result, error) {
	r := Result{Server: name, Callers: callers}
	hs := make([]hist, callers)
	ns := make([]int64, callers)
	var fails [1]error
	var mu sync.Mutex
	deadline := time.Now().Add(d)
	t0 := time.Now()
	var wg sync.WaitGroup
	for c := range callers {
		wg.Go(func() {
			for i := 0; time.Now().Before(deadline) && ctx.Err() == nil; i++ {
				st := time.Now()
				if err := f(ctx, c, i); err != nil {
					mu.Lock()
					fails[0] = err
					mu.Unlock()
					return
				}
				hs[c].add(time.Since(st))
				ns[c]++
			}
		})
	}
	wg.Wait()
	if fails[0] != nil {
		return r, fails[0]
	}
	var h hist
	for i := range hs {
		h.merge(&hs[i])
		r.Requests += ns[i]
	}
	r.Window = time.Since(t0).Seconds()
	r.RPS = math.Round(float64(r.Requests) / r.Window)
	r.Latency = h.summary()
	return r, nil
}

// idle opens n idle streams (no ticks) on each server and reports memory
// and goroutines per stream.
func (e *env) idle(ctx context.Context, n int) (Summary, error) {
	s := Summary{Scenario: "idle", Description: fmt.Sprintf("%d idle streams (%d per HTTP/2 connection, 1 instrument, no ticks); per-stream deltas after GC", n, e.cfg.PerConn)}
	if err := e.sandboxConfig(time.Hour, false); err != nil {
		return s, err
	}
	defer func() { _ = e.sandboxConfig(100*time.Millisecond, false) }()
	kinds := []string{kindGateway}
	if e.cfg.Bare {
		kinds = append(kinds, kindConnect, kindGRPC)
	}
	for _, k := range kinds {
		r, err := e.idleOne(ctx, k, n)
		if err != nil {
			return s, fmt.Errorf("%s: %w", k, err)
		}
		s.Results = append(s.Results, r)
	}
	if len(s.Results) > 1 && s.Results[1].RSSPerStreamKB > 0 {
		g, b := s.Results[0], s.Results[1]
		s.Ratios = map[string]float64{
			"gateway_vs_bare_connect_rss_per_stream":  round2(g.RSSPerStreamKB / b.RSSPerStreamKB),
			"gateway_vs_bare_connect_heap_per_stream": round2(g.HeapPerStreamKB / b.HeapPerStreamKB),
		}
		if len(s.Results) > 2 && s.Results[2].RSSPerStreamKB > 0 {
			s.Ratios["gateway_vs_bare_grpc_rss_per_stream"] = round2(g.RSSPerStreamKB / s.Results[2].RSSPerStreamKB)
		}
		ratio := g.RSSPerStreamKB / b.RSSPerStreamKB
		s.target("memory per idle stream <= 1.5x bare connect-go", "1.5x", fmt.Sprintf("%.2fx", ratio), ratio <= 1.5)
	}
	return s, nil
}

func (e *env) idleOne(ctx context.Context, kind string, n int) (Result, error) {
	r := Result{Server: kind, Streams: n}
	srv, err := e.start(serverSpec{Kind: kind})
	if err != nil {
		return r, err
	}
	defer srv.stop()
	r.Scope = srv.scope()
	const perUser = 1000
	users := (n + perUser - 1) / perUser
	keys := make([]userKey, users)
	if kind == kindGateway {
		r.Users = users
		if keys, err = e.users(ctx, srv, users); err != nil {
			return r, err
		}
		if err := e.loginAll(ctx, srv, keys); err != nil {
			return r, err
		}
	}
	open := func() int64 {
		if kind == kindGateway {
			v, _ := metric(srv.Addr, streamsOpenSeries)
			return int64(v)
		}
		return srv.stats(false).StreamsOpen
	}
	before := srv.stats(true)
	ss := newStreamSet(srv.Addr, e.cfg.PerConn)
	defer ss.close()
	req := e.streamReq(1)
	for i := range n {
		if _, err := ss.open(keys[i/perUser].Key, req); err != nil {
			return r, err
		}
	}
	if !waitFor(120*time.Second, func() bool { return open() == int64(n) }) {
		return r, fmt.Errorf("only %d of %d streams open after 120 s", open(), n)
	}
	sleepCtx(ctx, e.cfg.Warmup)
	after := srv.stats(true)
	fn := float64(n)
	r.ServerRSSMB = round2(float64(after.RSS) / (1 << 20))
	r.RSSPerStreamKB = round2(float64(after.RSS-before.RSS) / fn / 1024)
	if after.Goroutines >= 0 && before.Goroutines >= 0 {
		r.HeapPerStreamKB = round2(float64(int64(after.HeapInuse+after.StackInuse)-int64(before.HeapInuse+before.StackInuse)) / fn / 1024)
		r.GoroutinesPerStream = round2(float64(after.Goroutines-before.Goroutines) / fn)
		r.StackPerStreamKB = round2(float64(int64(after.StackInuse)-int64(before.StackInuse)) / fn / 1024)
		r.Goroutines = after.Goroutines
	}
	r.Errors = errs(ss.recs)
	return r, nil
}

func sleepCtx(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

func must[T any](v T, _ error) T { return v }

func round2(v float64) float64 { return math.Round(v*100) / 100 }
func round3(v float64) float64 { return math.Round(v*1000) / 1000 }
