// Package storefault wraps a store.Store with faults a test injects: a
// disk that refuses writes for a while, as a full or failing disk does. Tests use it to prove what feedgate promises when its store
// fails; nothing in production uses it.
package storefault

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/feedgate/feedgate/server/broker"
	"github.com/feedgate/feedgate/server/store"
)

// ErrInjected is the error of an injected fault.
var ErrInjected = errors.New("storefault: injected disk failure")

// Store is a store.Store whose writes fail while the fault is set (reads
// pass through). Each method implements store.Store. Safe for concurrent
// use.
type Store struct {
	inner store.Store

	mu         sync.Mutex
	failWrites bool
	refused    int
}

var _ store.Store = (*Store)(nil)

// New wraps s.
func New(s store.Store) *Store { return &Store{inner: s} }

// FailWrites makes every write fail with ErrInjected (on) or succeed again
// (off).
func (s *Store) FailWrites(on bool) {
	s.mu.Lock()
	s.failWrites = on
	s.mu.Unlock()
}

// Refused returns how many calls the faults refused.
func (s *Store) Refused() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.refused
}

func (s *Store) check(write bool) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if write && s.failWrites {
		s.refused++
		return ErrInjected
	}
	return nil
}

func (s *Store) CreateUser(ctx context.Context, u store.User) error {
	if err := s.check(true); err != nil {
		return err
	}
	return s.inner.CreateUser(ctx, u)
}

func (s *Store) UserByKeyHash(ctx context.Context, h [32]byte) (store.User, error) {
	if err := s.check(false); err != nil {
		return store.User{}, err
	}
	return s.inner.UserByKeyHash(ctx, h)
}

func (s *Store) UserByID(ctx context.Context, id string) (store.User, error) {
	if err := s.check(false); err != nil {
		return store.User{}, err
	}
	return s.inner.UserByID(ctx, id)
}

func (s *Store) UserByName(ctx context.Context, name string) (store.User, error) {
	if err := s.check(false); err != nil {
		return store.User{}, err
	}
	return s.inner.UserByName(ctx, name)
}

func (s *Store) ListUsers(ctx context.Context) ([]store.User, error) {
	if err := s.check(false); err != nil {
		return nil, err
	}
	return s.inner.ListUsers(ctx)
}

func (s *Store) RevokeUser(ctx context.Context, id string, at time.Time) error {
	if err := s.check(true); err != nil {
		return err
	}
	return s.inner.RevokeUser(ctx, id, at)
}

func (s *Store) CountUsers(ctx context.Context) (int, error) {
	if err := s.check(false); err != nil {
		return 0, err
	}
	return s.inner.CountUsers(ctx)
}

func (s *Store) GetConnection(ctx context.Context, userID string, b broker.Kind) (store.Connection, error) {
	if err := s.check(false); err != nil {
		return store.Connection{}, err
	}
	return s.inner.GetConnection(ctx, userID, b)
}

func (s *Store) UpdateConnection(ctx context.Context, userID string, b broker.Kind, fn store.UpdateFunc) (store.Connection, error) {
	if err := s.check(true); err != nil {
		return store.Connection{}, err
	}
	return s.inner.UpdateConnection(ctx, userID, b, fn)
}

func (s *Store) ListConnections(ctx context.Context, f store.ConnectionFilter) ([]store.UserConnection, error) {
	if err := s.check(false); err != nil {
		return nil, err
	}
	return s.inner.ListConnections(ctx, f)
}

func (s *Store) Events(ctx context.Context, userID string, b broker.Kind) ([]store.Event, error) {
	if err := s.check(false); err != nil {
		return nil, err
	}
	return s.inner.Events(ctx, userID, b)
}

func (s *Store) CreateLoginState(ctx context.Context, ls store.LoginState) error {
	if err := s.check(true); err != nil {
		return err
	}
	return s.inner.CreateLoginState(ctx, ls)
}

func (s *Store) LoginState(ctx context.Context, state string) (store.LoginState, error) {
	if err := s.check(false); err != nil {
		return store.LoginState{}, err
	}
	return s.inner.LoginState(ctx, state)
}

func (s *Store) LatestLoginState(ctx context.Context, userID string, b broker.Kind) (store.LoginState, error) {
	if err := s.check(false); err != nil {
		return store.LoginState{}, err
	}
	return s.inner.LatestLoginState(ctx, userID, b)
}

func (s *Store) DeleteLoginState(ctx context.Context, state string) error {
	if err := s.check(true); err != nil {
		return err
	}
	return s.inner.DeleteLoginState(ctx, state)
}

func (s *Store) Close() error { return s.inner.Close() }
