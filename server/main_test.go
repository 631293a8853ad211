package main

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/feedgate/feedgate/server/auth"
)

func TestUsersCommands(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ctx := context.Background()
	env := func(string) string { return "" }
	cmd := func(args ...string) (string, string, error) {
		var out, errOut bytes.Buffer
		err := run(ctx, append(args, "--data-dir", dir), env, &out, &errOut)
		return out.String(), errOut.String(), err
	}
	out, msgs, err := cmd("users", "create", "--name", "alice")
	if err != nil {
		t.Fatal(err)
	}
	key := strings.TrimSpace(out)
	if !strings.HasPrefix(key, auth.KeyPrefix) || strings.Count(out, "\n") != 1 {
		t.Errorf("stdout must be the key alone, got %q", out)
	}
	if strings.Contains(msgs, key) || !strings.Contains(msgs, "alice") {
		t.Errorf("stderr = %q", msgs)
	}
	if _, _, err := cmd("users", "create", "--name", "root", "--admin"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := cmd("users", "create", "--name", "alice"); err == nil || !strings.Contains(err.Error(), "already exists") {
		t.Errorf("duplicate: %v", err)
	}
	if _, _, err := cmd("users", "create"); err == nil || !strings.Contains(err.Error(), "--name") {
		t.Errorf("missing name: %v", err)
	}
	if _, _, err := cmd("users", "revoke", "--name", "alice"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := cmd("users", "revoke", "--name", "nobody"); err == nil {
		t.Error("revoking an unknown user succeeded")
	}
	list, _, err := cmd("users", "list")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(list, "alice") || !strings.Contains(list, "revoked") || !strings.Contains(list, "admin") || strings.Contains(list, key) {
		t.Errorf("list = %q", list)
	}
	if err := run(ctx, []string{"bogus"}, env, &bytes.Buffer{}, &bytes.Buffer{}); err == nil {
		t.Error("unknown command accepted")
	}
}

// TestSandboxCommandServesTheBrokerAPIs runs "sandbox" on a free port and
// drives its Upstox login dialog and control API over real HTTP.
func TestSandboxCommandServesTheBrokerAPIs(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	ctx, cancel := context.WithCancel(context.Background())
	var errOut syncBuffer
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"sandbox", "--addr", addr, "--data-dir", t.TempDir()}, func(string) string { return "" }, io.Discard, &errOut)
	}()
	base := "http://" + addr
	var res *http.Response
	for i := 0; i < 100; i++ {
		if res, err = http.Get(base + "/sandbox/stats"); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("sandbox never answered: %v", err)
	}
	res.Body.Close()
	noFollow := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	res, err = noFollow.Get(base + "/upstox/v2/login/authorization/dialog?client_id=sandbox-upstox-app&redirect_uri=http://127.0.0.1:1/cb&response_type=code&state=s&account=alice")
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusFound || !strings.Contains(res.Header.Get("Location"), "code=") {
		t.Errorf("login dialog: %d %q", res.StatusCode, res.Header.Get("Location"))
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("sandbox command: %v", err)
	}
	if !strings.Contains(errOut.String(), "FEEDGATE_UPSTOX_BASE_URL="+base+"/upstox") {
		t.Errorf("the command did not print how to use it: %q", errOut.String())
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}
func (s *syncBuffer) String() string { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }
