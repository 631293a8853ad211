package main

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
)

// Summary is one scenario's JSON summary.
type Summary struct {
	Scenario    string             `json:"scenario"`
	Description string             `json:"description"`
	Results     []Result           `json:"results"`
	Ratios      map[string]float64 `json:"ratios,omitempty"`
	Coalescing  string             `json:"coalescing,omitempty"`
	Targets     []Target           `json:"targets,omitempty"`
}

// Target is one of the targets, met or not.
type Target struct {
	Name string `json:"name"`
	Want string `json:"want"`
	Got  string `json:"got"`
	Met  bool   `json:"met"`
}

// Result is one server's figures in a scenario; fields that do not apply
// are left out.
//
// Delivered% is ticks received by clients during the window over ticks
// offered to them: for the gateway, ticks the gateway received from the
// sandbox during the window (its feedgate_feed_ticks_in_total) times the
// streams that subscribed each; for a bare server, ticks published times
// streams. A conflated tick (replaced in a stream's queue by a newer tick
// of the same instrument, reported by the server in TickBatch.conflated)
// is not delivered and is reported separately; a bare server has no
// conflation, a lagging stream skips ticks (Dropped).
type Result struct {
	Server           string  `json:"server"`
	Scope            string  `json:"cpu_mem_scope,omitempty"`
	Streams          int     `json:"streams,omitempty"`
	Users            int     `json:"users,omitempty"`
	Instruments      int     `json:"instruments,omitempty"`
	Window           float64 `json:"window_s,omitempty"`
	OfferedPerStream float64 `json:"offered_ticks_per_s_per_stream,omitempty"`
	Offered          int64   `json:"offered_ticks,omitempty"`
	// GatewayTicksIn is the gateway's count of ticks received from the
	// sandbox during the window (feedgate_feed_ticks_in_total), a
	// cross-check of the rounds counted as offered.
	GatewayTicksIn  int64   `json:"gateway_ticks_in,omitempty"`
	Delivered       int64   `json:"delivered_ticks,omitempty"`
	DeliveredPerSec float64 `json:"delivered_ticks_per_s,omitempty"`
	// ReceivedPerSec is throughput by arrival: ticks that arrived during
	// the window, whenever they were sent.
	ReceivedPerSec float64 `json:"received_ticks_per_s,omitempty"`
	DeliveredPct   float64 `json:"delivered_pct,omitempty"`
	Conflated      int64   `json:"conflated_ticks,omitempty"`
	Dropped        int64   `json:"dropped_ticks,omitempty"`
	Messages       int64   `json:"messages,omitempty"`
	TicksPerMsg    float64 `json:"ticks_per_message,omitempty"`
	Latency        Latency `json:"latency"`
	ServerCPU      float64 `json:"server_cpu_cores,omitempty"`
	ClientCPU      float64 `json:"client_cpu_cores,omitempty"`
	ServerRSSMB    float64 `json:"server_rss_mb,omitempty"`
	Goroutines     int     `json:"server_goroutines,omitempty"`

	// Revocation.
	Auth        Latency `json:"revocation_to_auth_required"`
	AuthMissing int     `json:"auth_required_missing,omitempty"`
	BrokerCalls int64   `json:"broker_calls,omitempty"`
	Broker401   int64   `json:"broker_401s,omitempty"`
	// CallsByPath are the revoked account's broker calls after the
	// revocation, by "path status".
	CallsByPath map[string]int64 `json:"broker_calls_by_path,omitempty"`

	// Unary.
	Callers  int     `json:"callers,omitempty"`
	Requests int64   `json:"requests,omitempty"`
	RPS      float64 `json:"req_per_s,omitempty"`

	// Idle.
	RSSPerStreamKB      float64 `json:"rss_per_stream_kb,omitempty"`
	HeapPerStreamKB     float64 `json:"heap_stack_per_stream_kb,omitempty"`
	GoroutinesPerStream float64 `json:"goroutines_per_stream,omitempty"`
	StackPerStreamKB    float64 `json:"stack_per_stream_kb,omitempty"`

	Errors string `json:"errors,omitempty"`
}

// Machine describes where the figures were taken.
type Machine struct {
	NumCPU    int    `json:"nproc"`
	CPUModel  string `json:"cpu_model"`
	LoadAvg   string `json:"load_average_at_end"`
	GoVersion string `json:"go_version"`
	Server    string `json:"server"`
}

func (s *Summary) target(name, want, got string, met bool) {
	s.Targets = append(s.Targets, Target{Name: name, Want: want, Got: got, Met: met})
}

// ratios sets the gateway's fan-out figures over each bare server's.
func (s *Summary) ratios() {
	if len(s.Results) < 2 {
		return
	}
	g := s.Results[0]
	s.Ratios = map[string]float64{}
	for _, b := range s.Results[1:] {
		if b.DeliveredPerSec > 0 {
			s.Ratios["gateway_vs_"+b.Server+"_delivered"] = round2(g.DeliveredPerSec / b.DeliveredPerSec)
		}
		if b.ReceivedPerSec > 0 {
			s.Ratios["gateway_vs_"+b.Server+"_received"] = round2(g.ReceivedPerSec / b.ReceivedPerSec)
		}
		if b.Latency.P99 > 0 {
			s.Ratios["gateway_vs_"+b.Server+"_p99"] = round2(g.Latency.P99 / b.Latency.P99)
		}
		if b.ServerCPU > 0 && g.DeliveredPerSec > 0 && b.DeliveredPerSec > 0 {
			// CPU per delivered tick, gateway over bare.
			s.Ratios["gateway_vs_"+b.Server+"_cpu_per_tick"] = round2((g.ServerCPU / g.DeliveredPerSec) / (b.ServerCPU / b.DeliveredPerSec))
		}
	}
}

// printTables prints the human tables.
func printTables(w io.Writer, m Machine, sums []Summary) {
	fmt.Fprintf(w, "machine: %d CPUs, %s, load %s, %s, servers: %s\n\n", m.NumCPU, m.CPUModel, m.LoadAvg, m.GoVersion, m.Server)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight|tabwriter.Debug)
	for _, s := range sums {
		fmt.Fprintf(w, "== %s: %s\n", s.Scenario, s.Description)
		switch s.Scenario {
		case "fanout", "users", "light":
			fmt.Fprintln(tw, "server\tstreams\toffered/s\tdelivered/s\tdelivered%\treceived/s\tconflated\tdropped\tticks/msg\tp50 ms\tp99 ms\tp99.9 ms\tsrv CPU\tsrv RSS MB\t")
			for _, r := range s.Results {
				fmt.Fprintf(tw, "%s\t%d\t%.0f\t%.0f\t%.2f\t%.0f\t%d\t%d\t%.1f\t%.2f\t%.2f\t%.2f\t%.2f\t%.0f\t\n", r.Server, r.Streams,
					float64(r.Offered)/max(r.Window, 1e-9), r.DeliveredPerSec, r.DeliveredPct, r.ReceivedPerSec, r.Conflated, r.Dropped, r.TicksPerMsg,
					r.Latency.P50, r.Latency.P99, r.Latency.P999, r.ServerCPU, r.ServerRSSMB)
			}
		case "revocation":
			fmt.Fprintln(tw, "server\tstreams\tauth first ms\tauth p50 ms\tauth p99 ms\tauth max ms\tmissing\tbroker calls\t401s\tothers p50 ms\tothers p99 ms\tothers p99.9 ms\t")
			for _, r := range s.Results {
				fmt.Fprintf(tw, "%s\t%d\t%.2f\t%.2f\t%.2f\t%.2f\t%d\t%d\t%d\t%.2f\t%.2f\t%.2f\t\n", r.Server, r.Streams, r.Auth.Min, r.Auth.P50, r.Auth.P99, r.Auth.Max,
					r.AuthMissing, r.BrokerCalls, r.Broker401, r.Latency.P50, r.Latency.P99, r.Latency.P999)
			}
		case "unary":
			fmt.Fprintln(tw, "server\tcallers\trequests\treq/s\tp50 ms\tp99 ms\tbroker calls\t")
			for _, r := range s.Results {
				fmt.Fprintf(tw, "%s\t%d\t%d\t%.0f\t%.3f\t%.3f\t%d\t\n", r.Server, r.Callers, r.Requests, r.RPS, r.Latency.P50, r.Latency.P99, r.BrokerCalls)
			}
		case "idle":
			fmt.Fprintln(tw, "server\tstreams\tRSS MB\tRSS KB/stream\theap+stack KB/stream\tof which stack\tgoroutines/stream\t")
			for _, r := range s.Results {
				fmt.Fprintf(tw, "%s\t%d\t%.1f\t%.2f\t%.2f\t%.2f\t%.2f\t\n", r.Server, r.Streams, r.ServerRSSMB, r.RSSPerStreamKB, r.HeapPerStreamKB, r.StackPerStreamKB, r.GoroutinesPerStream)
			}
		}
		tw.Flush()
		for _, r := range s.Results {
			if len(r.CallsByPath) > 0 {
				fmt.Fprintf(w, "   broker calls after revocation: %v\n", r.CallsByPath)
			}
			if r.Errors != "" {
				fmt.Fprintf(w, "   %s errors: %s\n", r.Server, r.Errors)
			}
		}
		if len(s.Results) > 0 && s.Results[0].Scope != "" {
			fmt.Fprintf(w, "   CPU/RSS scope: %s\n", s.Results[0].Scope)
		}
		var keys []string
		for k, v := range s.Ratios {
			keys = append(keys, fmt.Sprintf("%s=%g", k, v))
		}
		if len(keys) > 0 {
			fmt.Fprintf(w, "   ratios: %s\n", strings.Join(sorted(keys), ", "))
		}
		for _, t := range s.Targets {
			mark := "MET"
			if !t.Met {
				mark = "NOT MET"
			}
			fmt.Fprintf(w, "   target %-55s want %-12s got %-18s %s\n", t.Name, t.Want, t.Got, mark)
		}
		fmt.Fprintln(w)
	}
}

func sorted(s []string) []string {
	for i := 1; i < len(s); i++ {
		for j := i; j > 0 && s[j] < s[j-1]; j-- {
			s[j], s[j-1] = s[j-1], s[j]
		}
	}
	return s
}
