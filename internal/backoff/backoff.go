// Package backoff is feedgate's one retry-wait policy: exponential with
// "full jitter" (a uniform wait between zero and an exponentially growing
// ceiling), as in the AWS Architecture Blog's "Exponential Backoff And
// Jitter". The broker caller's retries, the feed's upstream reconnects and
// the Go client's stream reconnects all use it.
package backoff

import (
	"math/rand/v2"
	"time"
)

// Ceiling is the most attempt number attempt (0 for the first retry) may
// wait: min(cap, base·2^attempt), without overflow. Zero or negative base
// gives zero.
func Ceiling(attempt int, base, cap time.Duration) time.Duration {
	if base <= 0 {
		return 0
	}
	if cap < base {
		cap = base
	}
	if attempt < 0 {
		attempt = 0
	}
	if attempt < 62 {
		if c := base << attempt; c > 0 && c>>attempt == base && c < cap {
			return c
		}
	}
	return cap
}

// Full is the wait before retry number attempt (0 for the first): a
// duration drawn by jitter from [0, Ceiling(attempt, base, cap)). A nil
// jitter draws uniformly at random.
func Full(attempt int, base, cap time.Duration, jitter func(ceiling time.Duration) time.Duration) time.Duration {
	ceiling := Ceiling(attempt, base, cap)
	if ceiling <= 0 {
		return 0
	}
	if jitter == nil {
		return rand.N(ceiling)
	}
	return jitter(ceiling)
}
