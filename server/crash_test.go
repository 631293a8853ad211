package main

import (
	"bufio"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"

	feedgatev1 "github.com/feedgate/feedgate/gen/go/feedgate/v1"
	"github.com/feedgate/feedgate/gen/go/feedgate/v1/feedgatev1connect"
	"github.com/feedgate/feedgate/server/gateway/gatewaytest"

	_ "modernc.org/sqlite"
)

// buildBinary builds the server into a temporary directory once per test.
func buildBinary(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "feedgate")
	cmd := exec.Command("go", "build", "-o", bin, ".")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// proc is a running feedgate process.
type proc struct {
	cmd        *exec.Cmd
	url        string
	sandboxURL string
	adminKey   string
	stderr     *strings.Builder
	mu         *sync.Mutex
	exited     chan error
}

// startProc runs "feedgate serve" on dir with loopback ports chosen by the
// kernel and waits until it serves; prefix, if any, wraps the command
// (e.g. a shell that lowers a resource limit first).
func startProc(t *testing.T, bin, dir string, prefix ...string) (*proc, error) {
	t.Helper()
	args := append(prefix, bin, "serve", "--addr", "127.0.0.1:0", "--data-dir", dir, "--sandbox-addr", "127.0.0.1:0",
		"--log-format", "json", "--sandbox-feed-interval", "100ms")
	cmd := exec.Command(args[0], args[1:]...)
	stdout, _ := cmd.StdoutPipe()
	stderr, _ := cmd.StderrPipe()
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p := &proc{cmd: cmd, stderr: &strings.Builder{}, mu: &sync.Mutex{}, exited: make(chan error, 1)}
	ready := make(chan struct{})
	var once sync.Once
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if s := strings.TrimSpace(sc.Text()); strings.HasPrefix(s, "fgk_") {
				p.mu.Lock()
				p.adminKey = s
				p.mu.Unlock()
			}
		}
	}()
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			p.mu.Lock()
			p.stderr.WriteString(line + "\n")
			var rec map[string]any
			if json.Unmarshal([]byte(line), &rec) == nil {
				switch rec["msg"] {
				case "sandbox broker serving (no broker account needed)":
					p.sandboxURL, _ = rec["url"].(string)
				case "feedgate serving":
					a, _ := rec["addr"].(string)
					p.url = "http://" + a
					once.Do(func() { close(ready) })
				}
			}
			p.mu.Unlock()
		}
		p.exited <- cmd.Wait()
	}()
	select {
	case <-ready:
		t.Cleanup(func() { _ = p.cmd.Process.Kill() })
		return p, nil
	case err := <-p.exited:
		p.mu.Lock()
		defer p.mu.Unlock()
		return nil, fmt.Errorf("exited before serving (%v): %s", err, p.stderr.String())
	case <-time.After(30 * time.Second):
		_ = cmd.Process.Kill()
		return nil, errors.New("not serving after 30 s")
	}
}

// kill9 kills the process with SIGKILL and waits for it.
func (p *proc) kill9(t *testing.T) {
	if err := p.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-p.exited
}

type clients struct {
	md    feedgatev1connect.MarketDataServiceClient
	conn  feedgatev1connect.ConnectionServiceClient
	admin feedgatev1connect.AdminServiceClient
}

func (p *proc) clients(key string) clients {
	hc := gatewaytest.H2C()
	opt := connect.WithInterceptors(connect.UnaryInterceptorFunc(func(next connect.UnaryFunc) connect.UnaryFunc {
		return func(ctx context.Context, r connect.AnyRequest) (connect.AnyResponse, error) {
			r.Header().Set("Authorization", "Bearer "+key)
			return next(ctx, r)
		}
	}))
	return clients{feedgatev1connect.NewMarketDataServiceClient(hc, p.url, opt),
		feedgatev1connect.NewConnectionServiceClient(hc, p.url, opt),
		feedgatev1connect.NewAdminServiceClient(hc, p.url, opt)}
}

var noFollow = &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }, Timeout: 10 * time.Second}

// login connects the user to b as a sandbox account through the real
// OAuth redirect chain and returns the connection CompleteLogin acknowledged.
func (c clients) login(ctx context.Context, b feedgatev1.Broker, account string) (*feedgatev1.Connection, error) {
	lu, err := c.conn.GetLoginURL(ctx, connect.NewRequest(&feedgatev1.GetLoginURLRequest{Broker: b}))
	if err != nil {
		return nil, err
	}
	res, err := noFollow.Get(lu.Msg.Url + "&account=" + url.QueryEscape(account))
	if err != nil {
		return nil, err
	}
	res.Body.Close()
	loc, err := url.Parse(res.Header.Get("Location"))
	if err != nil {
		return nil, err
	}
	r, err := c.conn.CompleteLogin(ctx, connect.NewRequest(&feedgatev1.CompleteLoginRequest{
		Broker: b, Code: gatewaytest.BrokerCode(b, loc), State: loc.Query().Get("state")}))
	if err != nil {
		return nil, err
	}
	return r.Msg.Connection, nil
}

// outcome is a connection's row as an operation leaves it.
type outcome struct {
	state  string // "connected" or "disconnected"
	reason string
	gen    int64
}

// ledger records, per (user, broker), the last change the API acknowledged
// and the change in flight when the process died.
type ledger struct {
	mu       sync.Mutex
	acked    map[string]outcome
	inflight map[string][]outcome // the possible results of the op in flight
}

func rowKey(user, broker string) string { return user + "/" + broker }

// TestKill9MidWriteLosesNothing runs the real binary, drives logins,
// revocations, logouts, user creation (by the CLI, another process) and
// admin validation sweeps concurrently, kills the server with SIGKILL in
// the middle, and checks the database: integrity_check ok, every change
// the API acknowledged is there, every row is either its last acknowledged
// state or the outcome of the one operation in flight, every row's last
// event matches it, and its generation counts its logins. Then the server
// restarts on the same directory and serves the same states. Two rounds.
func TestKill9MidWriteLosesNothing(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and kills the binary")
	}
	bin := buildBinary(t)
	dir := t.TempDir()
	led := &ledger{acked: map[string]outcome{}, inflight: map[string][]outcome{}}
	users := map[string]string{} // name -> key
	var adminKey string
	for round := range 2 {
		p, err := startProc(t, bin, dir)
		if err != nil {
			t.Fatal(err)
		}
		if round == 0 {
			adminKey = p.adminKey
			if adminKey == "" {
				t.Fatal("no admin key printed on the first start")
			}
		}
		if round > 0 {
			verifyServes(t, p, users, led)
		}
		ctx, cancel := context.WithCancel(context.Background())
		var wg sync.WaitGroup
		// New users through the CLI while the server writes too.
		for i := range 3 {
			name := fmt.Sprintf("r%d-u%d", round, i)
			out, err := exec.Command(bin, "users", "create", "--name", name, "--data-dir", dir).Output()
			if err != nil {
				t.Fatalf("users create: %v", err)
			}
			users[name] = strings.TrimSpace(string(out))
		}
		for name, key := range users {
			wg.Add(1)
			go func() {
				defer wg.Done()
				drive(ctx, p, p.clients(key), p.sandboxURL, name, led)
			}()
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			a := p.clients(adminKey)
			for ctx.Err() == nil {
				_, _ = a.admin.ValidateAllTokens(ctx, connect.NewRequest(&feedgatev1.ValidateAllTokensRequest{}))
			}
		}()
		time.Sleep(1500 * time.Millisecond)
		p.kill9(t)
		cancel()
		wg.Wait()
		checkDatabase(t, dir, users, led)
	}
	p, err := startProc(t, bin, dir)
	if err != nil {
		t.Fatal(err)
	}
	verifyServes(t, p, users, led)
}

// drive loops one user through login, revocation and logout on both
// brokers, recording in-flight and acknowledged outcomes, until an RPC
// fails (the process died) or ctx ends.
func drive(ctx context.Context, p *proc, c clients, sandboxURL, account string, led *ledger) {
	brokers := map[string]feedgatev1.Broker{"upstox": feedgatev1.Broker_BROKER_UPSTOX, "fyers": feedgatev1.Broker_BROKER_FYERS}
	for ctx.Err() == nil {
		for name, b := range brokers {
			k := rowKey(account, name)
			led.mu.Lock()
			gen := led.acked[k].gen
			led.inflight[k] = []outcome{{"connected", "", gen + 1}}
			led.mu.Unlock()
			conn, err := c.login(ctx, b, account)
			if err != nil {
				return
			}
			led.mu.Lock()
			led.acked[k] = outcome{"connected", "", conn.TokenGeneration}
			gen = conn.TokenGeneration
			delete(led.inflight, k)
			led.mu.Unlock()

			if name == "upstox" {
				// Revoked at the broker, learnt by the next call.
				led.mu.Lock()
				led.inflight[k] = []outcome{{"disconnected", "token_revoked", gen}}
				led.mu.Unlock()
				body := fmt.Sprintf(`{"broker":"upstox","account":%q}`, account)
				res, err := http.Post(sandboxURL+"/sandbox/revoke", "application/json", strings.NewReader(body))
				if err != nil {
					return
				}
				res.Body.Close()
				_, err = c.md.GetQuotes(ctx, connect.NewRequest(&feedgatev1.GetQuotesRequest{Broker: b, InstrumentKeys: []string{"NSE_INDEX|Nifty 50"}}))
				if connect.CodeOf(err) != connect.CodeUnauthenticated {
					return
				}
			} else {
				led.mu.Lock()
				led.inflight[k] = []outcome{{"disconnected", "logged_out", gen}}
				led.mu.Unlock()
				if _, err := c.conn.Disconnect(ctx, connect.NewRequest(&feedgatev1.DisconnectRequest{Broker: b})); err != nil {
					return
				}
			}
			led.mu.Lock()
			led.acked[k] = led.inflight[k][0]
			delete(led.inflight, k)
			led.mu.Unlock()
		}
	}
}

// checkDatabase opens the killed server's database directly.
func checkDatabase(t *testing.T, dir string, users map[string]string, led *ledger) {
	t.Helper()
	db, err := sql.Open("sqlite", "file:"+filepath.Join(dir, "feedgate.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var ic string
	if err := db.QueryRow(`PRAGMA integrity_check`).Scan(&ic); err != nil || ic != "ok" {
		t.Fatalf("integrity_check: %q, %v", ic, err)
	}
	for name := range users {
		var n int
		if err := db.QueryRow(`SELECT COUNT(*) FROM users WHERE name = ?`, name).Scan(&n); err != nil || n != 1 {
			t.Errorf("user %s created by the CLI is missing: %v", name, err)
		}
	}
	rows, err := db.Query(`SELECT u.name, c.broker, c.state, c.reason, c.token_generation, c.sealed_token IS NOT NULL
		FROM broker_connections c JOIN users u ON u.id = c.user_id`)
	if err != nil {
		t.Fatal(err)
	}
	type row struct {
		user, broker string
		o            outcome
		sealed       bool
	}
	var all []row
	for rows.Next() {
		var r row
		if err := rows.Scan(&r.user, &r.broker, &r.o.state, &r.o.reason, &r.o.gen, &r.sealed); err != nil {
			t.Fatal(err)
		}
		all = append(all, r)
	}
	rows.Close()
	led.mu.Lock()
	defer led.mu.Unlock()
	seen := map[string]bool{}
	inflightHits := 0
	for _, r := range all {
		k := rowKey(r.user, r.broker)
		seen[k] = true
		acked, hasAck := led.acked[k]
		ok := hasAck && r.o == acked
		for _, o := range led.inflight[k] {
			if r.o == o {
				ok = true
				inflightHits++
			}
		}
		if !hasAck && len(led.inflight[k]) == 0 {
			ok = false
		}
		if !ok {
			t.Errorf("%s: row %+v, acknowledged %+v, in flight %+v", k, r.o, acked, led.inflight[k])
		}
		if r.o.state == "connected" && !r.sealed {
			t.Errorf("%s: connected without a sealed token", k)
		}
		var ev outcome
		var logins int64
		err := db.QueryRow(`SELECT e.state, e.reason, e.token_generation FROM connection_events e JOIN users u ON u.id = e.user_id
			WHERE u.name = ? AND e.broker = ? ORDER BY e.id DESC LIMIT 1`, r.user, r.broker).Scan(&ev.state, &ev.reason, &ev.gen)
		if err != nil {
			t.Errorf("%s: no event explains the row: %v", k, err)
			continue
		}
		if ev != r.o {
			t.Errorf("%s: row %+v but its last event says %+v", k, r.o, ev)
		}
		if err := db.QueryRow(`SELECT COUNT(*) FROM connection_events e JOIN users u ON u.id = e.user_id
			WHERE u.name = ? AND e.broker = ? AND e.kind = 'login'`, r.user, r.broker).Scan(&logins); err != nil || logins != r.o.gen {
			t.Errorf("%s: generation %d but %d login events (%v)", k, r.o.gen, logins, err)
		}
	}
	for k := range led.acked {
		if !seen[k] {
			t.Errorf("%s: acknowledged but no row", k)
		}
	}
	var events int
	_ = db.QueryRow(`SELECT COUNT(*) FROM connection_events`).Scan(&events)
	t.Logf("after kill -9: integrity ok, %d connection rows (%d caught mid-change), %d events, %d users", len(all), inflightHits, events, len(users)+1)
}

// verifyServes checks that a restarted server serves every acknowledged
// state and that a connected token still works.
func verifyServes(t *testing.T, p *proc, users map[string]string, led *ledger) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	led.mu.Lock()
	defer led.mu.Unlock()
	for name, key := range users {
		c := p.clients(key)
		res, err := c.conn.GetConnectionStatus(ctx, connect.NewRequest(&feedgatev1.GetConnectionStatusRequest{}))
		if err != nil {
			t.Fatalf("%s after restart: %v", name, err)
		}
		for _, conn := range res.Msg.Connections {
			b := strings.ToLower(strings.TrimPrefix(conn.Broker.String(), "BROKER_"))
			k := rowKey(name, b)
			want, ok := led.acked[k]
			if !ok {
				continue
			}
			got := "disconnected"
			if conn.State == feedgatev1.ConnectionState_CONNECTION_STATE_CONNECTED {
				got = "connected"
			}
			match := got == want.state && conn.TokenGeneration == want.gen
			for _, o := range led.inflight[k] {
				match = match || (got == o.state && conn.TokenGeneration == o.gen)
			}
			if !match {
				t.Errorf("%s after restart: %s gen %d, acknowledged %+v", k, got, conn.TokenGeneration, want)
			}
			if got == "connected" {
				_, err := c.md.GetQuotes(ctx, connect.NewRequest(&feedgatev1.GetQuotesRequest{Broker: conn.Broker, InstrumentKeys: []string{map[string]string{"upstox": "NSE_INDEX|Nifty 50", "fyers": "NSE:NIFTY50-INDEX"}[b]}}))
				revokedInFlight := false
				for _, o := range led.inflight[k] {
					revokedInFlight = revokedInFlight || o.reason == "token_revoked"
				}
				// A token revoked at the broker just before the kill is
				// still CONNECTED here; its first use must find out.
				if err != nil && !(revokedInFlight && connect.CodeOf(err) == connect.CodeUnauthenticated) {
					t.Errorf("%s: the restored token does not work: %v", k, err)
				}
			}
		}
	}
}

// TestStartupOnAFullDisk starts the binary with a file-size limit so small
// that SQLite cannot create the database (a full disk, without root): it
// must exit at once with an error naming the database, not hang or serve.
func TestStartupOnAFullDisk(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	if _, err := exec.LookPath("sh"); err != nil {
		t.Skip("no sh")
	}
	bin := buildBinary(t)
	dir := t.TempDir()
	// ulimit -f counts 512-byte blocks; SIGXFSZ is ignored so writes past
	// the limit fail with EFBIG instead of killing the process.
	_, err := startProc(t, bin, dir, "sh", "-c", `trap "" XFSZ; ulimit -f 8; exec "$0" "$@"`)
	if err == nil {
		t.Fatal("served with a 4 KiB file-size limit")
	}
	msg := err.Error()
	if !strings.Contains(msg, "feedgate.db") || !(strings.Contains(msg, "full") || strings.Contains(msg, "too large") || strings.Contains(msg, "I/O")) {
		t.Errorf("start-up error does not name the problem: %s", msg)
	}
	t.Logf("%s", lastLine(msg))
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}
