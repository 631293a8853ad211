package sandbox

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strings"
	"time"
)

// call is the per-request record a broker handler fills in for stats.
type call struct {
	account string
}

// apiHandler is a broker endpoint; it sets c.account once it knows whose
// token, code or dialog the call uses.
type apiHandler func(w http.ResponseWriter, r *http.Request, c *call)

func (s *Sandbox) routes() *http.ServeMux {
	mux := http.NewServeMux()
	up := func(pattern string, h apiHandler) {
		method, path, ok := strings.Cut(pattern, " ")
		if !ok {
			method, path = "", pattern
		} else {
			method += " "
		}
		mux.Handle(method+"/upstox"+path, s.api(Upstox, h))
	}
	up("GET /v2/login/authorization/dialog", s.upstoxDialog)
	up("POST /v2/login/authorization/token", s.upstoxToken)
	up("GET /v2/user/profile", s.upstoxProfile)
	up("GET /v2/option/chain", s.upstoxChain)
	up("GET /v3/market-quote/ltp", s.upstoxLTP(3))
	up("GET /v2/market-quote/ltp", s.upstoxLTP(2))
	up("GET /v2/market-quote/quotes", s.upstoxQuotes)
	up("DELETE /v2/logout", s.upstoxLogout)
	up("GET /v3/feed/market-data-feed/authorize", s.upstoxFeedAuthorize)
	up("GET "+upstoxFeedWSPath, s.upstoxFeedSocket)
	up("/", s.upstoxNotFound)

	fy := func(pattern string, h apiHandler) {
		method, path, ok := strings.Cut(pattern, " ")
		if !ok {
			method, path = "", pattern
		} else {
			method += " "
		}
		mux.Handle(method+"/fyers"+path, s.api(Fyers, h))
	}
	fy("GET /api/v3/generate-authcode", s.fyersGenerateAuthcode)
	fy("POST /api/v3/validate-authcode", s.fyersValidateAuthcode)
	fy("GET /api/v3/profile", s.fyersProfile)
	fy("POST /api/v3/logout", s.fyersLogout)
	fy("GET /data/options-chain-v3", s.fyersChain)
	fy("GET /data/quotes", s.fyersQuotes)
	fy("/", s.fyersNotFound)

	mux.HandleFunc("POST /sandbox/revoke", s.controlKill(stateRevoked))
	mux.HandleFunc("POST /sandbox/expire", s.controlKill(stateExpired))
	mux.HandleFunc("POST /sandbox/faults", s.controlAddFault)
	mux.HandleFunc("DELETE /sandbox/faults", s.controlClearFaults)
	mux.HandleFunc("GET /sandbox/config", s.controlConfig)
	mux.HandleFunc("POST /sandbox/config", s.controlConfig)
	mux.HandleFunc("GET /sandbox/stats", s.controlStats)
	mux.HandleFunc("/sandbox/", func(w http.ResponseWriter, _ *http.Request) {
		controlError(w, http.StatusNotFound, "no such control endpoint")
	})
	mux.HandleFunc("GET /{$}", s.index)
	return mux
}

// api wraps a broker endpoint with fault injection and call counting.
func (s *Sandbox) api(b Broker, h apiHandler) http.Handler {
	prefix := "/" + string(b)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		path := strings.TrimPrefix(r.URL.Path, prefix)
		sw := &statusWriter{ResponseWriter: w}
		c := &call{}
		if f, ok := s.faults.take(b, path); ok {
			c.account = s.accountOf(b, r)
			// The call is recorded before a reset closes the connection, so
			// a client that has seen the reset finds the call counted.
			record := func() { s.stats.record(b, path, sw.status, c.account) }
			if !s.applyFault(sw, r, b, f, record) {
				return
			}
		}
		h(sw, r, c)
		if sw.status == 0 && !sw.hijacked {
			sw.status = http.StatusOK
		}
		s.stats.record(b, path, sw.status, c.account)
	})
}

// applyFault delays and/or fails the call as f says; it reports whether
// the call should go on to its handler. When it does not, it has called
// record once, before the client can see the outcome.
func (s *Sandbox) applyFault(w *statusWriter, r *http.Request, b Broker, f Fault, record func()) bool {
	if f.LatencyMS > 0 {
		t := time.NewTimer(time.Duration(f.LatencyMS) * time.Millisecond)
		defer t.Stop()
		select {
		case <-t.C:
		case <-r.Context().Done():
			record()
			return false
		case <-s.ctx.Done():
			record()
			return false
		}
	}
	switch {
	case f.Reset:
		record()
		resetConnection(w)
		return false
	case f.Status != 0:
		if b == Upstox {
			upstoxFault(w, f)
		} else {
			fyersFault(w, f)
		}
		record()
		return false
	}
	return true
}

// resetConnection hijacks the connection, writes the headers and part of
// a body that promises more, and closes it, as a broker dying mid-answer.
func resetConnection(w *statusWriter) {
	conn, brw, err := http.NewResponseController(w.ResponseWriter).Hijack()
	if err != nil {
		w.WriteHeader(http.StatusInternalServerError)
		return
	}
	w.hijacked = true
	_, _ = brw.WriteString("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 4096\r\n\r\n{\"status\":\"success\",\"data\":{\"")
	_ = brw.Flush()
	_ = conn.Close()
}

// accountOf names the owner of the token r carries, "" if none.
func (s *Sandbox) accountOf(b Broker, r *http.Request) string {
	var tok string
	if b == Upstox {
		tok = bearer(r)
	} else {
		_, tok, _ = strings.Cut(r.Header.Get("Authorization"), ":")
	}
	if tok == "" {
		return ""
	}
	if rec, ok := s.store.lookup(tok); ok && rec.Broker == b {
		return rec.Account
	}
	return ""
}

// statusWriter remembers the status written; it passes Hijack and Flush
// through for the feed socket.
type statusWriter struct {
	http.ResponseWriter
	status   int
	hijacked bool
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

func (w *statusWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (w *statusWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	conn, brw, err := http.NewResponseController(w.ResponseWriter).Hijack()
	if err == nil && w.status == 0 {
		w.status = http.StatusSwitchingProtocols
	}
	return conn, brw, err
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// writeJSON writes v as the JSON body with status.
func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		status, b = http.StatusInternalServerError, []byte(`{"error":"encode"}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(b)
}

// index is a small text page listing accounts and endpoints.
func (s *Sandbox) index(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	var sb strings.Builder
	sb.WriteString("feedgate sandbox broker\n\nUpstox (base /upstox): client_id " + UpstoxClientID + "\n")
	sb.WriteString("  GET /upstox/v2/login/authorization/dialog?client_id=..&redirect_uri=..&response_type=code&state=..&account=NAME\n")
	sb.WriteString("  POST /upstox/v2/login/authorization/token, GET /upstox/v2/user/profile, GET /upstox/v2/option/chain,\n")
	sb.WriteString("  GET /upstox/v3/market-quote/ltp, GET /upstox/v2/market-quote/quotes, DELETE /upstox/v2/logout,\n")
	sb.WriteString("  GET /upstox/v3/feed/market-data-feed/authorize\n\n")
	sb.WriteString("Fyers (base /fyers): app_id " + FyersAppID + "\n")
	sb.WriteString("  GET /fyers/api/v3/generate-authcode, POST /fyers/api/v3/validate-authcode, GET /fyers/api/v3/profile,\n")
	sb.WriteString("  POST /fyers/api/v3/logout, GET /fyers/data/options-chain-v3, GET /fyers/data/quotes\n\n")
	sb.WriteString("Control: POST /sandbox/revoke, POST /sandbox/expire, POST|DELETE /sandbox/faults, GET|POST /sandbox/config, GET /sandbox/stats\n\n")
	sb.WriteString("Underlyings and expiries:\n")
	for _, u := range s.mkt.underlyings {
		fmt.Fprintf(&sb, "  %-22s %-22s %s\n", u.upKey, u.fySymbol, strings.Join(s.Expiries(u.upKey), " "))
	}
	sb.WriteString("\nAccounts with tokens:\n")
	accts := s.store.accounts()
	for _, b := range Brokers {
		a := accts[b]
		slices.Sort(a)
		fmt.Fprintf(&sb, "  %s: %s\n", b, strings.Join(a, ", "))
	}
	_, _ = w.Write([]byte(sb.String()))
}
