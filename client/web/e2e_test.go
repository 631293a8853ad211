package web_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/feedgate/feedgate/server/auth"
	"github.com/feedgate/feedgate/server/config"
	"github.com/feedgate/feedgate/server/gateway"
)

// chromiumPath is Debian's Chromium (apt-get install chromium); the test
// never downloads a browser.
const chromiumPath = "/usr/bin/chromium"

// TestE2E drives the dashboard in a real headless Chromium (e2e/run.mjs,
// with playwright-core) against a real in-process gateway and its sandbox
// broker: sign-in, the broker OAuth redirect chain, the option chain, live
// ticks, a revocation at the broker, the reconnect prompt without any retry
// loop, the one-click reconnect, and the admin's token-health page.
// Screenshots go to out/e2e at the repository root.
//
// It skips when Chromium, node or node_modules are missing, except with
// CI=true, where it fails instead, so CI cannot silently skip it.
func TestE2E(t *testing.T) {
	requireTool(t, fileExists(chromiumPath), "Chromium not at "+chromiumPath+" (apt-get install -y chromium; bash .ci/test installs it)")
	requireTool(t, fileExists(filepath.Join("node_modules", "playwright-core", "package.json")), "client/web/node_modules missing (npm ci in client/web; bash .ci/test installs it)")
	node, err := exec.LookPath("node")
	requireTool(t, err == nil, "node not on PATH")
	requireTool(t, fileExists(filepath.Join("dist", "index.html")), "client/web/dist missing (npm run build in client/web)")

	ctx, cancel := context.WithCancel(context.Background())
	logs := &testLog{t: t}
	cfg, err := config.Load("test", []string{
		"--addr", "127.0.0.1:0",
		"--data-dir", t.TempDir(),
		"--sandbox-addr", "127.0.0.1:0",
		// Faster than the defaults, so the heartbeat indicator and the ticks
		// move within the test's few seconds.
		"--heartbeat-interval", "2s",
		"--sandbox-feed-interval", "250ms",
	}, func(string) string { return "" }, io.Discard)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	g, err := gateway.New(ctx, cfg, gateway.Options{Logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelWarn}))})
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- g.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("gateway shutdown: %v", err)
		}
		logs.close()
	})

	base := "http://" + g.Addr()
	sandboxURL := g.SandboxURL()
	if sandboxURL == "" {
		t.Fatal("the gateway runs no sandbox broker")
	}
	waitDashboard(t, base)

	now := time.Now()
	_, userKey, err := auth.CreateUser(ctx, g.Store(), "e2e-user", false, now)
	if err != nil {
		t.Fatal(err)
	}
	_, adminKey, err := auth.CreateUser(ctx, g.Store(), "e2e-admin", true, now)
	if err != nil {
		t.Fatal(err)
	}

	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(root, "out", "e2e")
	if err := os.MkdirAll(out, 0o755); err != nil {
		t.Fatal(err)
	}

	runCtx, stop := context.WithTimeout(ctx, 4*time.Minute)
	defer stop()
	cmd := exec.CommandContext(runCtx, node, filepath.Join("e2e", "run.mjs"))
	cmd.Env = append(os.Environ(),
		"FEEDGATE_URL="+base,
		"FEEDGATE_SANDBOX_URL="+sandboxURL,
		"FEEDGATE_API_KEY="+userKey.Reveal(),
		"FEEDGATE_ADMIN_KEY="+adminKey.Reveal(),
		"FEEDGATE_E2E_OUT="+out,
		"CHROMIUM="+chromiumPath,
	)
	cmd.WaitDelay = 10 * time.Second
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			t.Log(sc.Text())
		}
		_, _ = io.Copy(io.Discard, pr)
	}()
	err = cmd.Run()
	_ = pw.Close()
	wg.Wait()
	if err != nil {
		t.Fatalf("e2e/run.mjs: %v (screenshots, failure.png among them, in %s)", err, out)
	}
}

// requireTool skips the test when ok is false, or fails it under CI=true.
func requireTool(t *testing.T, ok bool, why string) {
	t.Helper()
	if ok {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("end-to-end test cannot run under CI=true: %s", why)
	}
	t.Skipf("skipping the end-to-end test: %s (with CI=true this fails)", why)
}

func fileExists(p string) bool {
	st, err := os.Stat(p)
	return err == nil && !st.IsDir()
}

// waitDashboard waits for the gateway to answer and checks that it serves
// the dashboard at / (web.Handler mounted by the gateway).
func waitDashboard(t *testing.T, base string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := http.Get(base + "/")
		if err == nil {
			body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
			_ = resp.Body.Close()
			// Until the gateway mounts web.Handler() at "/", this skips
			// locally and fails under CI=true.
			requireTool(t, resp.StatusCode == http.StatusOK && strings.Contains(string(body), `id="app"`),
				fmt.Sprintf("GET %s/ answered %d, not the dashboard: the gateway must mount web.Handler() at /", base, resp.StatusCode))
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("gateway at %s not answering: %v", base, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// testLog writes the gateway's log lines to the test log until close.
type testLog struct {
	mu     sync.Mutex
	t      *testing.T
	closed bool
}

func (l *testLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.closed {
		l.t.Log("gateway: " + strings.TrimRight(string(p), "\n"))
	}
	return len(p), nil
}

func (l *testLog) close() {
	l.mu.Lock()
	l.closed = true
	l.mu.Unlock()
}
