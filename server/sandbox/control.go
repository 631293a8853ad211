package sandbox

import (
	"encoding/json"
	"fmt"
	"net/http"
	"time"
)

// controlError writes a control API error: {"error": msg}.
func controlError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, map[string]string{"error": msg})
}

// decodeControl reads a JSON control body strictly (unknown fields refused).
func decodeControl(w http.ResponseWriter, r *http.Request, v any) bool {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<16))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		controlError(w, http.StatusBadRequest, "invalid JSON body: "+err.Error())
		return false
	}
	return true
}

// accountRequest is the body of /sandbox/revoke and /sandbox/expire.
type accountRequest struct {
	Broker  Broker `json:"broker"`
	Account string `json:"account"`
}

func (s *Sandbox) controlKill(st tokenState) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var req accountRequest
		if !decodeControl(w, r, &req) {
			return
		}
		if !req.Broker.Valid() {
			controlError(w, http.StatusBadRequest, fmt.Sprintf("unknown broker %q", req.Broker))
			return
		}
		if req.Account == "" {
			controlError(w, http.StatusBadRequest, "account is required")
			return
		}
		s.kill(req.Broker, req.Account, st)
		writeJSON(w, http.StatusOK, map[string]any{"ok": true, "broker": req.Broker, "account": req.Account, "state": st})
	}
}

func (s *Sandbox) controlAddFault(w http.ResponseWriter, r *http.Request) {
	var f Fault
	if !decodeControl(w, r, &f) {
		return
	}
	switch {
	case !f.Broker.Valid():
		controlError(w, http.StatusBadRequest, fmt.Sprintf("unknown broker %q", f.Broker))
	case f.Status != 0 && (f.Status < 400 || f.Status > 599):
		controlError(w, http.StatusBadRequest, "status must be 0 or 400-599")
	case f.Count < 0 || f.LatencyMS < 0 || f.RetryAfterMS < 0:
		controlError(w, http.StatusBadRequest, "count, latency_ms and retry_after_ms must not be negative")
	case f.LatencyMS > 600_000:
		controlError(w, http.StatusBadRequest, "latency_ms must be at most 600000")
	case f.Status == 0 && f.LatencyMS == 0 && !f.Reset:
		controlError(w, http.StatusBadRequest, "a fault needs status, latency_ms or reset")
	default:
		if f.Count == 0 {
			f.Count = 1
		}
		s.faults.add(f)
		writeJSON(w, http.StatusOK, map[string]any{"ok": true, "fault": f})
	}
}

func (s *Sandbox) controlClearFaults(w http.ResponseWriter, _ *http.Request) {
	s.faults.clear()
	writeJSON(w, http.StatusOK, map[string]any{"ok": true})
}

// runtimeConfig is the body of POST /sandbox/config and the answer of both
// GET and POST.
type runtimeConfig struct {
	FeedIntervalMS *int64 `json:"feed_interval_ms,omitempty"`
	RateLimits     *bool  `json:"rate_limits,omitempty"`
}

func (s *Sandbox) controlConfig(w http.ResponseWriter, r *http.Request) {
	if r.Method == http.MethodPost {
		var req runtimeConfig
		if !decodeControl(w, r, &req) {
			return
		}
		if req.FeedIntervalMS != nil && (*req.FeedIntervalMS < 10 || *req.FeedIntervalMS > 3_600_000) {
			controlError(w, http.StatusBadRequest, "feed_interval_ms must be between 10 and 3600000")
			return
		}
		if req.FeedIntervalMS != nil {
			s.SetFeedInterval(time.Duration(*req.FeedIntervalMS) * time.Millisecond)
		}
		if req.RateLimits != nil {
			s.SetRateLimits(*req.RateLimits)
		}
	}
	ms := time.Duration(s.feedInterval.Load()).Milliseconds()
	on := s.rateLimits.Load()
	writeJSON(w, http.StatusOK, runtimeConfig{FeedIntervalMS: &ms, RateLimits: &on})
}

func (s *Sandbox) controlStats(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, s.Stats())
}

// SetFeedInterval changes the time between live feed rounds; open sockets
// pick it up after their current round. Values <= 0 are ignored.
func (s *Sandbox) SetFeedInterval(d time.Duration) {
	if d > 0 {
		s.feedInterval.Store(int64(d))
	}
}

// SetRateLimits turns enforcement of the per-token rate limits on or off
// (off for load tests).
func (s *Sandbox) SetRateLimits(on bool) { s.rateLimits.Store(on) }

// AddFault injects f, as POST /sandbox/faults does (Count 0 means 1).
func (s *Sandbox) AddFault(f Fault) {
	if f.Count <= 0 {
		f.Count = 1
	}
	s.faults.add(f)
}

// ClearFaults drops every pending fault, as DELETE /sandbox/faults does.
func (s *Sandbox) ClearFaults() { s.faults.clear() }
