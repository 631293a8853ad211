package auth

import (
	"context"
	"errors"
	"sync"
	"time"

	"connectrpc.com/connect"

	"github.com/feedgate/feedgate/server/store"
)

// errKeyRevokedCause cancels the streams of a user whose key was revoked.
var errKeyRevokedCause = errors.New("API key revoked")

// streams tracks the open streaming RPCs of each user, so revoking a key
// (from the CLI, in another process) also ends the streams it opened.
type streams struct {
	mu     sync.Mutex
	byUser map[string]map[*context.CancelCauseFunc]struct{}
}

func (s *streams) add(userID string, cancel context.CancelCauseFunc) func() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.byUser == nil {
		s.byUser = make(map[string]map[*context.CancelCauseFunc]struct{})
	}
	m := s.byUser[userID]
	if m == nil {
		m = make(map[*context.CancelCauseFunc]struct{})
		s.byUser[userID] = m
	}
	p := &cancel
	m[p] = struct{}{}
	return func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		// p is in the current map: a user's map is dropped only when empty.
		cur := s.byUser[userID]
		delete(cur, p)
		if len(cur) == 0 {
			delete(s.byUser, userID)
		}
	}
}

func (s *streams) users() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]string, 0, len(s.byUser))
	for u := range s.byUser {
		out = append(out, u)
	}
	return out
}

func (s *streams) cancel(userID string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.byUser[userID] {
		(*c)(errKeyRevokedCause)
	}
}

// WatchRevocations re-checks, every interval until ctx ends, the keys of
// users with open streams, and ends the streams of any whose key was
// revoked since they opened (with Unauthenticated, no detail).
func (i *Interceptor) WatchRevocations(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		for _, id := range i.streams.users() {
			u, err := i.store.UserByID(ctx, id)
			if errors.Is(err, store.ErrNotFound) || (err == nil && !u.Active()) {
				i.logger.InfoContext(ctx, "ending the streams of a revoked API key", "user_id", id)
				i.streams.cancel(id)
				if i.OnRevoked != nil {
					i.OnRevoked(id)
				}
			}
		}
	}
}

// revokedError is what a stream ended by WatchRevocations returns.
func revokedError() error {
	return connect.NewError(connect.CodeUnauthenticated, errKeyRevokedCause)
}
