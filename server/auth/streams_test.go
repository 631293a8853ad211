package auth

import (
	"context"
	"errors"
	"testing"
)

func TestStreamsRegistry(t *testing.T) {
	t.Parallel()
	var s streams
	ctx1, c1 := context.WithCancelCause(context.Background())
	ctx2, c2 := context.WithCancelCause(context.Background())
	ctx3, c3 := context.WithCancelCause(context.Background())
	rm1 := s.add("alice", c1)
	s.add("alice", c2)
	s.add("bob", c3)
	rm1()
	if got := len(s.users()); got != 2 {
		t.Fatalf("users = %d", got)
	}
	s.cancel("alice")
	if ctx1.Err() != nil {
		t.Error("a removed stream was cancelled")
	}
	if !errors.Is(context.Cause(ctx2), errKeyRevokedCause) {
		t.Errorf("alice's open stream: cause %v", context.Cause(ctx2))
	}
	if ctx3.Err() != nil {
		t.Error("bob's stream was cancelled")
	}
}
