package main

import (
	"errors"

	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
)

// frame is what the load generator needs from one StreamMarketFeedResponse:
// which event it is, and for ticks each tick's broker send time and the
// batch's conflated count. The streams decode into it with scanCodec, so
// the load generator, which shares the machine with the servers, spends
// little CPU per tick and measures the servers rather than itself.
type frame struct {
	event     protowire.Number // oneof field: 1 ticks, 2 auth_required, 3 heartbeat, 4 upstream_status
	times     []int64          // broker_time_unix_nanos of each tick
	conflated int64
}

// Field numbers of feedgate.v1.StreamMarketFeedResponse, TickBatch and Tick
// (checked against the generated code by TestScanMatchesProto).
const (
	respTicks        protowire.Number = 1
	respAuthRequired protowire.Number = 2
	batchTicks       protowire.Number = 1
	batchConflated   protowire.Number = 2
	tickBrokerTime   protowire.Number = 14
)

var errBadFrame = errors.New("feedload: malformed StreamMarketFeedResponse")

// scan parses b into f.
func (f *frame) scan(b []byte) error {
	f.event, f.times, f.conflated = 0, f.times[:0], 0
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return errBadFrame
		}
		b = b[n:]
		if typ == protowire.BytesType && num >= 1 && num <= 4 {
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return errBadFrame
			}
			b = b[n:]
			f.event = num
			if num == respTicks {
				if err := f.scanBatch(v); err != nil {
					return err
				}
			}
			continue
		}
		n = protowire.ConsumeFieldValue(num, typ, b)
		if n < 0 {
			return errBadFrame
		}
		b = b[n:]
	}
	return nil
}

func (f *frame) scanBatch(b []byte) error {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return errBadFrame
		}
		b = b[n:]
		switch {
		case num == batchTicks && typ == protowire.BytesType:
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return errBadFrame
			}
			b = b[n:]
			t, err := scanTickTime(v)
			if err != nil {
				return err
			}
			f.times = append(f.times, t)
		case num == batchConflated && typ == protowire.VarintType:
			v, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return errBadFrame
			}
			b = b[n:]
			f.conflated += int64(v)
		default:
			n = protowire.ConsumeFieldValue(num, typ, b)
			if n < 0 {
				return errBadFrame
			}
			b = b[n:]
		}
	}
	return nil
}

func scanTickTime(b []byte) (int64, error) {
	var t int64
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return 0, errBadFrame
		}
		b = b[n:]
		if num == tickBrokerTime && typ == protowire.VarintType {
			v, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return 0, errBadFrame
			}
			b = b[n:]
			t = int64(v)
			continue
		}
		n = protowire.ConsumeFieldValue(num, typ, b)
		if n < 0 {
			return 0, errBadFrame
		}
		b = b[n:]
	}
	return t, nil
}

// scanCodec is a grpc-go codec named "proto" (so servers see an ordinary
// protobuf request) that marshals requests with the protobuf runtime and
// scans responses into a *frame.
type scanCodec struct{}

func (scanCodec) Name() string { return "proto" }

func (scanCodec) Marshal(v any) (mem.BufferSlice, error) {
	b, err := proto.Marshal(v.(proto.Message))
	if err != nil {
		return nil, err
	}
	return mem.BufferSlice{mem.SliceBuffer(b)}, nil
}

func (scanCodec) Unmarshal(data mem.BufferSlice, v any) error {
	f, ok := v.(*frame)
	if !ok {
		return errors.New("feedload: scanCodec decodes only into *frame")
	}
	if len(data) == 1 {
		return f.scan(data[0].ReadOnlyData())
	}
	return f.scan(data.Materialize())
}
