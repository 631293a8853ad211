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
)

// FuzzOAuthCallback sends arbitrary query strings to both brokers' OAuth
// callbacks of a real gateway (real connections manager, SQLite, and the
// in-process sandbox broker for the code exchange). In a query, "{state}"
// and "{code}" are replaced by a live state issued to the test user for the
// callback's broker and a code the sandbox approved for it, and
// "{otherstate}" by a live state issued for the other broker, so the fuzzer
// also explores valid, mixed and replayed logins. It proves: no panic; the
// answer is always 303 to "/#/auth?..." on the same origin (no scheme, no
// host, nothing from the request but the fixed keys connected, login_error
// and broker); and a login completes only when the query's state is a live
// state issued for that broker, and is reported as such.
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
		f.Add(uint8(0), s)
		f.Add(uint8(1), s)
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
		loginURL, state, _, err := g.Conns().LoginURL(u.ID, kind)
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
	f.Fuzz(func(t *testing.T, which uint8, q string) {
		kind, other := broker.Upstox, broker.Fyers
		if which%2 == 1 {
			kind, other = broker.Fyers, broker.Upstox
		}
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
		r := httptest.NewRequest(http.MethodGet, callbackPath(kind), nil)
		r.URL.RawQuery = q
		w := httptest.NewRecorder()
		g.oauthCallback(kind).ServeHTTP(w, r)

		loc := w.Header().Get("Location")
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
		after := generation(t, kind)
		connected := dest.Get("connected") == string(kind)
		if after != before {
			if live == "" || r.URL.Query().Get("state") != live {
				t.Fatalf("login completed (generation %d -> %d) without the live state: %q", before, after, q)
			}
			if !connected {
				t.Fatalf("login completed but reported %q", loc)
			}
		} else if connected {
			t.Fatalf("reported connected without a login: %q", loc)
		}
		if w := httptest.NewRecorder(); true {
			post := httptest.NewRequest(http.MethodPost, callbackPath(kind), nil)
			post.URL.RawQuery = q
			g.oauthCallback(kind).ServeHTTP(w, post)
			if w.Code != http.StatusMethodNotAllowed || generation(t, kind) != after {
				t.Fatalf("POST answered %d", w.Code)
			}
		}
	})
}
