package feed

import (
	"context"
	"sync"
	"time"

	feedgatev1 "github.com/feedgate/feedgate/gen/go/feedgate/v1"
	"github.com/feedgate/feedgate/server/broker"
	"github.com/feedgate/feedgate/server/connections"
)

// EventKind says what an Event carries.
type EventKind int

// The kinds of Event.
const (
	// EventTicks carries a TickBatch: everything queued, at most one tick
	// per instrument, to be sent as one message.
	EventTicks EventKind = iota + 1
	// EventUpstreamStatus carries a change of the upstream's state.
	EventUpstreamStatus
	// EventAuthRequired carries the AuthRequired the client must see; the
	// next Next returns the same *connections.AuthRequiredError as its error.
	EventAuthRequired
)

// Event is one thing a stream has to tell its client.
type Event struct {
	Kind EventKind
	// Ticks is set for EventTicks. Its Tick messages are shared between
	// streams and must not be modified.
	Ticks *feedgatev1.TickBatch
	// Wire, when not nil, is Ticks.Ticks in protobuf binary form (each
	// tick encoded once by the hub, as TickBatch's repeated ticks field),
	// so a sender using the binary codec need not marshal every shared
	// tick again for every stream.
	Wire []byte
	// UpstreamState is set for EventUpstreamStatus.
	UpstreamState feedgatev1.UpstreamState
	// AuthRequired is set for EventAuthRequired.
	AuthRequired *connections.AuthRequiredError
}

// maxQueuedStatuses bounds a stream's pending status changes; the oldest
// is dropped beyond it (the newest state is what matters).
const maxQueuedStatuses = 4

// staged is a tick on its way into a stream's queue.
type staged struct {
	slot int32
	tick *tickPair
}

// Stream is one client's subscription. Its queue holds at most one tick per
// subscribed instrument (a newer tick replaces an unread one, and the
// replacement is counted), so it is bounded by the stream's key count and a
// slow reader never blocks the upstream or other streams. Next must be
// called by one goroutine at a time; Close and Upstream are safe from any.
type Stream struct {
	hub  *Hub
	up   *upstream // nil for a stream that started ended
	bm   *brokerMetrics
	keys []string
	mode broker.FeedMode
	// user is the user whose stream limit this stream counts against, ""
	// once released; guarded by Hub.mu.
	user string

	// stage is the fan-out's scratch space, touched only by the
	// upstream's reader goroutine while it holds up.mu.
	stage []staged

	closeOnce sync.Once
	notify    chan struct{} // capacity 1: "something changed"

	mu        sync.Mutex
	slots     []*tickPair // by key index; nil when nothing queued
	order     []int32     // queued slots in arrival order
	conflated int64
	statuses  []feedgatev1.UpstreamState
	state     feedgatev1.UpstreamState
	lastTick  time.Time
	auth      *connections.AuthRequiredError
	authSent  bool
	endErr    error
}

func newStream(h *Hub, bm *brokerMetrics, keys []string, mode broker.FeedMode) *Stream {
	return &Stream{hub: h, bm: bm, keys: keys, mode: mode, notify: make(chan struct{}, 1),
		slots: make([]*tickPair, len(keys)), state: feedgatev1.UpstreamState_UPSTREAM_STATE_CONNECTING}
}

// Keys returns the stream's instrument keys, deduplicated, in request order.
func (s *Stream) Keys() []string { return s.keys }

// Mode returns the stream's mode.
func (s *Stream) Mode() broker.FeedMode { return s.mode }

// Upstream returns the upstream feed's current state and when the stream
// last received a tick (zero if never), for the API layer's heartbeats.
func (s *Stream) Upstream() (feedgatev1.UpstreamState, time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.state, s.lastTick
}

func (s *Stream) wake() {
	select {
	case s.notify <- struct{}{}:
	default:
	}
}

// Ready is signalled when Poll may have something new. Use it with Poll
// to wait for events and timers (heartbeats) in one select.
func (s *Stream) Ready() <-chan struct{} { return s.notify }

// Poll returns the next event if one is waiting (ok), or ok false. After
// the stream ends it returns the end's error: a
// *connections.AuthRequiredError (after one EventAuthRequired),
// ErrHubClosed or ErrStreamClosed.
func (s *Stream) Poll() (ev Event, ok bool, err error) {
	s.mu.Lock()
	if s.endErr != nil {
		if s.auth != nil && !s.authSent {
			s.authSent = true
			a := s.auth
			s.mu.Unlock()
			return Event{Kind: EventAuthRequired, AuthRequired: a}, true, nil
		}
		err := s.endErr
		s.mu.Unlock()
		return Event{}, false, err
	}
	if len(s.statuses) > 0 {
		st := s.statuses[0]
		s.statuses = append(s.statuses[:0], s.statuses[1:]...)
		s.mu.Unlock()
		return Event{Kind: EventUpstreamStatus, UpstreamState: st}, true, nil
	}
	if len(s.order) > 0 {
		ticks := make([]*feedgatev1.Tick, len(s.order))
		n := 0
		for _, slot := range s.order {
			if s.slots[slot].wire == nil {
				n = -1
				break
			}
			n += len(s.slots[slot].wire)
		}
		var wire []byte
		if n > 0 {
			wire = make([]byte, 0, n)
		}
		for i, slot := range s.order {
			ticks[i] = &s.slots[slot].t
			if n > 0 {
				wire = append(wire, s.slots[slot].wire...)
			}
			s.slots[slot] = nil
		}
		s.order = s.order[:0]
		b := &feedgatev1.TickBatch{Ticks: ticks, Conflated: s.conflated}
		s.conflated = 0
		s.mu.Unlock()
		s.bm.ticksOut.Add(int64(len(ticks)))
		return Event{Kind: EventTicks, Ticks: b, Wire: wire}, true, nil
	}
	s.mu.Unlock()
	return Event{}, false, nil
}

// Next waits for the next event. After the stream ends it returns the end's
// error: a *connections.AuthRequiredError (after one EventAuthRequired),
// ErrHubClosed, ErrStreamClosed, or ctx's error.
func (s *Stream) Next(ctx context.Context) (Event, error) {
	for {
		ev, ok, err := s.Poll()
		if ok || err != nil {
			return ev, err
		}
		select {
		case <-ctx.Done():
			return Event{}, ctx.Err()
		case <-s.notify:
		}
	}
}

// deliver moves the staged ticks into the queue, conflating per
// instrument, and returns how many unread ticks it replaced. It does not
// wake the reader: the caller counts the replacements first (so the metric
// never lags what a reader has seen), then calls wake. The caller is the
// upstream's reader.
func (s *Stream) deliver(now time.Time) int64 {
	var replaced int64
	s.mu.Lock()
	if s.endErr == nil {
		for _, sg := range s.stage {
			if s.slots[sg.slot] == nil {
				s.order = append(s.order, sg.slot)
			} else {
				replaced++
			}
			s.slots[sg.slot] = sg.tick
		}
		s.conflated += replaced
		s.lastTick = now
	}
	s.mu.Unlock()
	clear(s.stage)
	s.stage = s.stage[:0]
	return replaced
}

// setState records an upstream state change and queues its event.
func (s *Stream) setState(st feedgatev1.UpstreamState) {
	s.mu.Lock()
	if s.endErr == nil && s.state != st {
		s.state = st
		if len(s.statuses) == maxQueuedStatuses {
			s.statuses = append(s.statuses[:0], s.statuses[1:]...)
		}
		s.statuses = append(s.statuses, st)
	}
	s.mu.Unlock()
	s.wake()
}

// end ends the stream with err (and, for auth loss, ae); later ends are
// ignored. Queued ticks are dropped.
func (s *Stream) end(err error, ae *connections.AuthRequiredError) {
	s.mu.Lock()
	first := s.endErr == nil
	if first {
		s.endErr, s.auth = err, ae
		clear(s.slots)
		s.order, s.statuses = nil, nil
	}
	s.mu.Unlock()
	if first {
		if s.up != nil {
			s.bm.openStreams.Dec()
		}
		s.wake()
	}
}

// Close leaves the upstream (unsubscribing what no other stream of the
// user wants, closing the upstream with the last stream) and ends the
// stream. It is idempotent and never blocks on the network.
func (s *Stream) Close() error {
	s.closeOnce.Do(func() {
		if s.up != nil {
			s.up.leave(s)
		}
		s.end(ErrStreamClosed, nil)
		s.hub.mu.Lock()
		s.hub.releaseLocked(s)
		s.hub.mu.Unlock()
	})
	return nil
}
