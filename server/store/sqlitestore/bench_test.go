package sqlitestore_test

import (
	"context"
	"crypto/sha256"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/feedgate/feedgate/server/broker"
	"github.com/feedgate/feedgate/server/store"
	"github.com/feedgate/feedgate/server/store/sqlitestore"
)

// benchStore opens a store holding users connected users, each with an
// Upstox connection.
func benchStore(b *testing.B, users int) (store.Store, []string) {
	b.Helper()
	ctx := context.Background()
	s, err := sqlitestore.Open(ctx, filepath.Join(b.TempDir(), "bench.db"))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = s.Close() })
	at := time.Date(2026, 11, 2, 9, 15, 0, 0, time.UTC)
	ids := make([]string, users)
	for i := range users {
		name := fmt.Sprintf("user%d", i)
		ids[i] = "u_" + name
		if err := s.CreateUser(ctx, store.User{ID: ids[i], Name: name, KeyHash: sha256.Sum256([]byte(name)), CreatedAt: at}); err != nil {
			b.Fatal(err)
		}
		if _, err := s.UpdateConnection(ctx, ids[i], broker.Upstox, func(c *store.Connection) (*store.Event, error) {
			c.State, c.SealedToken, c.TokenGeneration, c.BrokerUserID = store.StateConnected, make([]byte, 120), 1, "AB1234"
			c.IssuedAt, c.ConnectedAt, c.ExpiresAt, c.UpdatedAt = at, at, at.Add(18*time.Hour), at
			return &store.Event{Kind: "login", At: at}, nil
		}); err != nil {
			b.Fatal(err)
		}
	}
	return s, ids
}

// BenchmarkGetConnection is the connection lookup every broker call and
// every stream's session makes.
func BenchmarkGetConnection(b *testing.B) {
	s, ids := benchStore(b, 1000)
	ctx := context.Background()
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if _, err := s.GetConnection(ctx, ids[i%len(ids)], broker.Upstox); err != nil {
			b.Fatal(err)
		}
		i++
	}
}

// BenchmarkGetConnectionParallel is the same lookup from many goroutines.
func BenchmarkGetConnectionParallel(b *testing.B) {
	s, ids := benchStore(b, 1000)
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			if _, err := s.GetConnection(ctx, ids[i%len(ids)], broker.Upstox); err != nil {
				b.Error(err)
				return
			}
			i++
		}
	})
}

// BenchmarkUserByKeyHash is the API-key lookup behind every request's
// authentication.
func BenchmarkUserByKeyHash(b *testing.B) {
	s, ids := benchStore(b, 1000)
	ctx := context.Background()
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if _, err := s.UserByKeyHash(ctx, sha256.Sum256([]byte(ids[i%len(ids)][2:]))); err != nil {
			b.Fatal(err)
		}
		i++
	}
}

// BenchmarkUpdateConnection is one durable connection update (the write a
// dead token's disconnect makes before streams are told), fsync included.
func BenchmarkUpdateConnection(b *testing.B) {
	s, ids := benchStore(b, 10)
	ctx := context.Background()
	at := time.Date(2026, 11, 2, 9, 15, 0, 0, time.UTC)
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if _, err := s.UpdateConnection(ctx, ids[i%len(ids)], broker.Upstox, func(c *store.Connection) (*store.Event, error) {
			c.LastValidatedAt, c.UpdatedAt = at.Add(time.Duration(i)), at.Add(time.Duration(i))
			return &store.Event{Kind: "validated", At: c.UpdatedAt}, nil
		}); err != nil {
			b.Fatal(err)
		}
		i++
	}
}
