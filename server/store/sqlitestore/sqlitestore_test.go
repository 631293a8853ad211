package sqlitestore_test

import (
	"context"
	"database/sql"
	"errors"
	"path/filepath"
	"testing"

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
