// Command feedload is feedgate's load generator. It starts a gateway with
// the sandbox broker (or targets a running one with -url and -sandbox-url),
// creates users, logs them in through the real OAuth redirect chain, opens
// streams, drives the sandbox feed at a chosen tick rate, and prints one
// JSON summary per scenario and a table. Beside every gateway figure it
// runs, in the same invocation, a bare connect-go and a bare grpc-go server
// that fan the same tick messages (one tick per message) out to the same
// number of streams with no gateway logic.
//
// Latency is end to end: every tick carries the sandbox's (or the bare
// generator's) send time. Everything runs on loopback and every run is
// bounded in time.
//
//	go run ./client/cmd/feedload -scenario all -server child   # the RESULTS.md figures
//	go run ./client/cmd/feedload -quick                         # CI smoke run, < 60 s
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"time"
)

// Config is feedload's validated configuration.
type Config struct {
	Scenarios []string
	Quick     bool
	// Server is "inproc" (servers in this process) or "child" (each server
	// in a child process, so its CPU and memory are measured alone).
	Server string
	// URL and SandboxURL target a running gateway and its sandbox broker;
	// DataDir is that gateway's data directory (users are created in its
	// store) and ServerPID its process (for CPU and RSS).
	URL, SandboxURL, DataDir string
	ServerPID                int
	// Window and Warmup time each measurement.
	Window, Warmup time.Duration
	// PerConn is the number of streams per HTTP/2 connection.
	PerConn int
	// Bare turns the bare baselines on.
	Bare bool
	// CPUProfile, if set, receives the server's CPU profile taken during
	// the gateway's fan-out window.
	CPUProfile string
	// Scale multiplies the stream counts (tests use a tiny fraction).
	Scale float64
	// JSON, if set, also receives the JSON summaries.
	JSON string
}

var allScenarios = []string{"fanout", "users", "light", "revocation", "unary", "idle"}

func parseConfig(args []string, out io.Writer) (Config, string, error) {
	var c Config
	fs := flag.NewFlagSet("feedload", flag.ContinueOnError)
	fs.SetOutput(out)
	scen := fs.String("scenario", "all", "comma-separated scenarios: "+strings.Join(allScenarios, ", ")+", or all")
	fs.BoolVar(&c.Quick, "quick", false, "small, short runs (< 60 s in all) for CI smoke tests")
	fs.StringVar(&c.Server, "server", "inproc", "where started servers run: inproc (this process) or child (a child process each, measured alone)")
	fs.StringVar(&c.URL, "url", "", "target a running gateway (http://host:port) instead of starting one")
	fs.StringVar(&c.SandboxURL, "sandbox-url", "", "the targeted gateway's sandbox broker (with -url)")
	fs.StringVar(&c.DataDir, "data-dir", "", "the targeted gateway's data directory, to create users in its store (with -url)")
	fs.IntVar(&c.ServerPID, "server-pid", 0, "the targeted gateway's process id, for CPU and RSS (with -url)")
	fs.DurationVar(&c.Window, "window", 0, "measurement window (default 8s, 1s with -quick)")
	fs.DurationVar(&c.Warmup, "warmup", 0, "warm-up before each window (default 2s, 500ms with -quick)")
	fs.IntVar(&c.PerConn, "per-conn", 100, "streams per HTTP/2 connection")
	fs.BoolVar(&c.Bare, "bare", true, "run the bare connect-go and grpc-go baselines")
	fs.StringVar(&c.CPUProfile, "cpuprofile", "", "write the server's CPU profile during the gateway fan-out window to this file")
	fs.Float64Var(&c.Scale, "scale", 1, "multiply stream and user counts (for tests)")
	fs.StringVar(&c.JSON, "json", "", "also write the JSON summaries to this file")
	spec := fs.String("serve-spec", "", "internal: serve one server as a child process")
	if err := fs.Parse(args); err != nil {
		return Config{}, "", err
	}
	if *spec != "" {
		return c, *spec, nil
	}
	if *scen == "all" {
		c.Scenarios = allScenarios
	} else {
		for s := range strings.SplitSeq(*scen, ",") {
			if !slices.Contains(allScenarios, s) {
				return Config{}, "", fmt.Errorf("-scenario: unknown scenario %q", s)
			}
			c.Scenarios = append(c.Scenarios, s)
		}
	}
	if c.Server != "inproc" && c.Server != "child" {
		return Config{}, "", fmt.Errorf("-server: want inproc or child, not %q", c.Server)
	}
	if (c.URL == "") != (c.SandboxURL == "") {
		return Config{}, "", errors.New("-url and -sandbox-url go together")
	}
	if c.URL != "" && c.DataDir == "" {
		return Config{}, "", errors.New("-url needs -data-dir (users are created in the gateway's store)")
	}
	if c.Window == 0 {
		c.Window = 8 * time.Second
		if c.Quick {
			c.Window = time.Second
		}
	}
	if c.Warmup == 0 {
		c.Warmup = 2 * time.Second
		if c.Quick {
			c.Warmup = 500 * time.Millisecond
		}
	}
	if c.PerConn <= 0 || c.Scale <= 0 || c.Window <= 0 {
		return Config{}, "", errors.New("-per-conn, -scale and -window must be positive")
	}
	return c, "", nil
}

func main() {
	cfg, spec, err := parseConfig(os.Args[1:], os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		return
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "feedload:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if spec != "" {
		err = serveChild(ctx, spec)
	} else {
		_, err = run(ctx, cfg, os.Stdout, os.Stderr)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "feedload:", err)
		os.Exit(1)
	}
}
