package gateway

import (
	"context"
	"errors"
	"html/template"
	"net/http"
	"net/url"
	"time"

	"github.com/feedgate/feedgate/server/broker"
	"github.com/feedgate/feedgate/server/connections"
	"github.com/feedgate/feedgate/server/loginbind"
)

// oauthCallback completes a login from the broker's browser redirect, if
// the browser is the one that asked for the login URL (it holds the state's
// binding cookie, see package loginbind). Otherwise it attaches nothing
// and shows a page that says what happened and how to finish. It redirects
// only to the dashboard's own page, with an error code (never text) in the
// fragment, so it is neither an open redirect nor a way to put words in
// the dashboard's mouth.
func (g *Gateway) oauthCallback(kind broker.Kind) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "no-store")
		w.Header().Set("Referrer-Policy", "no-referrer")
		if r.Method != http.MethodGet {
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		q := r.URL.Query()
		code, state := q.Get("code"), q.Get("state")
		if kind == broker.Fyers {
			code = q.Get("auth_code") // Fyers sends code=200 and the auth code as auth_code
		}
		if q.Get("error") != "" || (kind == broker.Fyers && q.Get("s") == "error") {
			g.toDashboard(w, r, kind, connections.LoginDenied)
			return
		}
		if !loginbind.Bound(r, kind, state) {
			g.opts.Logger.Warn("OAuth callback refused: the login was not started in this browser", "broker", kind)
			notBound(w, kind)
			return
		}
		ctx, cancel := context.WithTimeout(r.Context(), 30*time.Second)
		defer cancel()
		_, err := g.conns.CompleteLogin(ctx, "", kind, code, state)
		if err != nil {
			g.opts.Logger.Warn("OAuth callback failed", "broker", kind, "err", err)
			g.toDashboard(w, r, kind, loginCode(err))
			return
		}
		http.SetCookie(w, loginbind.Clear(kind, g.cfg.SecureCookies()))
		dest := url.Values{"connected": {string(kind)}}
		http.Redirect(w, r, "/#/auth?"+dest.Encode(), http.StatusSeeOther)
	})
}

// toDashboard sends the browser to the dashboard's connections page with
// a login error code.
func (g *Gateway) toDashboard(w http.ResponseWriter, r *http.Request, kind broker.Kind, code connections.LoginCode) {
	dest := url.Values{"login_error": {string(code)}, "broker": {string(kind)}}
	http.Redirect(w, r, "/#/auth?"+dest.Encode(), http.StatusSeeOther)
}

// loginCode is the dashboard's code for a failed login.
func loginCode(err error) connections.LoginCode {
	var le *connections.LoginError
	var ai *connections.AccountInUseError
	switch {
	case errors.As(err, &le):
		return le.Code
	case errors.As(err, &ai):
		return connections.LoginAccountInUse
	}
	if be, ok := broker.AsError(err); ok && (be.Class == broker.ClassUpstream || be.Class == broker.ClassRateLimited) {
		return connections.LoginBrokerFailure
	}
	return connections.LoginFailed
}

var notBoundPage = template.Must(template.New("").Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>feedgate: {{.}} login not completed</title>
<style>body{font:16px/1.5 system-ui,sans-serif;max-width:40em;margin:3em auto;padding:0 1em;color:#1d2330}code{background:#eef1f6;padding:.1em .3em;border-radius:3px}</style>
</head><body>
<h1>{{.}} login not completed</h1>
<p>This {{.}} login was not started in this browser (or the browser's sign-in
cookie for it has expired), so feedgate <strong>did not connect any {{.}}
account</strong>. Nothing was changed.</p>
<p>This check stops someone else from attaching your {{.}} account to their
feedgate user by sending you a login link they started.</p>
<h2>To finish</h2>
<ul>
<li>If you use the feedgate dashboard: open it in this browser, sign in, and
press <em>Connect</em> (or <em>Reconnect</em>) for {{.}} again.</li>
<li>If you started this login with the feedgate command-line client or a
script: copy the address of this page from the browser's address bar and run
<code>feedgate login --redirect '&lt;the address&gt;'</code>, which completes it
with your own API key.</li>
</ul>
</body></html>
`))

// notBound answers a callback that arrived without the browser binding.
func notBound(w http.ResponseWriter, kind broker.Kind) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(http.StatusForbidden)
	_ = notBoundPage.Execute(w, kind.DisplayName())
}
