package sqlitestore_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/feedgate/feedgate/server/broker"
	"github.com/feedgate/feedgate/server/store"
	"github.com/feedgate/feedgate/server/store/sqlitestore"
	"github.com/feedgate/feedgate/server/store/storetest"

	_ "modernc.org/sqlite"
)

func open(t *testing.T, path string) store.Store {
	t.Helper()
	s, err := sqlitestore.Open(context.Background(), path)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func TestConformance(t *testing.T) {
	t.Parallel()
	storetest.Run(t, open)
}

func TestPragmas(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "feedgate.db")
	open(t, path)
	db, err := sql.Open("sqlite", "file:"+path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var mode string
	if err := db.QueryRow(`PRAGMA journal_mode`).Scan(&mode); err != nil || mode != "wal" {
		t.Errorf("journal_mode = %q, %v; want wal", mode, err)
	}
}

func TestEventsAreAppendOnly(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "feedgate.db")
	open(t, path)
	db, err := sql.Open("sqlite", "file:"+path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec(`INSERT INTO connection_events (user_id, broker, at, kind, state, token_generation) VALUES ('u', 'upstox', 1, 'login', 'connected', 1)`); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(`UPDATE connection_events SET kind = 'x'`); err == nil {
		t.Error("UPDATE of connection_events succeeded")
	}
	if _, err := db.Exec(`DELETE FROM connection_events`); err == nil {
		t.Error("DELETE of connection_events succeeded")
	}
}

func TestNewerSchemaIsRefused(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "feedgate.db")
	s := open(t, path)
	_ = s.Close()
	db, err := sql.Open("sqlite", "file:"+path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(`INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, 'future', 0)`, sqlitestore.SchemaVersion()+1); err != nil {
		t.Fatal(err)
	}
	db.Close()
	_, err = sqlitestore.Open(context.Background(), path)
	if !errors.Is(err, sqlitestore.ErrNewerSchema) {
		t.Fatalf("Open = %v, want ErrNewerSchema", err)
	}
}

// TestMigrationKeepsOneUserPerBrokerAccount builds a schema-1 database in
// which one Upstox account is connected to three users (possible before
// migration 2) and opens it: the most recent login keeps the account, the
// others are disconnected with an event saying why, and from then on the
// store refuses a second user on the account.
func TestMigrationKeepsOneUserPerBrokerAccount(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "feedgate.db")
	db, err := sql.Open("sqlite", "file:"+path)
	if err != nil {
		t.Fatal(err)
	}
	schema1, err := os.ReadFile(filepath.Join("migrations", "0001_init.sql"))
	if err != nil {
		t.Fatal(err)
	}
	stmts := []string{
		string(schema1),
		`CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at INTEGER NOT NULL) STRICT`,
		`INSERT INTO schema_migrations VALUES (1, '0001_init.sql', 0)`,
	}
	for i, u := range []string{"u1", "u2", "u3", "u4"} {
		stmts = append(stmts, fmt.Sprintf(`INSERT INTO users (id, name, key_hash, created_at) VALUES ('%s', '%s', x'%02d', 0)`, u, u, i))
	}
	for i, u := range []string{"u1", "u2", "u3"} {
		stmts = append(stmts, fmt.Sprintf(`INSERT INTO broker_connections (user_id, broker, state, sealed_token, token_generation, broker_user_id, connected_at, updated_at)
			VALUES ('%s', 'upstox', 'connected', x'01', 1, 'SHARED', %d, 0)`, u, 100+i))
	}
	stmts = append(stmts, `INSERT INTO broker_connections (user_id, broker, state, sealed_token, token_generation, broker_user_id, connected_at, updated_at)
		VALUES ('u4', 'upstox', 'connected', x'01', 1, 'OWN', 1, 0)`)
	for _, q := range stmts {
		if _, err := db.Exec(q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	db.Close()

	s := open(t, path)
	ctx := context.Background()
	for u, want := range map[string]store.State{"u1": store.StateDisconnected, "u2": store.StateDisconnected, "u3": store.StateConnected, "u4": store.StateConnected} {
		c, err := s.GetConnection(ctx, u, broker.Upstox)
		if err != nil || c.State != want {
			t.Errorf("%s: %+v, %v; want %s", u, c, err, want)
		}
		if want == store.StateDisconnected {
			if c.SealedToken != nil || c.Reason != store.ReasonLoggedOut || c.LastError == "" {
				t.Errorf("%s: disconnected but %+v", u, c)
			}
			evs, _ := s.Events(ctx, u, broker.Upstox)
			if len(evs) != 1 || evs[0].Kind != "disconnect" || evs[0].State != store.StateDisconnected {
				t.Errorf("%s: events %+v", u, evs)
			}
		}
	}
	_, err = s.UpdateConnection(ctx, "u4", broker.Upstox, func(c *store.Connection) (*store.Event, error) {
		c.BrokerUserID = "SHARED"
		return nil, nil
	})
	if !errors.Is(err, store.ErrAccountInUse) {
		t.Errorf("after the migration, a second user on one account: %v", err)
	}
}

// TestFilesAreOwnerOnly checks the database and its WAL and shared-memory
// files are 0600 when the store creates them, and are made so when an
// older feedgate left them readable by others.
func TestFilesAreOwnerOnly(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path := filepath.Join(dir, "feedgate.db")
	check := func(when string) {
		t.Helper()
		for _, p := range []string{path, path + "-wal", path + "-shm"} {
			st, err := os.Stat(p)
			if err != nil {
				t.Fatalf("%s: %v", when, err)
			}
			if m := st.Mode().Perm(); m != 0o600 {
				t.Errorf("%s: %s has mode %o, want 600", when, filepath.Base(p), m)
			}
		}
	}
	s := open(t, path)
	mustUser(t, s)
	check("created")
	_ = s.Close()
	for _, p := range []string{path, path + "-wal", path + "-shm"} {
		if err := os.Chmod(p, 0o644); err != nil && !errors.Is(err, os.ErrNotExist) {
			t.Fatal(err)
		}
	}
	s = open(t, path)
	mustUser(t, s)
	check("reopened after a chmod 644")
}

var userN int

func mustUser(t *testing.T, s store.Store) {
	t.Helper()
	userN++
	id := fmt.Sprintf("u%d", userN)
	if err := s.CreateUser(context.Background(), store.User{ID: id, Name: id, KeyHash: [32]byte{byte(userN)}}); err != nil {
		t.Fatal(err)
	}
}
