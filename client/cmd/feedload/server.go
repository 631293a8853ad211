package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"os/exec"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/feedgate/feedgate/server/auth"
	"github.com/feedgate/feedgate/server/config"
	"github.com/feedgate/feedgate/server/gateway"
	"github.com/feedgate/feedgate/server/sandbox"
)

// Server kinds under test.
const (
	kindGateway = "gateway"
	kindConnect = "bare-connect"
	kindGRPC    = "bare-grpc"
)

// serverSpec says which server to start; it travels to a child process as
// JSON.
type serverSpec struct {
	Kind string `json:"kind"`
	// SandboxURL is the sandbox broker the gateway uses as its Upstox.
	SandboxURL string `json:"sandbox_url,omitempty"`
	// Instruments and Interval drive a bare server's tick generator.
	Instruments int           `json:"instruments,omitempty"`
	Interval    time.Duration `json:"interval,omitempty"`
}

// serverInfo is how to reach a started server.
type serverInfo struct {
	Addr  string `json:"addr"`            // host:port of the RPC server
	Debug string `json:"debug,omitempty"` // base URL of the debug endpoint ("" for an external gateway)
	PID   int    `json:"pid,omitempty"`   // the process serving it (0 if unknown)
}

// procStats is what a debug endpoint reports about its process.
type procStats struct {
	PID         int    `json:"pid"`
	Goroutines  int    `json:"goroutines"`
	HeapInuse   uint64 `json:"heap_inuse"`
	StackInuse  uint64 `json:"stack_inuse"`
	RSS         int64  `json:"rss"`
	CPUNanos    int64  `json:"cpu_nanos"`
	Published   uint64 `json:"published"`    // bare: ticks published
	StreamsOpen int64  `json:"streams_open"` // bare: streams open
	Drops       int64  `json:"drops"`        // bare: ticks skipped by lagging streams
}

// startLocal starts spec's server in this process and returns how to reach
// it and how to stop it.
func startLocal(spec serverSpec) (serverInfo, func(), error) {
	ctx, cancel := context.WithCancel(context.Background())
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	var gen *tickGen
	var stopSrv func()
	var addr string
	switch spec.Kind {
	case kindGateway:
		dir, err := os.MkdirTemp("", "feedload-gw-")
		if err != nil {
			cancel()
			return serverInfo{}, nil, err
		}
		g, run, err := newGateway(ctx, dir, spec.SandboxURL)
		if err != nil {
			cancel()
			os.RemoveAll(dir)
			return serverInfo{}, nil, err
		}
		done := make(chan error, 1)
		go func() { done <- run() }()
		addr = g.Addr()
		stopSrv = func() {
			cancel()
			<-done
			os.RemoveAll(dir)
		}
		mux.HandleFunc("POST /feedload/users", func(w http.ResponseWriter, r *http.Request) {
			n, _ := strconv.Atoi(r.FormValue("n"))
			keys, err := createUsers(r.Context(), g, r.FormValue("prefix"), n)
			if err != nil {
				http.Error(w, err.Error(), http.StatusInternalServerError)
				return
			}
			_ = json.NewEncoder(w).Encode(keys)
		})
	case kindConnect, kindGRPC:
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			cancel()
			return serverInfo{}, nil, err
		}
		gen = newTickGen(spec.Instruments, spec.Interval)
		go gen.run(ctx)
		addr = ln.Addr().String()
		stop := startBareConnect
		if spec.Kind == kindGRPC {
			stop = startBareGRPC
		}
		s := stop(ln, gen)
		stopSrv = func() { cancel(); s() }
	default:
		cancel()
		return serverInfo{}, nil, fmt.Errorf("unknown server kind %q", spec.Kind)
	}
	mux.HandleFunc("/feedload/stats", func(w http.ResponseWriter, r *http.Request) {
		if r.FormValue("gc") != "" {
			runtime.GC()
			debug.FreeOSMemory()
		}
		st := selfStats()
		if gen != nil {
			st.Published, st.StreamsOpen, st.Drops = gen.published(), gen.open.Load(), gen.drops.Load()
			if at, err := strconv.ParseInt(r.FormValue("at"), 10, 64); err == nil {
				st.Published = gen.publishedAt(at)
			}
		}
		_ = json.NewEncoder(w).Encode(st)
	})
	dln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		stopSrv()
		return serverInfo{}, nil, err
	}
	dsrv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = dsrv.Serve(dln) }()
	return serverInfo{Addr: addr, Debug: "http://" + dln.Addr().String(), PID: os.Getpid()}, func() {
		_ = dsrv.Close()
		stopSrv()
	}, nil
}

// newGateway builds a gateway in dir that uses the sandbox at sandboxURL as
// its (real-looking) Upstox, so the sandbox's work is not counted as the
// gateway's. run serves until ctx ends.
func newGateway(ctx context.Context, dir, sandboxURL string) (*gateway.Gateway, func() error, error) {
	args := []string{"--addr", "127.0.0.1:0", "--data-dir", dir, "--sandbox-addr", "off",
		"--upstox-client-id", sandbox.UpstoxClientID, "--upstox-base-url", sandboxURL + "/upstox", "--log-level", "error"}
	env := map[string]string{"FEEDGATE_UPSTOX_CLIENT_SECRET": sandbox.UpstoxClientSecret}
	cfg, err := config.Load("feedload-gateway", args, func(k string) string { return env[k] }, io.Discard)
	if err != nil {
		return nil, nil, err
	}
	opts := gateway.Options{Stdout: io.Discard}
	if lvl := os.Getenv("FEEDLOAD_GATEWAY_LOG"); lvl != "" {
		// For investigations: the gateway's own logs on stderr.
		var l slog.Level
		if err := l.UnmarshalText([]byte(lvl)); err != nil {
			return nil, nil, fmt.Errorf("FEEDLOAD_GATEWAY_LOG: %w", err)
		}
		opts.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: l}))
	}
	g, err := gateway.New(ctx, cfg, opts)
	if err != nil {
		return nil, nil, err
	}
	return g, func() error { return g.Run(ctx) }, nil
}

// userKey is a created user and its API key.
type userKey struct {
	Name string `json:"name"`
	Key  string `json:"key"`
}

// createUsers creates n users named prefix-<i> in g's store.
func createUsers(ctx context.Context, g *gateway.Gateway, prefix string, n int) ([]userKey, error) {
	out := make([]userKey, 0, n)
	for i := range n {
		name := fmt.Sprintf("%s-%d", prefix, i)
		_, key, err := auth.CreateUser(ctx, g.Store(), name, false, time.Now())
		if err != nil {
			return nil, err
		}
		out = append(out, userKey{Name: name, Key: key.Reveal()})
	}
	return out, nil
}

// selfStats reads this process's runtime and /proc figures.
func selfStats() procStats {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	st := procStats{PID: os.Getpid(), Goroutines: runtime.NumGoroutine(), HeapInuse: ms.HeapInuse, StackInuse: ms.StackInuse}
	st.RSS, _ = procRSS(st.PID)
	st.CPUNanos, _ = procCPU(st.PID)
	return st
}

// procRSS reads a process's resident set size in bytes.
func procRSS(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10, err
		}
	}
	return 0, errors.New("no VmRSS")
}

// procCPU reads a process's user+system CPU time.
func procCPU(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// Fields after the command name, which is in parentheses.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, errors.New("bad /proc stat")
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0, errors.New("bad /proc stat")
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, err
	}
	const hz = 100 // USER_HZ on Linux
	return (ut + st) * int64(time.Second) / hz, nil
}

// startChild starts spec's server in a child process (this program with
// -serve-spec), so its CPU and memory are measured apart from the load
// generator's. The child dies with its parent.
func startChild(spec serverSpec) (serverInfo, func(), error) {
	exe, err := os.Executable()
	if err != nil {
		return serverInfo{}, nil, err
	}
	js, _ := json.Marshal(spec)
	cmd := exec.Command(exe, "-serve-spec", string(js))
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return serverInfo{}, nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return serverInfo{}, nil, err
	}
	if err := cmd.Start(); err != nil {
		return serverInfo{}, nil, err
	}
	stop := func() {
		_ = stdin.Close() // the child stops when its stdin closes
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
	}
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		stop()
		return serverInfo{}, nil, fmt.Errorf("child server %s: %w", spec.Kind, err)
	}
	var info serverInfo
	if err := json.Unmarshal([]byte(line), &info); err != nil {
		stop()
		return serverInfo{}, nil, fmt.Errorf("child server %s said %q: %w", spec.Kind, line, err)
	}
	return info, stop, nil
}

// serveChild is the child process: start the server, announce it on
// stdout, serve until stdin closes or a signal arrives.
func serveChild(ctx context.Context, specJSON string) error {
	var spec serverSpec
	if err := json.Unmarshal([]byte(specJSON), &spec); err != nil {
		return err
	}
	info, stop, err := startLocal(spec)
	if err != nil {
		return err
	}
	defer stop()
	b, _ := json.Marshal(info)
	fmt.Printf("%s\n", b)
	eof := make(chan struct{})
	go func() { _, _ = io.Copy(io.Discard, os.Stdin); close(eof) }()
	select {
	case <-ctx.Done():
	case <-eof:
	}
	return nil
}
