package main

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	feedgatev1 "github.com/feedgate/feedgate/gen/go/feedgate/v1"
)

// TestTinyRun runs every scenario at a tiny scale, in-process, so the load
// generator cannot rot. It checks the program's plumbing, not performance.
func TestTinyRun(t *testing.T) {
	if testing.Short() {
		t.Skip("starts gateways and bare servers")
	}
	cfg, _, err := parseConfig([]string{"-quick", "-scale", "0.05", "-window", "400ms", "-warmup", "100ms"}, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var out, log bytes.Buffer
	sums, err := run(ctx, cfg, &out, &log)
	if err != nil {
		t.Fatalf("run: %v\n%s", err, log.String())
	}
	if len(sums) != len(allScenarios) {
		t.Fatalf("%d summaries, want %d", len(sums), len(allScenarios))
	}
	for _, s := range sums {
		if len(s.Results) == 0 {
			t.Errorf("%s: no results", s.Scenario)
		}
		for _, r := range s.Results {
			if r.Errors != "" {
				t.Errorf("%s/%s: %s", s.Scenario, r.Server, r.Errors)
			}
		}
		switch s.Scenario {
		case "fanout", "users", "light":
			for _, r := range s.Results {
				if r.Delivered == 0 || r.Latency.N == 0 {
					t.Errorf("%s/%s: nothing delivered: %+v", s.Scenario, r.Server, r)
				}
			}
		case "revocation":
			if r := s.Results[0]; r.AuthMissing != 0 || r.Auth.N == 0 {
				t.Errorf("revocation: auth_required reached %d streams, %d missing", r.Auth.N, r.AuthMissing)
			}
		case "unary":
			for _, r := range s.Results {
				if r.Requests == 0 {
					t.Errorf("unary/%s: no requests", r.Server)
				}
			}
		}
	}
	if !strings.Contains(out.String(), `"scenario":"idle"`) || !strings.Contains(out.String(), "== idle") {
		t.Errorf("output lacks the idle JSON summary or table:\n%s", out.String())
	}
	t.Logf("\n%s", out.String())
}

func TestParseConfig(t *testing.T) {
	for _, tc := range []struct {
		args []string
		ok   bool
	}{
		{nil, true},
		{[]string{"-scenario", "fanout,idle"}, true},
		{[]string{"-scenario", "nope"}, false},
		{[]string{"-server", "elsewhere"}, false},
		{[]string{"-url", "http://127.0.0.1:8080"}, false},
		{[]string{"-url", "http://127.0.0.1:8080", "-sandbox-url", "http://127.0.0.1:8090"}, false},
		{[]string{"-url", "http://127.0.0.1:8080", "-sandbox-url", "http://127.0.0.1:8090", "-data-dir", "data"}, true},
	} {
		_, _, err := parseConfig(tc.args, &bytes.Buffer{})
		if (err == nil) != tc.ok {
			t.Errorf("parseConfig(%q) = %v, want ok %v", tc.args, err, tc.ok)
		}
	}
}

func TestHistQuantiles(t *testing.T) {
	var h hist
	for i := 1; i <= 1000; i++ {
		h.add(time.Duration(i) * time.Millisecond)
	}
	s := h.summary()
	if s.N != 1000 || s.P50 < 470 || s.P50 > 530 || s.P99 < 940 || s.P99 > 1050 || s.Max < 940 {
		t.Errorf("summary = %+v", s)
	}
}

func TestScanMatchesProto(t *testing.T) {
	now := time.Unix(1764000000, 123456789)
	batch := &feedgatev1.TickBatch{Conflated: 7}
	for i := range 3 {
		batch.Ticks = append(batch.Ticks, benchTick(fmt.Sprintf("NSE_FO|%d", i), 100+float64(i), now.Add(time.Duration(i))))
	}
	for _, tc := range []struct {
		msg   *feedgatev1.StreamMarketFeedResponse
		event protowire.Number
		times []int64
		confl int64
	}{
		{&feedgatev1.StreamMarketFeedResponse{Event: &feedgatev1.StreamMarketFeedResponse_Ticks{Ticks: batch}}, respTicks,
			[]int64{now.UnixNano(), now.UnixNano() + 1, now.UnixNano() + 2}, 7},
		{&feedgatev1.StreamMarketFeedResponse{Event: &feedgatev1.StreamMarketFeedResponse_AuthRequired{AuthRequired: &feedgatev1.AuthRequired{Message: "log in"}}}, respAuthRequired, nil, 0},
		{&feedgatev1.StreamMarketFeedResponse{Event: &feedgatev1.StreamMarketFeedResponse_UpstreamStatus{UpstreamStatus: &feedgatev1.UpstreamStatus{State: feedgatev1.UpstreamState_UPSTREAM_STATE_LIVE}}}, 4, nil, 0},
	} {
		b, err := proto.Marshal(tc.msg)
		if err != nil {
			t.Fatal(err)
		}
		var f frame
		if err := f.scan(b); err != nil {
			t.Fatal(err)
		}
		if f.event != tc.event || !slices.Equal(f.times, tc.times) || f.conflated != tc.confl {
			t.Errorf("scan(%v) = %+v, want event %d times %v conflated %d", tc.msg, f, tc.event, tc.times, tc.confl)
		}
	}
	// The field numbers the scanner relies on.
	fields := func(m proto.Message, name string) protowire.Number {
		return m.ProtoReflect().Descriptor().Fields().ByName(protoreflect.Name(name)).Number()
	}
	if fields(&feedgatev1.StreamMarketFeedResponse{}, "ticks") != respTicks || fields(&feedgatev1.StreamMarketFeedResponse{}, "auth_required") != respAuthRequired ||
		fields(&feedgatev1.TickBatch{}, "ticks") != batchTicks || fields(&feedgatev1.TickBatch{}, "conflated") != batchConflated ||
		fields(&feedgatev1.Tick{}, "broker_time_unix_nanos") != tickBrokerTime {
		t.Error("field numbers changed: update scan.go")
	}
}
