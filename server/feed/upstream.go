package feed

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	feedgatev1 "github.com/feedgate/feedgate/gen/go/feedgate/v1"
	"github.com/feedgate/feedgate/internal/backoff"
	"github.com/feedgate/feedgate/server/broker"
	"github.com/feedgate/feedgate/server/connections"
)

// upstream is one (user, broker) feed. Its run goroutine owns the broker
// connection and, while connected, one reader goroutine that fans ticks out.
// Lock order: Hub.mu, then upstream.mu, then Stream.mu.
type upstream struct {
	hub    *Hub
	key    connections.Key
	dialer broker.FeedDialer
	limits broker.FeedLimits
	bm     *brokerMetrics

	ctx    context.Context
	cancel context.CancelCauseFunc
	want   chan struct{} // capacity 1: the wanted subscriptions changed
	relog  chan struct{} // capacity 1: the user logged in again

	mu       sync.Mutex
	streams  map[*Stream]struct{}
	refs     map[string]*keyRef
	counts   [broker.NumFeedModes]int // keys per upstream mode
	state    feedgatev1.UpstreamState
	ended    bool
	lostConn *connections.Change // set by authLost

	// deadGen is the highest token generation a dial of this upstream saw
	// refused; used only by run.
	deadGen int64

	// touched is the fan-out's scratch list, used only by the reader.
	touched []*Stream
}

// keyRef counts the streams that want one instrument, per mode.
type keyRef struct {
	n    [broker.NumFeedModes]int32
	subs []subRef
}

type subRef struct {
	st   *Stream
	slot int32
}

// mode is the richest mode any stream wants.
func (r *keyRef) mode() broker.FeedMode {
	for m := broker.NumFeedModes - 1; m > 0; m-- {
		if r.n[m] > 0 {
			return m
		}
	}
	return broker.ModeLTPC
}

func newUpstream(h *Hub, key connections.Key, d broker.FeedDialer, bm *brokerMetrics) *upstream {
	ctx, cancel := context.WithCancelCause(context.Background())
	return &upstream{hub: h, key: key, dialer: d, limits: d.FeedLimits(), bm: bm, ctx: ctx, cancel: cancel,
		want: make(chan struct{}, 1), relog: make(chan struct{}, 1), streams: map[*Stream]struct{}{}, refs: map[string]*keyRef{},
		state: feedgatev1.UpstreamState_UPSTREAM_STATE_CONNECTING}
}

func (u *upstream) signal() {
	select {
	case u.want <- struct{}{}:
	default:
	}
}

// join adds st's keys, if the connection's limits allow. Hub.mu is held.
func (u *upstream) join(st *Stream) error {
	u.mu.Lock()
	defer u.mu.Unlock()
	counts := u.counts
	for _, k := range st.keys {
		r := u.refs[k]
		if r == nil {
			counts[st.mode]++
			continue
		}
		if old := r.mode(); st.mode > old {
			counts[old]--
			counts[st.mode]++
		}
	}
	if msg := u.limits.Check(counts); msg != "" {
		return &LimitError{Broker: u.key.Broker, Msg: msg}
	}
	u.counts = counts
	for i, k := range st.keys {
		r := u.refs[k]
		if r == nil {
			r = &keyRef{}
			u.refs[k] = r
		}
		r.n[st.mode]++
		r.subs = append(r.subs, subRef{st: st, slot: int32(i)})
	}
	u.streams[st] = struct{}{}
	st.state = u.state
	u.signal()
	return nil
}

// leave removes st; the last stream out closes the upstream.
func (u *upstream) leave(st *Stream) {
	h := u.hub
	h.mu.Lock()
	defer h.mu.Unlock()
	u.mu.Lock()
	defer u.mu.Unlock()
	if _, ok := u.streams[st]; !ok || u.ended {
		return
	}
	delete(u.streams, st)
	for _, k := range st.keys {
		r := u.refs[k]
		old := r.mode()
		for i := range r.subs {
			if r.subs[i].st == st {
				last := len(r.subs) - 1
				r.subs[i] = r.subs[last]
				r.subs[last] = subRef{}
				r.subs = r.subs[:last]
				break
			}
		}
		r.n[st.mode]--
		if len(r.subs) == 0 {
			delete(u.refs, k)
			u.counts[old]--
			continue
		}
		if m := r.mode(); m != old {
			u.counts[old]--
			u.counts[m]++
		}
	}
	if len(u.streams) == 0 {
		u.ended = true
		if h.ups[u.key] == u {
			delete(h.ups, u.key)
		}
		u.cancel(errNoStreams)
		return
	}
	u.signal()
}

// authLost is the OnChange path: the connection was disconnected.
func (u *upstream) authLost(ch connections.Change) {
	u.mu.Lock()
	u.lostConn = &ch
	u.mu.Unlock()
	u.cancel(errAuthLost)
}

// setState moves the upstream to st and tells every stream.
func (u *upstream) setState(st feedgatev1.UpstreamState) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.state == st || u.ended {
		return
	}
	if g := u.bm.states[u.state]; g != nil {
		g.Dec()
	}
	if g := u.bm.states[st]; g != nil {
		g.Inc()
	}
	u.state = st
	for s := range u.streams {
		s.setState(st)
	}
}

// finish ends the upstream and every stream still on it.
func (u *upstream) finish(err error, ae *connections.AuthRequiredError) {
	h := u.hub
	h.mu.Lock()
	if h.ups[u.key] == u {
		delete(h.ups, u.key)
	}
	u.mu.Lock()
	u.ended = true
	streams := u.streams
	u.streams = map[*Stream]struct{}{}
	clear(u.refs)
	if g := u.bm.states[u.state]; g != nil {
		g.Dec()
	}
	u.state = feedgatev1.UpstreamState_UPSTREAM_STATE_UNSPECIFIED
	u.mu.Unlock()
	h.mu.Unlock()
	if ae != nil {
		u.bm.authDisconns.Inc()
	}
	for s := range streams {
		s.end(err, ae)
	}
}

// sleep waits d on the hub's clock, or less if the user logs in again
// meanwhile (the new token is worth trying at once); false if the upstream
// was cancelled.
func (u *upstream) sleep(d time.Duration) bool {
	if d <= 0 {
		return u.ctx.Err() == nil
	}
	done := make(chan struct{})
	t := u.hub.cfg.Clock.AfterFunc(d, func() { close(done) })
	select {
	case <-done:
		return true
	case <-u.relog:
		t.Stop()
		return u.ctx.Err() == nil
	case <-u.ctx.Done():
		t.Stop()
		return false
	}
}

// loggedIn is the OnChange path for a fresh login: cut a backoff short.
func (u *upstream) loggedIn() {
	select {
	case u.relog <- struct{}{}:
	default:
	}
}

// authEnd ends every stream with the connection's AuthRequired.
func (u *upstream) authEnd(ae *connections.AuthRequiredError) {
	u.hub.cfg.Logger.Info("feed: broker connection disconnected, ending streams", "user_id", u.key.UserID, "broker", u.key.Broker)
	u.finish(ae, ae)
}

// currentAuth asks the manager for the AuthRequired of a disconnected
// connection, falling back to what the change said.
func (u *upstream) currentAuth() *connections.AuthRequiredError {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(u.ctx), 10*time.Second)
	defer cancel()
	ae, err := u.hub.cfg.Conns.AuthRequired(ctx, u.key)
	if err == nil && ae != nil {
		return ae
	}
	u.mu.Lock()
	ch := u.lostConn
	u.mu.Unlock()
	ae = &connections.AuthRequiredError{Broker: u.key.Broker,
		Message: u.key.Broker.DisplayName() + " is not connected: log in again."}
	if ch != nil {
		ae.Reason, ae.DisconnectedAt = ch.Conn.Reason, ch.Conn.DisconnectedAt
	}
	return ae
}

// run owns the upstream: session, dial, serve, reconnect, until cancelled
// or the token dies.
func (u *upstream) run() {
	defer u.hub.wg.Done()
	log := u.hub.cfg.Logger.With("user_id", u.key.UserID, "broker", u.key.Broker)
	attempt := 0
	for {
		if u.ctx.Err() != nil {
			switch cause := context.Cause(u.ctx); cause {
			case errAuthLost:
				u.authEnd(u.currentAuth())
			default:
				u.finish(cause, nil)
			}
			return
		}
		sess, err := u.hub.cfg.Conns.Session(u.ctx, u.key.UserID, u.key.Broker)
		if err != nil {
			var ae *connections.AuthRequiredError
			if errors.As(err, &ae) {
				u.authEnd(ae)
				return
			}
		} else if sess.Generation <= u.deadGen {
			// The manager still hands out a token this upstream saw refused
			// (it should not): never dial with it, wait and read again.
			err = errTokenKnownDead
			log.Error("feed: the session's token is known dead; not dialling", "generation", sess.Generation)
		} else {
			var conn broker.FeedConn
			if attempt > 0 {
				// Reconnects of every user share one budget per broker, so an
				// outage does not end in a stampede of authorize calls.
				err = u.hub.reconnects.Wait(u.ctx, string(u.key.Broker))
			}
			if err == nil {
				conn, err = u.dialer.DialFeed(u.ctx, sess.Creds, u.hub.cfg.FeedOptions)
			}
			if err == nil {
				var got bool
				began := time.Now()
				got, err = u.serve(conn)
				if got {
					attempt = 0
				}
				// A connection that was live for a while gets one immediate,
				// silent retry: a socket closed by the broker is often the
				// token dying (the next authorize answers 401 within
				// milliseconds), and streams should see AUTH_REQUIRED, not a
				// RECONNECTING that is over at once. A retry that fails too
				// backs off as usual.
				if got && time.Since(began) >= time.Second && u.ctx.Err() == nil && !broker.IsAuthDead(err) {
					log.Debug("feed: upstream closed, retrying at once", "err", err)
					attempt = 1
					continue
				}
			}
			if u.ctx.Err() != nil {
				continue
			}
			if broker.IsAuthDead(err) {
				ctx, cancel := context.WithTimeout(context.WithoutCancel(u.ctx), 10*time.Second)
				rerr := u.hub.cfg.Conns.ReportAuthDead(ctx, sess, "market feed", err)
				cancel()
				u.deadGen = max(u.deadGen, sess.Generation)
				if rerr == nil {
					continue // a newer login replaced the dead token: dial with it
				}
				u.authEnd(u.currentAuth())
				return
			}
		}
		log.Info("feed: upstream lost, reconnecting", "err", err, "attempt", attempt+1)
		u.setState(feedgatev1.UpstreamState_UPSTREAM_STATE_RECONNECTING)
		d := backoff.Full(attempt, u.hub.cfg.BackoffBase, u.hub.cfg.BackoffCap, u.hub.cfg.Jitter)
		if be, ok := broker.AsError(err); ok && be.Class == broker.ClassRateLimited {
			d = max(d, be.RetryAfter)
		}
		if errors.Is(err, errTokenKnownDead) {
			d = max(d, minDeadTokenWait)
		}
		attempt++
		if u.sleep(d) {
			u.bm.reconnects.Inc()
		}
	}
}

// serve runs one connection until it fails or the upstream is cancelled,
// and reports whether any ticks arrived. It closes conn.
func (u *upstream) serve(conn broker.FeedConn) (bool, error) {
	ctx, cancel := context.WithCancel(u.ctx)
	defer cancel()
	applied := map[string]broker.FeedMode{}
	if err := u.sync(ctx, conn, applied); err != nil {
		conn.Close()
		return false, err
	}
	u.setState(feedgatev1.UpstreamState_UPSTREAM_STATE_LIVE)
	var got atomic.Bool
	readErr := make(chan error, 1)
	go func() { readErr <- u.read(ctx, conn, &got) }()
	for {
		select {
		case err := <-readErr:
			conn.Close()
			return got.Load(), err
		case <-ctx.Done():
			conn.Close()
			<-readErr
			return got.Load(), ctx.Err()
		case <-u.want:
			if err := u.sync(ctx, conn, applied); err != nil {
				conn.Close()
				<-readErr
				return got.Load(), err
			}
		}
	}
}

// read fans out every batch the connection delivers.
func (u *upstream) read(ctx context.Context, conn broker.FeedConn, got *atomic.Bool) error {
	for {
		ticks, err := conn.Next(ctx)
		if err != nil {
			return err
		}
		got.Store(true)
		u.dispatch(ticks)
	}
}

// sync brings the connection's subscriptions (applied) to what the streams
// want: subscribe new keys, change modes, unsubscribe the unwanted.
func (u *upstream) sync(ctx context.Context, conn broker.FeedConn, applied map[string]broker.FeedMode) error {
	var sub, chg [broker.NumFeedModes][]string
	var unsub []string
	u.mu.Lock()
	for k, r := range u.refs {
		m := r.mode()
		switch old, ok := applied[k]; {
		case !ok:
			sub[m] = append(sub[m], k)
		case old != m:
			chg[m] = append(chg[m], k)
		default:
			continue
		}
		applied[k] = m
	}
	for k := range applied {
		if _, ok := u.refs[k]; !ok {
			unsub = append(unsub, k)
			delete(applied, k)
		}
	}
	u.mu.Unlock()
	if len(unsub) > 0 {
		if err := conn.Unsubscribe(ctx, unsub); err != nil {
			return err
		}
	}
	for m := range broker.NumFeedModes {
		if len(chg[m]) > 0 {
			if err := conn.ChangeMode(ctx, chg[m], m); err != nil {
				return err
			}
		}
		if len(sub[m]) > 0 {
			if err := conn.Subscribe(ctx, sub[m], m); err != nil {
				return err
			}
		}
	}
	return nil
}

// tickPair allocates a Tick with its Greeks in one allocation, with the
// Tick's encoding (see Event.Wire). It is shared by every stream that wants
// its shape and never modified after toProto.
type tickPair struct {
	t    feedgatev1.Tick
	g    feedgatev1.Greeks
	wire []byte
}

// ticksField is TickBatch's repeated ticks field.
var ticksField = (&feedgatev1.TickBatch{}).ProtoReflect().Descriptor().Fields().ByName("ticks").Number()

// encodeTick returns t as one element of TickBatch's ticks field in
// protobuf binary form (see Event.Wire), or nil if t cannot be marshalled.
func encodeTick(t *feedgatev1.Tick) []byte {
	size := proto.Size(t)
	b := make([]byte, 0, protowire.SizeTag(ticksField)+protowire.SizeVarint(uint64(size))+size)
	b = protowire.AppendTag(b, ticksField, protowire.BytesType)
	b = protowire.AppendVarint(b, uint64(size))
	b, err := proto.MarshalOptions{UseCachedSize: true}.MarshalAppend(b, t)
	if err != nil {
		return nil
	}
	return b
}

// toProto converts and encodes t for a stream in LTPC mode (rich false) or
// a richer one.
func toProto(t *broker.Tick, rich bool) *tickPair {
	p := &tickPair{}
	p.t.InstrumentKey, p.t.Ltp, p.t.LttUnixMs, p.t.Ltq, p.t.ClosePrice = t.InstrumentKey, t.LTP, t.LTTUnixMs, t.LTQ, t.ClosePrice
	p.t.BrokerTimeUnixNanos = t.BrokerTimeUnixNanos
	if rich {
		p.t.Volume, p.t.Oi, p.t.Iv = t.Volume, t.OI, t.IV
		p.t.BidPrice, p.t.BidQty, p.t.AskPrice, p.t.AskQty = t.BidPrice, t.BidQty, t.AskPrice, t.AskQty
		if t.HasGreeks {
			p.g.Delta, p.g.Gamma, p.g.Theta, p.g.Vega, p.g.Rho = t.Greeks.Delta, t.Greeks.Gamma, t.Greeks.Theta, t.Greeks.Vega, t.Greeks.Rho
			p.t.Greeks = &p.g
		}
	}
	p.wire = encodeTick(&p.t)
	return p
}

// dispatch fans one upstream batch out to the streams: each tick is
// converted once per shape (LTPC or rich) and shared, and each stream is
// locked once per batch.
func (u *upstream) dispatch(ticks []broker.Tick) {
	now := u.hub.cfg.Clock.Now()
	u.bm.ticksIn.Add(int64(len(ticks)))
	u.mu.Lock()
	for i := range ticks {
		t := &ticks[i]
		r := u.refs[t.InstrumentKey]
		if r == nil {
			continue
		}
		var rich, plain *tickPair
		for _, s := range r.subs {
			var p *tickPair
			if s.st.mode == broker.ModeLTPC && t.Mode != broker.ModeLTPC {
				if plain == nil {
					plain = toProto(t, false)
				}
				p = plain
			} else {
				if rich == nil {
					rich = toProto(t, true)
				}
				p = rich
			}
			if len(s.st.stage) == 0 {
				u.touched = append(u.touched, s.st)
			}
			s.st.stage = append(s.st.stage, staged{slot: s.slot, tick: p})
		}
	}
	var replaced int64
	for _, s := range u.touched {
		replaced += s.deliver(now)
	}
	if replaced > 0 {
		u.bm.conflated.Add(replaced)
	}
	for _, s := range u.touched {
		s.wake()
	}
	u.mu.Unlock()
	clear(u.touched)
	u.touched = u.touched[:0]
}
