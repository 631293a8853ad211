package broker

import (
	"net/http"
	"testing"
	"time"
)

// FuzzParseRetryAfter feeds arbitrary Retry-After and X-Retry-After-Ms
// values: the wait it reports is never negative, so a broker's header can
// never make the Caller retry at once in a loop or send a negative delay to
// a client.
func FuzzParseRetryAfter(f *testing.F) {
	for _, s := range [][2]string{
		{"60", ""}, {"60", "30000"}, {"1.5", ""}, {"Wed, 21 Oct 2015 07:28:00 GMT", ""},
		{"", "9223372036854775807"}, {"1e9", ""}, {"-1", "-1"}, {"NaN", ""}, {"", "18446744073709551"},
	} {
		f.Add(s[0], s[1])
	}
	now := time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, ra, ms string) {
		h := http.Header{}
		if ra != "" {
			h.Set("Retry-After", ra)
		}
		if ms != "" {
			h.Set("X-Retry-After-Ms", ms)
		}
		if d, ok := ParseRetryAfter(h, now); ok && d < 0 {
			t.Fatalf("ParseRetryAfter(Retry-After %q, X-Retry-After-Ms %q) = %v", ra, ms, d)
		}
	})
}
