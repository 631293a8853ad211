package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"runtime"
	"strings"
	"sync/atomic"
	"time"

	"github.com/feedgate/feedgate/server/auth"
	"github.com/feedgate/feedgate/server/gateway"
	"github.com/feedgate/feedgate/server/sandbox"
)

// env is one invocation's shared state: the sandbox broker, the direct
// broker token, the instrument keys and how to start servers.
type env struct {
	cfg     Config
	sbURL   string
	run     string // unique prefix for user and account names
	keys    []string
	expiry  string
	direct  string // an Upstox token for calling the sandbox directly
	log     io.Writer
	userSeq atomic.Int64
}

// run executes the configured scenarios and prints their summaries.
func run(ctx context.Context, cfg Config, out, log io.Writer) ([]Summary, error) {
	e := &env{cfg: cfg, log: log, run: fmt.Sprintf("fl%d", time.Now().Unix()%100000)}
	if cfg.URL == "" {
		sb, err := sandbox.New(sandbox.Config{FeedInterval: 100 * time.Millisecond})
		if err != nil {
			return nil, err
		}
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		srv := &http.Server{Handler: sb.Handler(), ReadHeaderTimeout: 10 * time.Second}
		go func() { _ = srv.Serve(ln) }()
		defer func() { _ = srv.Close(); _ = sb.Close() }()
		e.sbURL = "http://" + ln.Addr().String()
	} else {
		e.sbURL = strings.TrimRight(cfg.SandboxURL, "/")
	}
	if err := e.setup(ctx); err != nil {
		return nil, fmt.Errorf("setup: %w", err)
	}
	var sums []Summary
	var jsonOut io.Writer = out
	if cfg.JSON != "" {
		f, err := os.Create(cfg.JSON)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		jsonOut = io.MultiWriter(out, f)
	}
	for _, name := range cfg.Scenarios {
		if ctx.Err() != nil {
			return sums, ctx.Err()
		}
		fmt.Fprintf(log, "feedload: scenario %s ...\n", name)
		s, err := e.scenario(ctx, name)
		if err != nil {
			return sums, fmt.Errorf("scenario %s: %w", name, err)
		}
		b, _ := json.Marshal(s)
		fmt.Fprintf(jsonOut, "%s\n", b)
		sums = append(sums, s)
	}
	fmt.Fprintln(out)
	printTables(out, e.machine(), sums)
	return sums, nil
}

func (e *env) scenario(ctx context.Context, name string) (Summary, error) {
	n := func(v int) int { return max(1, int(float64(v)*e.cfg.Scale)) }
	q := e.cfg.Quick
	pick := func(full, quick int) int {
		if q {
			return n(quick)
		}
		return n(full)
	}
	switch name {
	case "fanout":
		return e.fanoutScenario(ctx, "fanout", 1, pick(1000, 100), 100, 100*time.Millisecond)
	case "users":
		return e.fanoutScenario(ctx, "users", pick(500, 50), 2, 10, 100*time.Millisecond)
	case "light":
		return e.fanoutScenario(ctx, "light", 1, n(100), 100, 100*time.Millisecond)
	case "revocation":
		return e.revocation(ctx, pick(1000, 100), pick(20, 5), 5)
	case "unary":
		return e.unary(ctx)
	case "idle":
		return e.idle(ctx, pick(10000, 1000))
	}
	return Summary{}, fmt.Errorf("unknown scenario %q", name)
}

// setup gets a direct Upstox token from the sandbox and finds a listed
// expiry of Nifty 50 and its option keys.
func (e *env) setup(ctx context.Context) error {
	tok, err := e.directToken(e.run + "-direct")
	if err != nil {
		return err
	}
	e.direct = tok
	day := time.Now()
	for range 40 {
		d := day.Format(time.DateOnly)
		day = day.Add(24 * time.Hour)
		var chain struct {
			Data []struct {
				Call struct {
					Key string `json:"instrument_key"`
				} `json:"call_options"`
				Put struct {
					Key string `json:"instrument_key"`
				} `json:"put_options"`
			} `json:"data"`
		}
		body, err := e.directChain(ctx, d)
		if err != nil {
			return err
		}
		if err := json.Unmarshal(body, &chain); err != nil {
			return err
		}
		if len(chain.Data) == 0 {
			continue
		}
		e.expiry = d
		for _, s := range chain.Data {
			e.keys = append(e.keys, s.Call.Key, s.Put.Key)
		}
		if len(e.keys) < 100 {
			return fmt.Errorf("option chain of %s has %d keys, want 100", d, len(e.keys))
		}
		return nil
	}
	return errors.New("no listed Nifty 50 expiry in the next 40 days")
}

const underlying = "NSE_INDEX|Nifty 50"

// directToken logs account in to the sandbox's Upstox directly, as an app
// of one's own would: dialog, then the token exchange.
func (e *env) directToken(account string) (string, error) {
	const redirect = "http://127.0.0.1/feedload-callback"
	q := url.Values{"client_id": {sandbox.UpstoxClientID}, "redirect_uri": {redirect}, "response_type": {"code"},
		"state": {"feedload"}, "account": {account}}
	res, err := noRedirect.Get(e.sbURL + "/upstox/v2/login/authorization/dialog?" + q.Encode())
	if err != nil {
		return "", err
	}
	res.Body.Close()
	loc, err := url.Parse(res.Header.Get("Location"))
	if err != nil || loc.Query().Get("code") == "" {
		return "", fmt.Errorf("sandbox dialog: HTTP %d", res.StatusCode)
	}
	form := url.Values{"code": {loc.Query().Get("code")}, "client_id": {sandbox.UpstoxClientID},
		"client_secret": {sandbox.UpstoxClientSecret}, "redirect_uri": {redirect}, "grant_type": {"authorization_code"}}
	res, err = httpc.PostForm(e.sbURL+"/upstox/v2/login/authorization/token", form)
	if err != nil {
		return "", err
	}
	defer res.Body.Close()
	var tok struct {
		AccessToken string `json:"access_token"`
	}
	if err := json.NewDecoder(res.Body).Decode(&tok); err != nil || tok.AccessToken == "" {
		return "", fmt.Errorf("sandbox token exchange: HTTP %d %v", res.StatusCode, err)
	}
	return tok.AccessToken, nil
}

// directClient calls the sandbox broker directly (HTTP/1.1 keep-alive).
var directClient = &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 128}}

// directChain is GET /v2/option/chain made directly to the sandbox: the
// body is read in full (decoding is left out, so the gateway's figure
// includes its decoding and conversion as overhead).
func (e *env) directChain(ctx context.Context, expiry string) ([]byte, error) {
	q := url.Values{"instrument_key": {underlying}, "expiry_date": {expiry}}
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, e.sbURL+"/upstox/v2/option/chain?"+q.Encode(), nil)
	req.Header.Set("Authorization", "Bearer "+e.direct)
	req.Header.Set("Accept", "application/json")
	res, err := directClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err == nil && res.StatusCode != http.StatusOK {
		err = fmt.Errorf("direct option chain: HTTP %d %s", res.StatusCode, b)
	}
	return b, err
}

// sandboxConfig sets the sandbox's feed interval and rate limiting.
func (e *env) sandboxConfig(interval time.Duration, rateLimits bool) error {
	return postJSON(e.sbURL+"/sandbox/config", map[string]any{"feed_interval_ms": interval.Milliseconds(), "rate_limits": rateLimits}, nil)
}

// feedSocketPath is the Upstox feed socket's path; the sandbox records a
// socket's call when the socket closes, so a revocation's diff of calls
// includes the socket it closed, which is not a call made after it.
const feedSocketPath = "/v3/feed/market-data-feed/ws"

// sandboxCalls counts the sandbox's recorded calls of account (path "" =
// any path but the feed socket), in total and by "path status".
func (e *env) sandboxCalls(account, path string) (total int64, by map[string]int64, err error) {
	var st sandbox.Stats
	if err := getJSON(e.sbURL+"/sandbox/stats", &st); err != nil {
		return 0, nil, err
	}
	by = map[string]int64{}
	for _, c := range st.Calls {
		if c.Account != account || (path != "" && c.Path != path) || (path == "" && c.Path == feedSocketPath) {
			continue
		}
		total += c.Count
		by[fmt.Sprintf("%s %d", c.Path, c.Status)] += c.Count
	}
	return total, by, nil
}

// server is a started (or targeted) server.
type server struct {
	serverInfo
	kind string
	stop func()
}

// start starts a server of spec (the targeted gateway with -url).
func (e *env) start(spec serverSpec) (*server, error) {
	if spec.Kind == kindGateway && e.cfg.URL != "" {
		u, err := url.Parse(e.cfg.URL)
		if err != nil {
			return nil, err
		}
		return &server{serverInfo: serverInfo{Addr: u.Host, PID: e.cfg.ServerPID}, kind: spec.Kind, stop: func() {}}, nil
	}
	spec.SandboxURL = e.sbURL
	start := startLocal
	if e.cfg.Server == "child" {
		start = startChild
	}
	info, stop, err := start(spec)
	if err != nil {
		return nil, err
	}
	return &server{serverInfo: info, kind: spec.Kind, stop: stop}, nil
}

// stats reads the server's process figures (gc forces a collection and
// returns freed memory to the OS first). Without a debug endpoint only
// CPU and RSS are known, and only with a pid.
func (s *server) stats(gc bool) procStats {
	if s.Debug != "" {
		var st procStats
		u := s.Debug + "/feedload/stats"
		if gc {
			u += "?gc=1"
		}
		if err := getJSON(u, &st); err == nil {
			return st
		}
	}
	st := procStats{PID: s.PID, Goroutines: -1}
	if s.PID > 0 {
		st.RSS, _ = procRSS(s.PID)
		st.CPUNanos, _ = procCPU(s.PID)
	}
	return st
}

// scope says what the server's CPU and memory figures cover.
func (s *server) scope() string {
	switch {
	case s.PID == 0:
		return "unknown (no -server-pid)"
	case s.PID == os.Getpid():
		return "whole process: load generator + sandbox + server (-server inproc)"
	default:
		return "server process only"
	}
}

// users creates n users on the gateway and returns their keys.
func (e *env) users(ctx context.Context, s *server, n int) ([]userKey, error) {
	prefix := fmt.Sprintf("%s-%d", e.run, e.userSeq.Add(1))
	if s.Debug != "" {
		var keys []userKey
		err := postJSON(fmt.Sprintf("%s/feedload/users?prefix=%s&n=%d", s.Debug, prefix, n), nil, &keys)
		return keys, err
	}
	st, err := gateway.OpenStore(ctx, e.cfg.DataDir, nil)
	if err != nil {
		return nil, err
	}
	defer st.Close()
	keys := make([]userKey, 0, n)
	for i := range n {
		name := fmt.Sprintf("%s-%d", prefix, i)
		_, key, err := auth.CreateUser(ctx, st, name, false, time.Now())
		if err != nil {
			return nil, err
		}
		keys = append(keys, userKey{Name: name, Key: key.Reveal()})
	}
	return keys, nil
}

// loginAll logs every user in to the sandbox's Upstox as the account of
// its own name.
func (e *env) loginAll(ctx context.Context, s *server, users []userKey) error {
	cc, err := dial(s.Addr)
	if err != nil {
		return err
	}
	defer cc.Close()
	return parallel(len(users), 8, func(i int) error {
		ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		return login(ctx, cc, users[i].Key, users[i].Name)
	})
}

// machine describes the machine for the report.
func (e *env) machine() Machine {
	m := Machine{NumCPU: runtime.NumCPU(), GoVersion: runtime.Version(), Server: e.cfg.Server}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for line := range strings.SplitSeq(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "model name"); ok {
				m.CPUModel = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(v), ":"))
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		m.LoadAvg = strings.Join(strings.Fields(string(b))[:3], " ")
	}
	if e.cfg.URL != "" {
		m.Server = "external " + e.cfg.URL
	}
	return m
}
