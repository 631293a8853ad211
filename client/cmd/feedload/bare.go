package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/grpc"

	feedgatev1 "github.com/feedgate/feedgate/gen/go/feedgate/v1"
	"github.com/feedgate/feedgate/gen/go/feedgate/v1/feedgatev1connect"
)

// streamMethod is the one RPC every server under test serves: the gateway's
// StreamMarketFeed, and the bare servers' stand-in with the same name and
// message types, so one client drives all three.
const streamMethod = "/feedgate.v1.MarketDataService/StreamMarketFeed"

// ringSize is the shared ring of published ticks.
const ringSize = 1 << 14

// maxLag is how many ticks a bare stream may fall behind (about a second
// at 1,000 ticks/s) before it skips the oldest, counting them as dropped:
// a bounded queue with drop-oldest, the least policy a fan-out server
// needs, so a bare server's latency stays bounded when it cannot keep up.
const maxLag = 1024

// tickGen publishes ticks for the bare servers as the sandbox does: every
// interval, one round of one tick per instrument, stamped with the send
// time. Streams read the shared ring from their own cursor, so a bare
// server holds no per-stream queue and the publisher never blocks.
type tickGen struct {
	instruments int
	interval    time.Duration

	ring [ringSize]atomic.Pointer[feedgatev1.StreamMarketFeedResponse]
	head atomic.Uint64 // ticks published

	mu    sync.Mutex
	wake  chan struct{} // closed and replaced after every round
	marks []roundMark   // recent rounds, for publishedAt
	open  atomic.Int64
	drops atomic.Int64
}

// roundMark is the count of ticks published once the round sent at t was.
type roundMark struct {
	t    int64
	head uint64
}

func newTickGen(instruments int, interval time.Duration) *tickGen {
	return &tickGen{instruments: instruments, interval: interval, wake: make(chan struct{})}
}

// run publishes rounds until ctx ends. An instruments count of 0 publishes
// nothing (idle streams).
func (g *tickGen) run(ctx context.Context) {
	if g.instruments <= 0 || g.interval <= 0 {
		return
	}
	keys := make([]string, g.instruments)
	for i := range keys {
		keys[i] = "NSE_FO|" + strconv.Itoa(40000+i)
	}
	t := time.NewTicker(g.interval)
	defer t.Stop()
	for n := 0; ; n++ {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		now := time.Now()
		head := g.head.Load()
		for i, k := range keys {
			g.ring[(head+uint64(i))%ringSize].Store(&feedgatev1.StreamMarketFeedResponse{Event: &feedgatev1.StreamMarketFeedResponse_Ticks{
				Ticks: &feedgatev1.TickBatch{Ticks: []*feedgatev1.Tick{benchTick(k, float64(100+i)+float64(n%100)/20, now)}}}})
		}
		g.head.Store(head + uint64(len(keys)))
		g.mu.Lock()
		if len(g.marks) == 1<<14 {
			g.marks = append(g.marks[:0], g.marks[len(g.marks)/2:]...)
		}
		g.marks = append(g.marks, roundMark{t: now.UnixNano(), head: head + uint64(len(keys))})
		close(g.wake)
		g.wake = make(chan struct{})
		g.mu.Unlock()
	}
}

// benchTick is a rich tick (option greeks mode) like the gateway sends.
func benchTick(key string, ltp float64, now time.Time) *feedgatev1.Tick {
	return &feedgatev1.Tick{InstrumentKey: key, Ltp: ltp, LttUnixMs: now.UnixMilli(), Ltq: 75, ClosePrice: ltp - 3,
		Volume: 1234500, Oi: 456700, Iv: 13.2, BidPrice: ltp - 0.05, BidQty: 750, AskPrice: ltp + 0.05, AskQty: 825,
		Greeks:              &feedgatev1.Greeks{Delta: 0.51, Gamma: 0.0007, Theta: -12.3, Vega: 11.9, Rho: 2.1},
		BrokerTimeUnixNanos: now.UnixNano()}
}

func (g *tickGen) published() uint64 { return g.head.Load() }

// publishedAt returns how many ticks had been sent by time t (Unix ns),
// whenever it is asked.
func (g *tickGen) publishedAt(t int64) uint64 {
	g.mu.Lock()
	defer g.mu.Unlock()
	var n uint64
	for _, m := range g.marks {
		if m.t > t {
			break
		}
		n = m.head
	}
	return n
}

// serve sends every tick published from now on, one per message, until ctx
// ends or send fails. It first sends one status message so a client can
// tell that the stream is established.
func (g *tickGen) serve(ctx context.Context, send func(*feedgatev1.StreamMarketFeedResponse) error) error {
	g.open.Add(1)
	defer g.open.Add(-1)
	if err := send(&feedgatev1.StreamMarketFeedResponse{Event: &feedgatev1.StreamMarketFeedResponse_UpstreamStatus{
		UpstreamStatus: &feedgatev1.UpstreamStatus{State: feedgatev1.UpstreamState_UPSTREAM_STATE_LIVE}}}); err != nil {
		return err
	}
	cursor := g.head.Load()
	for {
		g.mu.Lock()
		wake := g.wake
		g.mu.Unlock()
		head := g.head.Load()
		if head == cursor {
			select {
			case <-ctx.Done():
				return nil
			case <-wake:
			}
			continue
		}
		if head-cursor > maxLag {
			skip := head - maxLag - cursor
			g.drops.Add(int64(skip))
			cursor += skip
		}
		for ; cursor < head; cursor++ {
			if err := send(g.ring[cursor%ringSize].Load()); err != nil {
				return err
			}
		}
	}
}

// bareConnect is a minimal connect-go MarketDataService: StreamMarketFeed
// only, no interceptors, no gateway logic.
type bareConnect struct {
	feedgatev1connect.UnimplementedMarketDataServiceHandler
	gen *tickGen
}

func (b *bareConnect) StreamMarketFeed(ctx context.Context, _ *connect.Request[feedgatev1.StreamMarketFeedRequest], s *connect.ServerStream[feedgatev1.StreamMarketFeedResponse]) error {
	return b.gen.serve(ctx, s.Send)
}

// startBareConnect serves the bare connect-go server on ln over h2c, with
// the gateway's HTTP/2 settings and compression threshold.
func startBareConnect(ln net.Listener, gen *tickGen) (stop func()) {
	mux := http.NewServeMux()
	mux.Handle(feedgatev1connect.NewMarketDataServiceHandler(&bareConnect{gen: gen}, connect.WithCompressMinBytes(8<<10)))
	var p http.Protocols
	p.SetHTTP1(true)
	p.SetUnencryptedHTTP2(true)
	srv := &http.Server{Handler: mux, Protocols: &p, ReadHeaderTimeout: 10 * time.Second,
		HTTP2: &http.HTTP2Config{MaxConcurrentStreams: 1000}}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			fmt.Println("bare connect:", err)
		}
	}()
	return func() { _ = srv.Close() }
}

// bareGRPCDesc is a hand-written grpc-go service with the one
// server-streaming method, using grpc-go's default proto codec.
var bareGRPCDesc = grpc.ServiceDesc{
	ServiceName: "feedgate.v1.MarketDataService",
	HandlerType: (*any)(nil),
	Streams: []grpc.StreamDesc{{
		StreamName:    "StreamMarketFeed",
		ServerStreams: true,
		Handler: func(srv any, stream grpc.ServerStream) error {
			var req feedgatev1.StreamMarketFeedRequest
			if err := stream.RecvMsg(&req); err != nil {
				return err
			}
			gen := srv.(*tickGen)
			return gen.serve(stream.Context(), func(m *feedgatev1.StreamMarketFeedResponse) error { return stream.SendMsg(m) })
		},
	}},
}

// startBareGRPC serves the bare grpc-go server on ln.
func startBareGRPC(ln net.Listener, gen *tickGen) (stop func()) {
	s := grpc.NewServer(grpc.MaxConcurrentStreams(1000))
	s.RegisterService(&bareGRPCDesc, gen)
	go func() { _ = s.Serve(ln) }()
	return s.Stop
}
