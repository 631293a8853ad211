// Package hardening holds the shared helpers of feedgate's reliability and
// security tests: heap checks, a log capture that can be searched for
// secrets, and the switch between the CI-sized and the long
// (FEEDGATE_SOAK=1) versions of the load tests. (Goroutine leaks are
// checked with go.uber.org/goleak.) It is imported by tests
// only; RELIABILITY.md in this directory describes what those tests prove.
package hardening

import (
	"bytes"
	"os"
	"runtime"
	"strings"
	"sync"
)

// Soak reports whether the long versions of the load and soak tests were
// asked for (FEEDGATE_SOAK=1).
func Soak() bool { return os.Getenv("FEEDGATE_SOAK") == "1" }

// HeapAlloc returns the live heap after two full collections, in bytes.
func HeapAlloc() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// MiB formats a byte count for test logs.
func MiB(b uint64) float64 { return float64(b) / (1 << 20) }

// LogBuffer is an io.Writer for a slog handler that keeps everything
// written to it. It is safe for concurrent use.
type LogBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

// Write implements io.Writer.
func (b *LogBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// String returns everything written so far.
func (b *LogBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// Leaks returns the secrets (by label) that occur in text. Empty secrets
// are ignored.
func Leaks(text string, secrets map[string]string) []string {
	var out []string
	for label, s := range secrets {
		if s != "" && strings.Contains(text, s) {
			out = append(out, label)
		}
	}
	return out
}
