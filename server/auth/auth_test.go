package auth_test

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/feedgate/feedgate/server/auth"
	"github.com/feedgate/feedgate/server/store"
	"github.com/feedgate/feedgate/server/store/sqlitestore"
)

func TestCreateAndLookup(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	st, err := sqlitestore.Open(ctx, filepath.Join(t.TempDir(), "db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	u, key, err := auth.CreateUser(ctx, st, "alice", false, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(key.Reveal(), auth.KeyPrefix) || len(key.Reveal()) < 40 {
		t.Errorf("key %q is too weak", key.Reveal())
	}
	stored, _ := st.UserByID(ctx, u.ID)
	if strings.Contains(string(stored.KeyHash[:]), key.Reveal()) || stored.KeyHash != auth.HashKey(key.Reveal()) {
		t.Error("the store must hold the key's hash only")
	}
	got, err := auth.Lookup(ctx, st, key.Reveal())
	if err != nil || got.ID != u.ID {
		t.Errorf("Lookup = %+v, %v", got, err)
	}
	if _, err := auth.Lookup(ctx, st, key.Reveal()+"x"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("wrong key: %v", err)
	}
	if err := st.RevokeUser(ctx, u.ID, time.Now()); err != nil {
		t.Fatal(err)
	}
	if _, err := auth.Lookup(ctx, st, key.Reveal()); !errors.Is(err, auth.ErrRevoked) {
		t.Errorf("revoked key: %v", err)
	}
	for _, bad := range []string{"", "a b", "x;drop", strings.Repeat("a", 65), "tab\t"} {
		if _, _, err := auth.CreateUser(ctx, st, bad, false, time.Now()); !errors.Is(err, auth.ErrBadName) {
			t.Errorf("name %q: %v", bad, err)
		}
	}
	if _, _, err := auth.CreateUser(ctx, st, "alice", false, time.Now()); !errors.Is(err, store.ErrConflict) {
		t.Errorf("duplicate: %v", err)
	}
}
