package feed

import "time"

// Reconnect backoff defaults (style.md: full jitter, base 250 ms, cap 30 s).
const (
	DefaultBackoffBase = 250 * time.Millisecond
	DefaultBackoffCap  = 30 * time.Second
)

// Backoff is the wait before reconnect attempt number attempt (0 for the
// first after a loss): full jitter, jitter(min(cap, base·2^attempt)), where
// jitter returns a uniform duration in [0, ceiling).
func Backoff(attempt int, base, cap time.Duration, jitter func(ceiling time.Duration) time.Duration) time.Duration {
	ceiling := cap
	if attempt < 32 {
		if c := base << attempt; c > 0 && c < cap {
			ceiling = c
		}
	}
	if ceiling <= 0 {
		return 0
	}
	return jitter(ceiling)
}
