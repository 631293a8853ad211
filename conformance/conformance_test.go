package conformance

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/feedgate/feedgate/server/sandbox"
)

// required are the checks each script must report, passed. A script that
// stops early or forgets a check fails the test instead of passing quietly.
var required = map[string][]string{
	"upstox.mjs": {},
	"fyers.mjs":  {},
}

// TestSDKs runs each conformance script (upstox.mjs, fyers.mjs) with node
// against a fresh sandbox and turns every check it reports into a subtest.
// It installs the pinned SDKs from the lockfile (npm ci) when node_modules
// is missing or older than it. It skips when node or npm is missing, except
// under CI=true, where it fails.
func TestSDKs(t *testing.T) {
	node := requireTool(t, "node")
	installSDKs(t)
	for script, want := range required {
		t.Run(strings.TrimSuffix(script, ".mjs"), func(t *testing.T) {
			runScript(t, node, script, want)
		})
	}
}

func requireTool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s is not on PATH: the SDK conformance test cannot run (it must under CI=true)", name)
		}
		t.Skipf("%s is not on PATH: skipping the SDK conformance test", name)
	}
	return p
}

// installSDKs runs npm ci when node_modules does not match the lockfile.
func installSDKs(t *testing.T) {
	t.Helper()
	lock, err := os.Stat("package-lock.json")
	if err != nil {
		t.Fatal(err)
	}
	if have, err := os.Stat(filepath.Join("node_modules", ".package-lock.json")); err == nil && !have.ModTime().Before(lock.ModTime()) {
		return
	}
	npm := requireTool(t, "npm")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, npm, "ci", "--no-audit", "--no-fund", "--loglevel=error")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("npm ci (the pinned SDKs): %v\n%s", err, out)
	}
}

// result is one line a script prints for a check.
type result struct {
	Check  string `json:"check"`
	OK     bool   `json:"ok"`
	Detail string `json:"detail"`
}

func runScript(t *testing.T, node, script string, want []string) {
	sb, err := sandbox.New(sandbox.Config{FeedInterval: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(sb.Handler())
	t.Cleanup(func() {
		srv.CloseClientConnections()
		srv.Close()
		_ = sb.Close()
	})

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, script)
	cmd.Env = append(os.Environ(), "SANDBOX_URL="+srv.URL)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var results []result
	sc := bufio.NewScanner(out)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		var r result
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil || r.Check == "" {
			t.Logf("%s: %s", script, sc.Text())
			continue
		}
		results = append(results, r)
	}
	werr := cmd.Wait()
	seen := map[string]bool{}
	for _, r := range results {
		seen[r.Check] = true
		t.Run(r.Check, func(t *testing.T) {
			if !r.OK {
				t.Error(r.Detail)
			} else if r.Detail != "" {
				t.Log(r.Detail)
			}
		})
	}
	for _, name := range want {
		if !seen[name] {
			t.Errorf("%s reported no check %q", script, name)
		}
	}
	if len(results) == 0 || !slices.ContainsFunc(results, func(r result) bool { return r.OK }) {
		t.Errorf("%s passed no check", script)
	}
	if werr != nil {
		t.Errorf("node %s: %v\n%s", script, werr, stderr.String())
	}
}
