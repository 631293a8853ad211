package main

import (
	"bytes"
	"context"
	"strings"
	"testing"

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
