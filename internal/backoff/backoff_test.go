package backoff

import (
	"math"
	"testing"
	"time"

	"pgregory.net/rapid"
)

func TestCeiling(t *testing.T) {
	t.Parallel()
	base, cap := 250*time.Millisecond, 30*time.Second
	want := []time.Duration{250 * time.Millisecond, 500 * time.Millisecond, time.Second, 2 * time.Second, 4 * time.Second,
		8 * time.Second, 16 * time.Second, 30 * time.Second, 30 * time.Second}
	for attempt, w := range want {
		if got := Ceiling(attempt, base, cap); got != w {
			t.Errorf("Ceiling(%d) = %v, want %v", attempt, got, w)
		}
	}
	for _, attempt := range []int{62, 63, 64, 1000, math.MaxInt} {
		if got := Ceiling(attempt, base, cap); got != cap {
			t.Errorf("Ceiling(%d) = %v, want the cap", attempt, got)
		}
	}
}

// TestFullStaysBelowItsCeiling: for any inputs the wait is in
// [0, ceiling), the ceiling never exceeds the cap (nor base when the cap is
// below it) and never shrinks as attempts grow.
func TestFullStaysBelowItsCeiling(t *testing.T) {
	t.Parallel()
	rapid.Check(t, func(t *rapid.T) {
		base := time.Duration(rapid.Int64Range(1, int64(time.Hour)).Draw(t, "base"))
		cap := time.Duration(rapid.Int64Range(0, int64(24*time.Hour)).Draw(t, "cap"))
		attempt := rapid.IntRange(-1, 200).Draw(t, "attempt")
		c := Ceiling(attempt, base, cap)
		if c <= 0 || c > max(cap, base) {
			t.Fatalf("Ceiling(%d, %v, %v) = %v", attempt, base, cap, c)
		}
		if next := Ceiling(attempt+1, base, cap); next < c {
			t.Fatalf("ceiling shrank from %v to %v at attempt %d", c, next, attempt+1)
		}
		if w := Full(attempt, base, cap, nil); w < 0 || w >= c {
			t.Fatalf("Full = %v, want [0, %v)", w, c)
		}
	})
}
