package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"math/bits"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	feedgatev1 "github.com/feedgate/feedgate/gen/go/feedgate/v1"
)

// hist is a log-linear latency histogram in microseconds: 16 buckets per
// power of two (about 6% resolution).
type hist struct{ b [40 * 16]uint64 }

func bucketOf(us uint64) int {
	if us < 16 {
		return int(us)
	}
	e := bits.Len64(us) - 5
	return min((e+1)*16+int(us>>e)-16, len(hist{}.b)-1)
}

// lowerBound is a bucket's smallest value in microseconds.
func lowerBound(i int) float64 {
	if i < 16 {
		return float64(i)
	}
	e := i/16 - 1
	return float64(uint64(16+i%16) << e)
}

func (h *hist) add(d time.Duration) {
	us := max(d.Microseconds(), 0)
	h.b[bucketOf(uint64(us))]++
}

func (h *hist) merge(o *hist) {
	for i := range h.b {
		h.b[i] += o.b[i]
	}
}

func (h *hist) count() uint64 {
	var n uint64
	for _, c := range h.b {
		n += c
	}
	return n
}

// quantile returns the q-quantile in milliseconds (bucket midpoint).
func (h *hist) quantile(q float64) float64 {
	n := h.count()
	if n == 0 {
		return math.NaN()
	}
	want := max(uint64(math.Ceil(q*float64(n))), 1)
	var acc uint64
	for i, c := range h.b {
		acc += c
		if acc >= want && c > 0 {
			lo := lowerBound(i)
			hi := lowerBound(i + 1)
			return (lo + hi) / 2 / 1000
		}
	}
	return math.NaN()
}

// Latency is a latency summary in milliseconds.
type Latency struct {
	N    uint64  `json:"n"`
	Min  float64 `json:"min_ms,omitempty"`
	P50  float64 `json:"p50_ms"`
	P99  float64 `json:"p99_ms"`
	P999 float64 `json:"p99_9_ms"`
	Max  float64 `json:"max_ms"`
}

func (h *hist) summary() Latency {
	l := Latency{N: h.count(), Min: h.quantile(0), P50: h.quantile(0.5), P99: h.quantile(0.99), P999: h.quantile(0.999), Max: h.quantile(1)}
	for _, p := range []*float64{&l.Min, &l.P50, &l.P99, &l.P999, &l.Max} {
		if math.IsNaN(*p) {
			*p = 0
		}
		*p = math.Round(*p*1000) / 1000
	}
	return l
}

// streamRec is one client stream's tally. Its fields are written by the
// stream's goroutine and read after it ends.
type streamRec struct {
	hist      hist
	delivered int64 // ticks sent (broker time) within the window
	conflated int64 // TickBatch.conflated of messages whose first tick is within the window
	msgs      int64 // tick messages whose first tick is within the window
	received  int64 // ticks that arrived within the window, whenever sent
	authAt    time.Time
	err       error
	group     string // the streams sharing an upstream (the user's key)
}

// streamSet is a group of client streams and the flags they share.
type streamSet struct {
	// The measurement window, by the ticks' send (broker) time: a tick
	// counts if it was sent within it, whenever it arrives, so ticks still
	// queued when the window closes count (with their latency) and ticks
	// queued before it opened do not.
	winStart, winEnd atomic.Int64
	// lastSend is the latest send time seen on any stream (for placing
	// the window between two rounds).
	lastSend atomic.Int64
	// rounds are the distinct send times seen within the window, per
	// group of streams sharing one upstream: the rounds offered to them.
	roundsMu sync.Mutex
	rounds   map[string]map[int64]struct{}
	gotAny   atomic.Int64 // streams that received a first message
	gotTick  atomic.Int64 // streams that received a first tick
	authN    atomic.Int64 // streams that received auth_required
	ctx      context.Context
	cancel   context.CancelFunc
	wg       sync.WaitGroup
	recs     []*streamRec
	conns    []*grpc.ClientConn
	addr     string
	perConn  int
	n        int // streams opened
}

func newStreamSet(addr string, perConn int) *streamSet {
	ctx, cancel := context.WithCancel(context.Background())
	return &streamSet{ctx: ctx, cancel: cancel, addr: addr, perConn: perConn}
}

var streamDesc = grpc.StreamDesc{StreamName: "StreamMarketFeed", ServerStreams: true}

// dial makes a grpc-go client connection (one HTTP/2 connection, h2c).
func dial(addr string) (*grpc.ClientConn, error) {
	return grpc.NewClient("passthrough:///"+addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(64<<20)))
}

// open starts one stream as key (may be "" for bare servers). Streams are
// spread perConn to an HTTP/2 connection.
func (s *streamSet) open(key string, req *feedgatev1.StreamMarketFeedRequest) (*streamRec, error) {
	if s.n%s.perConn == 0 {
		cc, err := dial(s.addr)
		if err != nil {
			return nil, err
		}
		s.conns = append(s.conns, cc)
	}
	cc := s.conns[len(s.conns)-1]
	s.n++
	ctx := s.ctx
	if key != "" {
		ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+key)
	}
	cs, err := cc.NewStream(ctx, &streamDesc, streamMethod, grpc.ForceCodecV2(scanCodec{}))
	if err != nil {
		return nil, err
	}
	if err := cs.SendMsg(req); err != nil {
		return nil, err
	}
	if err := cs.CloseSend(); err != nil {
		return nil, err
	}
	rec := &streamRec{group: key}
	s.recs = append(s.recs, rec)
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		s.recv(cs, rec)
	}()
	return rec, nil
}

func (s *streamSet) recv(cs grpc.ClientStream, rec *streamRec) {
	var f frame
	var prevRound int64
	first, firstTick := true, true
	for {
		err := cs.RecvMsg(&f)
		now := time.Now()
		if err != nil {
			if status.Code(err) == codes.Unauthenticated && rec.authAt.IsZero() {
				rec.authAt = now
				s.authN.Add(1)
			}
			if !errors.Is(err, io.EOF) && status.Code(err) != codes.Canceled {
				rec.err = err
			}
			return
		}
		if first {
			first = false
			s.gotAny.Add(1)
		}
		switch f.event {
		case respTicks:
			if n := len(f.times); n > 0 && f.times[n-1] > s.lastSend.Load() {
				s.lastSend.Store(f.times[n-1]) // a racy max is good enough here
			}
			if firstTick {
				firstTick = false
				s.gotTick.Add(1)
			}
			lo, hi := s.winStart.Load(), s.winEnd.Load()
			if lo == 0 {
				break
			}
			nowNs := now.UnixNano()
			in := 0
			for _, t := range f.times {
				if t >= lo && t <= hi {
					rec.hist.add(time.Duration(nowNs - t))
					in++
					if t != prevRound {
						prevRound = t
						s.noteRound(rec.group, t)
					}
				}
			}
			rec.delivered += int64(in)
			if nowNs >= lo && nowNs <= hi {
				rec.received += int64(len(f.times))
			}
			if len(f.times) > 0 && f.times[0] >= lo && f.times[0] <= hi {
				rec.conflated += f.conflated
				rec.msgs++
			}
		case respAuthRequired:
			if rec.authAt.IsZero() {
				rec.authAt = now
				s.authN.Add(1)
			}
		}
	}
}

func (s *streamSet) noteRound(group string, t int64) {
	s.roundsMu.Lock()
	defer s.roundsMu.Unlock()
	if s.rounds == nil {
		s.rounds = map[string]map[int64]struct{}{}
	}
	g := s.rounds[group]
	if g == nil {
		g = map[int64]struct{}{}
		s.rounds[group] = g
	}
	g[t] = struct{}{}
}

// roundCount is the number of distinct rounds seen in the window, summed
// over groups. A round counts if any stream of its group got a tick of it,
// so it is exact unless a round was conflated away on every stream of a
// group (then the conflated count shows it).
func (s *streamSet) roundCount() int64 {
	s.roundsMu.Lock()
	defer s.roundsMu.Unlock()
	var n int64
	for _, g := range s.rounds {
		n += int64(len(g))
	}
	return n
}

// openWindow starts the measurement window now.
func (s *streamSet) openWindow() time.Time {
	now := time.Now()
	s.openWindowAt(now)
	return now
}

// openWindowAt starts the window at send time t.
func (s *streamSet) openWindowAt(t time.Time) {
	s.winEnd.Store(math.MaxInt64)
	s.winStart.Store(t.UnixNano())
}

// midRound returns the first instant after not-before that lies halfway
// between two rounds sent every interval, judging by the latest send time
// seen. Window boundaries placed there cannot cut a round in two, so the
// ticks counted as offered (by the server) and delivered (by send time)
// cover the same rounds.
func (s *streamSet) midRound(notBefore time.Time, interval time.Duration) time.Time {
	t := time.Unix(0, s.lastSend.Load()).Add(interval / 2)
	for t.Before(notBefore) {
		t = t.Add(interval)
	}
	return t
}

// closeWindow ends the window now and waits grace for ticks sent within it
// that are still on their way.
func (s *streamSet) closeWindow(ctx context.Context, grace time.Duration) time.Time {
	now := time.Now()
	s.closeWindowAt(ctx, now, grace)
	return now
}

// closeWindowAt ends the window at send time t and waits grace.
func (s *streamSet) closeWindowAt(ctx context.Context, t time.Time, grace time.Duration) {
	s.winEnd.Store(t.UnixNano())
	sleepCtx(ctx, grace)
}

// waitFor polls cond every 20 ms until it holds or d passes.
func waitFor(d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
	return true
}

// close ends every stream and connection and waits for the receivers.
func (s *streamSet) close() {
	s.cancel()
	s.wg.Wait()
	for _, cc := range s.conns {
		_ = cc.Close()
	}
}

// tally merges the streams' records (call after close, or for streams that
// ended).
func (s *streamSet) tally(recs []*streamRec) (h hist, delivered, conflated, msgs, received int64) {
	for _, r := range recs {
		h.merge(&r.hist)
		delivered += r.delivered
		conflated += r.conflated
		msgs += r.msgs
		received += r.received
	}
	return
}

// errs summarises the streams' unexpected errors.
func errs(recs []*streamRec) string {
	n := 0
	var first error
	for _, r := range recs {
		if r.err != nil {
			if first == nil {
				first = r.err
			}
			n++
		}
	}
	if n == 0 {
		return ""
	}
	return fmt.Sprintf("%d streams failed, first: %v", n, first)
}

// httpc is the client for the sandbox, the debug endpoints and the
// gateway's OAuth callback.
var httpc = &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 128}}

var noRedirect = &http.Client{Timeout: 30 * time.Second, Transport: httpc.Transport,
	CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}

// getJSON fetches url into v.
func getJSON(u string, v any) error {
	res, err := httpc.Get(u)
	if err != nil {
		return err
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(res.Body)
		return fmt.Errorf("GET %s: HTTP %d %s", u, res.StatusCode, b)
	}
	return json.NewDecoder(res.Body).Decode(v)
}

// postJSON posts body as JSON and decodes the answer into v (if not nil).
func postJSON(u string, body, v any) error {
	b, _ := json.Marshal(body)
	res, err := httpc.Post(u, "application/json", bytes.NewReader(b))
	if err != nil {
		return err
	}
	defer res.Body.Close()
	if res.StatusCode/100 != 2 {
		msg, _ := io.ReadAll(res.Body)
		return fmt.Errorf("POST %s: HTTP %d %s", u, res.StatusCode, msg)
	}
	if v == nil {
		_, err = io.Copy(io.Discard, res.Body)
		return err
	}
	return json.NewDecoder(res.Body).Decode(v)
}

// metric reads one series of the gateway's /metrics (0 when absent).
func metric(addr, series string) (float64, error) {
	res, err := httpc.Get("http://" + addr + "/metrics")
	if err != nil {
		return 0, err
	}
	defer res.Body.Close()
	sc := bufio.NewScanner(res.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), series+" "); ok {
			return strconv.ParseFloat(strings.TrimSpace(v), 64)
		}
	}
	return 0, sc.Err()
}

// unaryCall invokes a unary gateway method as key.
func unaryCall(ctx context.Context, cc *grpc.ClientConn, key, method string, req, resp any) error {
	ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+key)
	return cc.Invoke(ctx, method, req, resp)
}

// login connects key's user to the sandbox's Upstox as account, through the
// real redirect chain: GetLoginURL, the sandbox's dialog, CompleteLogin.
func login(ctx context.Context, cc *grpc.ClientConn, key, account string) error {
	var lu feedgatev1.GetLoginURLResponse
	if err := unaryCall(ctx, cc, key, "/feedgate.v1.ConnectionService/GetLoginURL",
		&feedgatev1.GetLoginURLRequest{Broker: feedgatev1.Broker_BROKER_UPSTOX}, &lu); err != nil {
		return fmt.Errorf("GetLoginURL: %w", err)
	}
	res, err := noRedirect.Get(lu.GetUrl() + "&account=" + url.QueryEscape(account))
	if err != nil {
		return err
	}
	res.Body.Close()
	loc, err := url.Parse(res.Header.Get("Location"))
	if err != nil || res.StatusCode/100 != 3 {
		return fmt.Errorf("sandbox dialog: HTTP %d", res.StatusCode)
	}
	var cl feedgatev1.CompleteLoginResponse
	if err := unaryCall(ctx, cc, key, "/feedgate.v1.ConnectionService/CompleteLogin", &feedgatev1.CompleteLoginRequest{
		Broker: feedgatev1.Broker_BROKER_UPSTOX, Code: loc.Query().Get("code"), State: loc.Query().Get("state")}, &cl); err != nil {
		return fmt.Errorf("CompleteLogin: %w", err)
	}
	return nil
}

// parallel runs f(i) for i in [0, n) on k workers and returns the first
// error.
func parallel(n, k int, f func(i int) error) error {
	var (
		mu    sync.Mutex
		first error
		next  atomic.Int64
		wg    sync.WaitGroup
	)
	for range min(n, k) {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				if err := f(i); err != nil {
					mu.Lock()
					if first == nil {
						first = err
					}
					mu.Unlock()
					return
				}
			}
		})
	}
	wg.Wait()
	return first
}
