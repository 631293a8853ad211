package feed

import (
	"testing"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	feedgatev1 "github.com/feedgate/feedgate/gen/go/feedgate/v1"
	"github.com/feedgate/feedgate/server/broker"
)

// TestWireMatchesTicks checks that a tick event's Wire, sent as TickBatch's
// unknown fields, decodes to exactly the event's ticks, in both shapes.
func TestWireMatchesTicks(t *testing.T) {
	checkLeaks(t)
	e := newFakeEnv(t)
	rich := e.sub(t, "alice", broker.ModeFull, "A", "B", "C")
	plain := e.sub(t, "alice", broker.ModeLTPC, "A", "C")
	c := e.conn(t)
	c.batches <- ticks("A", "B", "C")
	for _, st := range []*Stream{rich, plain} {
		ev := nextTicks(t, st)
		if ev.Wire == nil {
			t.Fatal("tick event without Wire")
		}
		sent := &feedgatev1.TickBatch{Conflated: ev.Ticks.GetConflated()}
		sent.ProtoReflect().SetUnknown(protoreflect.RawFields(ev.Wire))
		b, err := proto.Marshal(sent)
		if err != nil {
			t.Fatal(err)
		}
		var got feedgatev1.TickBatch
		if err := proto.Unmarshal(b, &got); err != nil {
			t.Fatal(err)
		}
		if !proto.Equal(&got, ev.Ticks) {
			t.Errorf("Wire decodes to %v, want %v", &got, ev.Ticks)
		}
		st.Close()
	}
}
