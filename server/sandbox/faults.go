package sandbox

import (
	"strings"
	"sync"
)

// Fault is one injected failure, as POST /sandbox/faults takes it: the next
// Count calls of Broker whose path (without the /upstox or /fyers prefix)
// starts with PathPrefix are delayed by LatencyMS, then fail with Status
// (the broker's own error body for it), or have their connection reset
// mid-body when Reset is set. Status 0 without Reset means latency alone.
type Fault struct {
	Broker       Broker `json:"broker"`
	PathPrefix   string `json:"path_prefix"`
	Status       int    `json:"status"`
	Count        int    `json:"count"`
	LatencyMS    int    `json:"latency_ms"`
	RetryAfterMS int    `json:"retry_after_ms"`
	Reset        bool   `json:"reset"`
}

// faults holds pending faults in the order they were added; safe for
// concurrent use.
type faults struct {
	mu   sync.Mutex
	list []*Fault
}

func (f *faults) add(ft Fault) {
	f.mu.Lock()
	f.list = append(f.list, &ft)
	f.mu.Unlock()
}

func (f *faults) clear() {
	f.mu.Lock()
	f.list = nil
	f.mu.Unlock()
}

// take consumes one use of the first fault matching (b, path).
func (f *faults) take(b Broker, path string) (Fault, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for i, ft := range f.list {
		if ft.Broker != b || !strings.HasPrefix(path, ft.PathPrefix) {
			continue
		}
		out := *ft
		ft.Count--
		if ft.Count <= 0 {
			f.list = append(f.list[:i], f.list[i+1:]...)
		}
		return out, true
	}
	return Fault{}, false
}
