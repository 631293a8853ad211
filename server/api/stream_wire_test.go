package api

import (
	"fmt"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	feedgatev1 "github.com/feedgate/feedgate/gen/go/feedgate/v1"
	"github.com/feedgate/feedgate/server/feed"
)

// wireEvent builds a tick event the way the hub does: shared ticks, each
// encoded once as an element of TickBatch's ticks field.
func wireEvent(n int) feed.Event {
	ticks := make([]*feedgatev1.Tick, n)
	var wire []byte
	for i := range ticks {
		t := &feedgatev1.Tick{InstrumentKey: fmt.Sprintf("NSE_FO|%d", 40000+i), Ltp: 101.5 + float64(i), LttUnixMs: 1764000000000,
			Ltq: 75, ClosePrice: 99, Volume: 123400, Oi: 4567, Iv: 13.2, BidPrice: 101.45, BidQty: 750, AskPrice: 101.55, AskQty: 825,
			Greeks: &feedgatev1.Greeks{Delta: 0.51, Gamma: 0.0007, Theta: -12.3, Vega: 11.9, Rho: 2.1}, BrokerTimeUnixNanos: 1764000000123456789}
		ticks[i] = t
		b, err := proto.Marshal(t)
		if err != nil {
			panic(err)
		}
		wire = protowire.AppendTag(wire, 1, protowire.BytesType)
		wire = protowire.AppendBytes(wire, b)
	}
	return feed.Event{Kind: feed.EventTicks, Ticks: &feedgatev1.TickBatch{Ticks: ticks, Conflated: 3}, Wire: wire}
}

func TestWireBatchDecodesAsTheMessage(t *testing.T) {
	t.Parallel()
	ev := wireEvent(5)
	b, err := proto.Marshal(&feedgatev1.StreamMarketFeedResponse{Event: &feedgatev1.StreamMarketFeedResponse_Ticks{Ticks: wireBatch(ev, true)}})
	if err != nil {
		t.Fatal(err)
	}
	var got feedgatev1.StreamMarketFeedResponse
	if err := proto.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	want := &feedgatev1.StreamMarketFeedResponse{Event: &feedgatev1.StreamMarketFeedResponse_Ticks{Ticks: ev.Ticks}}
	if !proto.Equal(&got, want) {
		t.Errorf("decoded %v, want %v", &got, want)
	}
	if wireBatch(ev, false) != ev.Ticks {
		t.Error("a non-binary codec must get the messages")
	}
	if ev.Wire = nil; wireBatch(ev, true) != ev.Ticks {
		t.Error("an event without Wire must be sent as is")
	}
}

func TestBinaryCodec(t *testing.T) {
	t.Parallel()
	for ct, want := range map[string]bool{
		"application/grpc": true, "application/grpc+proto": true, "application/grpc-web": true,
		"application/grpc-web+proto": true, "application/connect+proto": true, "Application/Connect+Proto; charset=x": true,
		"application/grpc+json": false, "application/grpc-web+json": false, "application/connect+json": false, "": false,
	} {
		if got := binaryCodec(ct); got != want {
			t.Errorf("binaryCodec(%q) = %v, want %v", ct, got, want)
		}
	}
}

// BenchmarkTickBatchMarshal is the per-stream cost of one 100-tick message:
// marshalling the shared ticks again, or copying the hub's encoding.
func BenchmarkTickBatchMarshal(b *testing.B) {
	ev := wireEvent(100)
	for _, tc := range []struct {
		name   string
		binary bool
	}{{"messages", false}, {"wire", true}} {
		b.Run(tc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				msg := &feedgatev1.StreamMarketFeedResponse{Event: &feedgatev1.StreamMarketFeedResponse_Ticks{Ticks: wireBatch(ev, tc.binary)}}
				if _, err := proto.Marshal(msg); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
