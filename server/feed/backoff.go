package feed

import "time"

// Reconnect backoff defaults (full jitter, base 250 ms, cap 30 s; the
// policy is internal/backoff's, shared with the broker caller and the Go
// client).
const (
	DefaultBackoffBase = 250 * time.Millisecond
	DefaultBackoffCap  = 30 * time.Second
)
