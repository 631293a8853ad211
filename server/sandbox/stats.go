package sandbox

import (
	"cmp"
	"slices"
	"sync"
)

// Stats is what GET /sandbox/stats returns: every broker API call counted
// by broker, path, status and account, and the feed sockets per account.
type Stats struct {
	Calls           []CallStat `json:"calls"`
	FeedConnections []FeedStat `json:"feed_connections"`
}

// CallStat counts calls of one (broker, path, status, account). Path is the
// broker's own path (without the /upstox or /fyers prefix); Account is the
// owner of the token, code or dialog used, "" when unknown; Status is 0 for
// a call whose connection was reset by a fault.
type CallStat struct {
	Broker  Broker `json:"broker"`
	Path    string `json:"path"`
	Status  int    `json:"status"`
	Account string `json:"account"`
	Count   int64  `json:"count"`
}

// FeedStat counts the feed sockets of one account: open now, and opened in
// total since start.
type FeedStat struct {
	Broker  Broker `json:"broker"`
	Account string `json:"account"`
	Open    int    `json:"open"`
	Total   int64  `json:"total"`
}

type callKey struct {
	broker  Broker
	path    string
	status  int
	account string
}

// stats counts calls; safe for concurrent use.
type stats struct {
	mu sync.Mutex
	m  map[callKey]int64
}

func newStats() *stats { return &stats{m: map[callKey]int64{}} }

func (s *stats) record(b Broker, path string, status int, account string) {
	s.mu.Lock()
	s.m[callKey{b, path, status, account}]++
	s.mu.Unlock()
}

func (s *stats) snapshot() Stats {
	s.mu.Lock()
	out := Stats{Calls: make([]CallStat, 0, len(s.m))}
	for k, n := range s.m {
		out.Calls = append(out.Calls, CallStat{Broker: k.broker, Path: k.path, Status: k.status, Account: k.account, Count: n})
	}
	s.mu.Unlock()
	slices.SortFunc(out.Calls, func(a, b CallStat) int {
		return cmp.Or(cmp.Compare(a.Broker, b.Broker), cmp.Compare(a.Path, b.Path),
			cmp.Compare(a.Account, b.Account), cmp.Compare(a.Status, b.Status))
	})
	return out
}

// Count returns how many calls match broker, path and status (status 0 =
// any status), over all accounts.
func (st Stats) Count(b Broker, path string, status int) int64 {
	var n int64
	for _, c := range st.Calls {
		if c.Broker == b && c.Path == path && (status == 0 || c.Status == status) {
			n += c.Count
		}
	}
	return n
}
