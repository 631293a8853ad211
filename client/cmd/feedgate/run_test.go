package main

import (
	"bytes"
	"context"
	"math"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/feedgate/feedgate/client"
	feedgatev1 "github.com/feedgate/feedgate/gen/go/feedgate/v1"
	"github.com/feedgate/feedgate/server/gateway/gatewaytest"
	"github.com/feedgate/feedgate/server/sandbox"
)

const nifty = "NSE_INDEX|Nifty 50"

// syncBuffer is a bytes.Buffer safe to read while a command writes it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// feedgateCmd runs the command line with env as the environment.
func feedgateCmd(t *testing.T, env map[string]string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errOut syncBuffer
	code = runEnv(context.Background(), args, func(k string) string { return env[k] }, &out, &errOut)
	return code, out.String(), errOut.String()
}

type fixture struct {
	e   *gatewaytest.Env
	key string
	env map[string]string
}

func newFixture(t *testing.T, user string) fixture {
	e := gatewaytest.Start(t, gatewaytest.Options{})
	key := e.NewUser(user, false)
	return fixture{e: e, key: key, env: map[string]string{"FEEDGATE_URL": e.URL, "FEEDGATE_API_KEY": key}}
}

func (f fixture) login(t *testing.T, account string) {
	t.Helper()
	c := client.New(f.e.URL, f.key)
	f.e.Login(gatewaytest.Clients{MarketData: c.MarketData, Connection: c.Connection, Admin: c.Admin}, feedgatev1.Broker_BROKER_UPSTOX, account)
}

func noKey(t *testing.T, key string, outs ...string) {
	t.Helper()
	for _, o := range outs {
		if strings.Contains(o, key) {
			t.Fatalf("the API key was printed:\n%s", o)
		}
	}
}

func TestUsage(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		args []string
		want int
	}{
		{nil, exitUsage},
		{[]string{"help"}, exitOK},
		{[]string{"--help"}, exitOK},
		{[]string{"frobnicate"}, exitUsage},
		{[]string{"status", "--nope"}, exitUsage},
		{[]string{"status"}, exitUsage}, // no key
		{[]string{"--key", "k", "chain", "--broker", "kite"}, exitUsage},
		{[]string{"--key", "k", "chain", "--broker", "upstox"}, exitUsage},
		{[]string{"--key", "k", "quotes", "--broker", "upstox"}, exitUsage},
		{[]string{"--key", "k", "stream", "NSE_INDEX|Nifty 50"}, exitUsage},
		{[]string{"--key", "k", "stream", "--broker", "upstox", "--mode", "turbo", "X"}, exitUsage},
		{[]string{"--key", "k", "login", "--broker", "upstox"}, exitUsage},
		{[]string{"--key", "k", "--url", "localhost:8080", "status"}, exitUsage},
	} {
		code, _, _ := feedgateCmd(t, nil, c.args...)
		if code != c.want {
			t.Errorf("feedgate %q: exit %d, want %d", c.args, code, c.want)
		}
	}
}

func TestParseMixesFlagsAndArguments(t *testing.T) {
	t.Parallel()
	var b brokerValue
	var c cli
	fs := newFlagSet("x", &bytes.Buffer{})
	c.globalFlags(fs)
	brokerFlagVar(fs, &b)
	pos, err := parse(fs, []string{"A", "--broker", "fyers", "B", "--grpc", "--", "-C"})
	if err != nil || strings.Join(pos, ",") != "A,B,-C" || b.b != feedgatev1.Broker_BROKER_FYERS || !c.grpc {
		t.Errorf("pos %q, broker %v, grpc %v, err %v", pos, b.b, c.grpc, err)
	}
}

func TestStatusAndKeyRejected(t *testing.T) {
	t.Parallel()
	f := newFixture(t, "cli-status")
	code, out, errOut := feedgateCmd(t, f.env, "status")
	if code != exitOK || !strings.Contains(out, "BROKER") || !strings.Contains(out, "NOT_CONNECTED") || !strings.Contains(out, "Fyers") {
		t.Fatalf("status: exit %d\n%s%s", code, out, errOut)
	}
	// Demo mode: the sandbox serves both brokers, and status says so on
	// each line.
	if n := strings.Count(out, "SANDBOX (synthetic data)"); n != 2 {
		t.Errorf("status in demo mode marks %d brokers as the sandbox's, want 2:\n%s", n, out)
	}
	f.login(t, "cli-status")
	// Global flags after the command, over gRPC, the key from the flag.
	code, out, errOut = feedgateCmd(t, nil, "status", "--url", f.e.URL, "--key", f.key, "--grpc", "--broker", "upstox")
	if code != exitOK || !strings.Contains(out, "Upstox") || !strings.Contains(out, "CONNECTED") || strings.Contains(out, "Fyers") {
		t.Fatalf("status after login: exit %d\n%s%s", code, out, errOut)
	}
	noKey(t, f.key, out, errOut)

	for _, grpc := range []string{"--grpc=false", "--grpc"} {
		code, out, errOut = feedgateCmd(t, map[string]string{"FEEDGATE_URL": f.e.URL, "FEEDGATE_API_KEY": f.key + "x"}, grpc, "status")
		if code != exitKeyRejected || !strings.Contains(errOut, "unauthenticated") || !strings.Contains(errOut, "API key") {
			t.Errorf("wrong key %s: exit %d\n%s%s", grpc, code, out, errOut)
		}
		noKey(t, f.key, out, errOut)
	}
}

func TestLoginURLAndLogin(t *testing.T) {
	t.Parallel()
	f := newFixture(t, "cli-login")
	code, out, errOut := feedgateCmd(t, f.env, "login-url", "--broker", "upstox")
	if code != exitOK {
		t.Fatalf("login-url: exit %d\n%s%s", code, out, errOut)
	}
	var loginURL, state string
	for _, line := range strings.Split(out, "\n") {
		if v, ok := strings.CutPrefix(line, "url:"); ok {
			loginURL = strings.TrimSpace(v)
		}
		if v, ok := strings.CutPrefix(line, "state:"); ok {
			state = strings.TrimSpace(v)
		}
	}
	if loginURL == "" || state == "" || !strings.Contains(loginURL, state) {
		t.Fatalf("login-url printed:\n%s", out)
	}
	redirect := gatewaytest.Approve(t, loginURL, "cli-login")
	// The broker is taken from the callback's path.
	code, out, errOut = feedgateCmd(t, f.env, "login", "--redirect", redirect.String())
	if code != exitOK || !strings.Contains(out, "Connected to Upstox") {
		t.Fatalf("login --redirect: exit %d\n%s%s", code, out, errOut)
	}
	// The state is single-use: the same redirect again is refused plainly.
	code, _, errOut = feedgateCmd(t, f.env, "login", "--broker", "upstox", "--code", redirect.Query().Get("code"), "--state", state)
	if code != exitError || !strings.Contains(errOut, "invalid_argument") {
		t.Errorf("reused state: exit %d\n%s", code, errOut)
	}
	// Fyers redirects with code=200 and the auth code in auth_code.
	code, out, errOut = feedgateCmd(t, f.env, "login-url", "--broker", "fyers")
	if code != exitOK {
		t.Fatalf("login-url fyers: exit %d\n%s%s", code, out, errOut)
	}
	for _, line := range strings.Split(out, "\n") {
		if v, ok := strings.CutPrefix(line, "url:"); ok {
			loginURL = strings.TrimSpace(v)
		}
	}
	redirect = gatewaytest.Approve(t, loginURL, "cli-login")
	code, out, errOut = feedgateCmd(t, f.env, "login", "--redirect", redirect.String())
	if code != exitOK || !strings.Contains(out, "Connected to Fyers") {
		t.Fatalf("fyers login --redirect: exit %d\n%s%s", code, out, errOut)
	}
}

func TestChainMarksATM(t *testing.T) {
	t.Parallel()
	f := newFixture(t, "cli-chain")
	f.login(t, "cli-chain")
	expiry := f.e.Sandbox().Expiries(nifty)[0]
	code, out, errOut := feedgateCmd(t, f.env, "chain", "--broker", "upstox", "--underlying", nifty, "--expiry", expiry, "--strikes", "5")
	if code != exitOK {
		t.Fatalf("chain: exit %d\n%s%s", code, out, errOut)
	}
	t.Logf("\n%s", out)
	lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
	if len(lines) != 2+11 || !strings.Contains(lines[1], "STRIKE") || !strings.Contains(lines[1], "CALL OI") {
		t.Fatalf("want a title, a header and 11 strikes:\n%s", out)
	}
	var atmLines []string
	for _, l := range lines[2:] {
		if strings.Contains(l, atmMarker) {
			atmLines = append(atmLines, l)
		}
	}
	if len(atmLines) != 1 || atmLines[0] != lines[2+5] {
		t.Fatalf("want the middle strike marked ATM:\n%s", out)
	}
	// The marked strike is the one nearest the spot.
	spot, _ := strconv.ParseFloat(strings.Fields(out[strings.Index(out, "spot ")+5:])[0], 64)
	strike := func(l string) float64 {
		v, _ := strconv.ParseFloat(strings.Fields(strings.Split(l, "|")[1])[0], 64)
		return v
	}
	atm := strike(atmLines[0])
	for _, l := range lines[2:] {
		if math.Abs(strike(l)-spot) < math.Abs(atm-spot) {
			t.Errorf("strike %v is nearer the spot %v than the marked %v", strike(l), spot, atm)
		}
	}

	code, _, errOut = feedgateCmd(t, f.env, "chain", "--broker", "upstox", "--underlying", nifty, "--expiry", "2020-01-01")
	if code != exitError || !strings.Contains(errOut, "invalid_argument") || !strings.Contains(errOut, "expiry_date") {
		t.Errorf("bad expiry: exit %d\n%s", code, errOut)
	}
}

func TestQuotes(t *testing.T) {
	t.Parallel()
	f := newFixture(t, "cli-quotes")
	f.login(t, "cli-quotes")
	code, out, errOut := feedgateCmd(t, f.env, "--grpc", "quotes", "--broker", "upstox", nifty, "NSE_INDEX|Nifty Bank")
	if code != exitOK || !strings.Contains(out, nifty) || !strings.Contains(out, "Nifty Bank") || !strings.Contains(out, "LTP") {
		t.Fatalf("quotes: exit %d\n%s%s", code, out, errOut)
	}
}

func TestStreamThenAuthRequired(t *testing.T) {
	t.Parallel()
	f := newFixture(t, "cli-stream")
	f.login(t, "cli-stream")
	keys := f.e.Sandbox().OptionKeys(sandbox.Upstox, nifty, "", 2)
	for _, proto := range []string{"--grpc=false", "--grpc"} {
		var out, errOut syncBuffer
		done := make(chan int, 1)
		go func() {
			args := append([]string{proto, "stream", "--broker", "upstox", "--mode", "option_greeks"}, keys...)
			done <- runEnv(context.Background(), args, func(k string) string { return f.env[k] }, &out, &errOut)
		}()
		deadline := time.Now().Add(10 * time.Second)
		for strings.Count(out.String(), "ltp=") < 3 && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
		if !strings.Contains(out.String(), keys[0]) || !strings.Contains(out.String(), "Δ=") {
			t.Fatalf("%s: no ticks within 10s:\n%s%s", proto, out.String(), errOut.String())
		}
		f.e.Revoke("upstox", "cli-stream")
		select {
		case code := <-done:
			if code != exitAuthRequired {
				t.Errorf("%s: exit %d, want %d", proto, code, exitAuthRequired)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("%s: stream went on after the revoke", proto)
		}
		msg := errOut.String()
		t.Logf("%s: last lines of stdout:\n%s\nstderr:\n%s", proto, tail(out.String(), 2), msg)
		for _, want := range []string{"your Upstox connection needs a new login", "TOKEN_REVOKED", "http://", "feedgate login --broker upstox --redirect"} {
			if !strings.Contains(msg, want) {
				t.Errorf("%s: the message lacks %q:\n%s", proto, want, msg)
			}
		}
		noKey(t, f.key, out.String(), msg)
		// Unary calls say the same, with the same exit code.
		code, _, errOut2 := feedgateCmd(t, f.env, proto, "quotes", "--broker", "upstox", nifty)
		if code != exitAuthRequired || !strings.Contains(errOut2, "needs a new login") {
			t.Errorf("%s: quotes after revoke: exit %d\n%s", proto, code, errOut2)
		}
		f.login(t, "cli-stream")
	}
}

func TestStreamInterrupted(t *testing.T) {
	t.Parallel()
	f := newFixture(t, "cli-int")
	f.login(t, "cli-int")
	ctx, cancel := context.WithCancel(context.Background())
	var out, errOut syncBuffer
	done := make(chan int, 1)
	go func() {
		done <- runEnv(ctx, []string{"stream", "--broker", "upstox", nifty}, func(k string) string { return f.env[k] }, &out, &errOut)
	}()
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(out.String(), "ltp=") && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	select {
	case code := <-done:
		if code != exitOK {
			t.Errorf("exit %d after an interrupt\n%s", code, errOut.String())
		}
	case <-time.After(5 * time.Second):
		t.Fatal("stream did not stop on interrupt")
	}
}

// tail returns the last n lines of s.
func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

func TestGatewayDown(t *testing.T) {
	t.Parallel()
	// Port 1 on loopback refuses connections.
	code, out, errOut := feedgateCmd(t, map[string]string{"FEEDGATE_URL": "http://127.0.0.1:1", "FEEDGATE_API_KEY": "fgk_secret"}, "status")
	if code != exitUnavailable || !strings.Contains(errOut, "unavailable") {
		t.Errorf("exit %d\n%s%s", code, out, errOut)
	}
	noKey(t, "fgk_secret", out, errOut)
}
