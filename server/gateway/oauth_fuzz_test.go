package gateway

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/feedgate/feedgate/server/auth"
	"github.com/feedgate/feedgate/server/broker"
	"github.com/feedgate/feedgate/server/config"
	"github.com/feedgate/feedgate/server/connections"
	"github.com/feedgate/feedgate/server/loginbind"
)

// FuzzOAuthCallback sends arbitrary query strings to both brokers' OAuth
// callbacks of a real gateway (real connections manager, SQLite, and the
// in-process sandbox broker for the code exchange). In a query, "{state}"
// and "{code}" are replaced by a live state issued to the test user for the
// callback's broker and a code the sandbox approved for it, and
// "{otherstate}" by a live state issued for the other broker, so the fuzzer
// also explores valid, mixed and replayed logins. The request carries the
// browser binding cookie of the live state when the fuzzer asks for one
// ("{state}" in the query and an odd which), as the browser that asked for
// the login URL would. It proves: no panic; the answer is either 303 to
// "/#/auth?..." on the same origin (no scheme, no host, nothing from the
// request but the fixed keys connected, login_error and broker, and the
// error a known code) or the fixed 403 page for a browser without the
// binding; and a login completes only when the query's state is a live
// state issued for that broker and the browser holds its binding, and is
// reported as such.
func FuzzOAuthCallback(f *testing.F) {
	for _, s := range []string{
		"code=x&state=y",
		"code={code}&state={state}",
		"auth_code={code}&code=200&s=ok&state={state}",
		"code={code}&state={otherstate}",
		"code={code}&state={state}&state=zzz",
		"code={code}&state={state}&error=access_denied",
		"s=error&auth_code={code}&state={state}",
		"code=x&state=y&redirect_uri=https://evil.example&next=//evil.example",
		"code=%0d%0aLocation:%20https://evil.example&state=%ZZ",
		"state=;code=;",
		"",
	} {
		for which := range uint8(4) {
			f.Add(which, s)
		}
	}
	ctx := context.Background()
	cfg, err := config.Load("test", []string{"--addr", "127.0.0.1:0", "--data-dir", f.TempDir(), "--sandbox-addr", "127.0.0.1:0"},
		func(string) string { return "" }, io.Discard)
	if err != nil {
		f.Fatal(err)
	}
	g, err := New(ctx, cfg, Options{Stdout: &bytes.Buffer{}})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { _ = g.Close() })
	u, _, err := auth.CreateUser(ctx, g.Store(), "oauth-fuzz", false, time.Now())
	if err != nil {
		f.Fatal(err)
	}
	noRedirect := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }, Timeout: 10 * time.Second}
	// approve issues a live state for kind and has the sandbox approve it.
	approve := func(t *testing.T, kind broker.Kind) (state, code string) {
		loginURL, state, _, err := g.Conns().LoginURL(ctx, u.ID, kind)
		if err != nil {
			t.Fatal(err)
		}
		res, err := noRedirect.Get(loginURL + "&account=oauth-fuzz")
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		loc, err := url.Parse(res.Header.Get("Location"))
		if err != nil {
			t.Fatal(err)
		}
		code = loc.Query().Get("code")
		if kind == broker.Fyers {
			code = loc.Query().Get("auth_code")
		}
		return state, code
	}
	generation := func(t *testing.T, kind broker.Kind) int64 {
		cs, err := g.Conns().Status(ctx, u.ID, kind)
		if err != nil || len(cs) != 1 {
			t.Fatalf("Status: %v %v", cs, err)
		}
		return cs[0].TokenGeneration
	}
	known := map[string]bool{}
	for _, c := range []connections.LoginCode{connections.LoginStateMissing, connections.LoginStateUnknown, connections.LoginStateExpired,
		connections.LoginStateForeign, connections.LoginUserRevoked, connections.LoginInProgress, connections.LoginCodeMissing,
		connections.LoginCodeRefused, connections.LoginDenied, connections.LoginAccountInUse, connections.LoginBrokerFailure, connections.LoginFailed} {
		known[string(c)] = true
	}
	f.Fuzz(func(t *testing.T, which uint8, q string) {
		kind, other := broker.Upstox, broker.Fyers
		if which%2 == 1 {
			kind, other = broker.Fyers, broker.Upstox
		}
		bind := which&2 == 0
		live := ""
		if strings.Contains(q, "{state}") || strings.Contains(q, "{code}") {
			state, code := approve(t, kind)
			live = state
			q = strings.ReplaceAll(strings.ReplaceAll(q, "{state}", state), "{code}", code)
		}
		if strings.Contains(q, "{otherstate}") {
			state, _ := approve(t, other)
			q = strings.ReplaceAll(q, "{otherstate}", state)
		}
		before := generation(t, kind)
		r := httptest.NewRequest(http.MethodGet, loginbind.CallbackPath(kind), nil)
		r.URL.RawQuery = q
		if bind && live != "" {
			r.AddCookie(loginbind.Cookie(kind, live, time.Now().Add(time.Minute), false))
		}
		w := httptest.NewRecorder()
		g.oauthCallback(kind).ServeHTTP(w, r)

		loc := w.Header().Get("Location")
		if w.Code == http.StatusForbidden {
			if generation(t, kind) != before {
				t.Fatalf("a callback without the browser binding completed a login: %q", q)
			}
			if bind && live != "" && r.URL.Query().Get("state") == live {
				t.Fatalf("refused as unbound although the browser holds the binding: %q", q)
			}
			if body := w.Body.String(); !strings.Contains(body, "did not connect any") {
				t.Fatalf("the refusal page: %q", body)
			}
			return
		}
		if w.Code != http.StatusSeeOther || !strings.HasPrefix(loc, "/#/auth?") {
			t.Fatalf("answered %d %q", w.Code, loc)
		}
		lu, err := url.Parse(loc)
		if err != nil || lu.Scheme != "" || lu.Host != "" || lu.Path != "/" || strings.ContainsAny(loc, "\r\n") {
			t.Fatalf("Location %q leaves the origin (%v)", loc, err)
		}
		dest, err := url.ParseQuery(strings.TrimPrefix(loc, "/#/auth?"))
		if err != nil {
			t.Fatalf("Location %q: %v", loc, err)
		}
		for k := range dest {
			if k != "connected" && k != "login_error" && k != "broker" {
				t.Fatalf("Location %q carries %q", loc, k)
			}
		}
		if e := dest.Get("login_error"); e != "" && !known[e] {
			t.Fatalf("Location %q carries an unknown error code", loc)
		}
		after := generation(t, kind)
		connected := dest.Get("connected") == string(kind)
		if after != before {
			if live == "" || r.URL.Query().Get("state") != live || !bind {
				t.Fatalf("login completed (generation %d -> %d) without the live state and its binding: %q", before, after, q)
			}
			if !connected {
				t.Fatalf("login completed but reported %q", loc)
			}
		} else if connected {
			t.Fatalf("reported connected without a login: %q", loc)
		}
		if w := httptest.NewRecorder(); true {
			post := httptest.NewRequest(http.MethodPost, loginbind.CallbackPath(kind), nil)
			post.URL.RawQuery = q
			g.oauthCallback(kind).ServeHTTP(w, post)
			if w.Code != http.StatusMethodNotAllowed || generation(t, kind) != after {
				t.Fatalf("POST answered %d", w.Code)
			}
		}
	})
}
