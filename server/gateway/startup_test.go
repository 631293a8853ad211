package gateway_test

import (
	"bytes"
	"context"
	"database/sql"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/feedgate/feedgate/server/config"
	"github.com/feedgate/feedgate/server/gateway"
	"github.com/feedgate/feedgate/server/seal"
	"github.com/feedgate/feedgate/server/store/sqlitestore"

	_ "modernc.org/sqlite"
)

// startErr builds a gateway on dir and returns its start-up error.
func startErr(t *testing.T, dir string) error {
	t.Helper()
	cfg, err := config.Load("test", []string{"--addr", "127.0.0.1:0", "--data-dir", dir, "--sandbox-addr", "127.0.0.1:0"}, func(string) string { return "" }, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	g, err := gateway.New(context.Background(), cfg, gateway.Options{Stdout: &bytes.Buffer{}})
	if err == nil {
		_ = g.Close()
	}
	return err
}

// initialised returns a data directory a gateway has started in once.
func initialised(t *testing.T) string {
	dir := t.TempDir()
	if err := startErr(t, dir); err != nil {
		t.Fatal(err)
	}
	return dir
}

// TestStartupRefusesBrokenDataDirectories: each way a data directory can be
// unusable is an error at start-up, before serving, whose message names the
// problem (and the file, where there is one).
func TestStartupRefusesBrokenDataDirectories(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name  string
		setup func(t *testing.T) string
		want  []string
	}{
		{"corrupt key file", func(t *testing.T) string {
			dir := initialised(t)
			if err := os.WriteFile(filepath.Join(dir, seal.KeyFileName), []byte("not base64 at all\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			return dir
		}, []string{"token key file", seal.KeyFileName, "corrupt"}},
		{"truncated key file", func(t *testing.T) string {
			dir := initialised(t)
			if err := os.WriteFile(filepath.Join(dir, seal.KeyFileName), []byte("AAAA\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			return dir
		}, []string{"token key file", "corrupt"}},
		{"key file readable by others", func(t *testing.T) string {
			dir := initialised(t)
			if err := os.Chmod(filepath.Join(dir, seal.KeyFileName), 0o644); err != nil {
				t.Fatal(err)
			}
			return dir
		}, []string{seal.KeyFileName, "chmod 600"}},
		{"data directory is a file", func(t *testing.T) string {
			f := filepath.Join(t.TempDir(), "file")
			if err := os.WriteFile(f, nil, 0o600); err != nil {
				t.Fatal(err)
			}
			return filepath.Join(f, "data")
		}, []string{"data directory"}},
		{"database from a newer schema", func(t *testing.T) string {
			dir := initialised(t)
			db, err := sql.Open("sqlite", "file:"+filepath.Join(dir, gateway.DBFile))
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			if _, err := db.Exec(`INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, 'from the future', 0)`, sqlitestore.SchemaVersion()+1); err != nil {
				t.Fatal(err)
			}
			return dir
		}, []string{"newer", gateway.DBFile}},
		{"database file is garbage", func(t *testing.T) string {
			dir := t.TempDir()
			if err := os.WriteFile(filepath.Join(dir, gateway.DBFile), bytes.Repeat([]byte("garbage!"), 1024), 0o600); err != nil {
				t.Fatal(err)
			}
			return dir
		}, []string{gateway.DBFile, "not a database"}},
		{"database path is a directory", func(t *testing.T) string {
			dir := t.TempDir()
			if err := os.Mkdir(filepath.Join(dir, gateway.DBFile), 0o700); err != nil {
				t.Fatal(err)
			}
			return dir
		}, []string{gateway.DBFile}},
		{"read-only data directory", func(t *testing.T) string {
			if os.Geteuid() == 0 {
				t.Skip("root ignores directory permissions")
			}
			dir := t.TempDir()
			if err := os.Chmod(dir, 0o500); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = os.Chmod(dir, 0o700) })
			return dir
		}, []string{gateway.DBFile}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			err := startErr(t, tc.setup(t))
			if err == nil {
				t.Fatal("started")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not name %q", err, w)
				}
			}
			t.Logf("%v", err)
		})
	}
}

// TestDataDirectoryAndDatabaseAreOwnerOnly starts a gateway on a data
// directory that other users can read (mode 755, as mkdir leaves it under
// the usual umask): the gateway makes it 700, creates feedgate.db and its
// WAL files 600, and says so in its log.
func TestDataDirectoryAndDatabaseAreOwnerOnly(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "data")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	cfg, err := config.Load("test", []string{"--addr", "127.0.0.1:0", "--data-dir", dir, "--sandbox-addr", "127.0.0.1:0"}, func(string) string { return "" }, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	g, err := gateway.New(context.Background(), cfg, gateway.Options{Stdout: io.Discard, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	st, err := os.Stat(dir)
	if err != nil || st.Mode().Perm() != 0o700 {
		t.Errorf("data directory mode %v, %v; want 700", st.Mode().Perm(), err)
	}
	for _, name := range []string{gateway.DBFile, gateway.DBFile + "-wal", gateway.DBFile + "-shm", seal.KeyFileName} {
		st, err := os.Stat(filepath.Join(dir, name))
		if err != nil || st.Mode().Perm() != 0o600 {
			t.Errorf("%s: mode %v, %v; want 600", name, st.Mode().Perm(), err)
		}
	}
	if !strings.Contains(logs.String(), "made it owner-only") {
		t.Errorf("the log does not say the directory was changed:\n%s", logs.String())
	}
}
