package gateway

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"time"

	"github.com/feedgate/feedgate/server/broker"
	"github.com/feedgate/feedgate/server/connections"
)

func callbackPath(k broker.Kind) string { return "/oauth/" + string(k) + "/callback" }

// oauthCallback completes a login from the broker's browser redirect. The
// state (single-use, bound to one user and broker) identifies the user.
// It always redirects to the dashboard's own page, never to a URL taken
// from the request, so it cannot be an open redirect.
func (g *Gateway) oauthCallback(kind broker.Kind) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet {
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		q := r.URL.Query()
		code := q.Get("code")
		if kind == broker.Fyers {
			code = q.Get("auth_code") // Fyers sends code=200 and the auth code as auth_code
		}
		dest := url.Values{}
		ctx, cancel := context.WithTimeout(r.Context(), 30*time.Second)
		defer cancel()
		var err error
		if q.Get("error") != "" || (kind == broker.Fyers && q.Get("s") == "error") {
			err = &connections.LoginError{Field: "code", Msg: "the broker did not approve the login"}
		} else {
			_, err = g.conns.CompleteLogin(ctx, "", kind, code, q.Get("state"))
		}
		if err != nil {
			var le *connections.LoginError
			msg := "the login could not be completed: try again"
			if errors.As(err, &le) {
				msg = le.Error()
			}
			g.opts.Logger.Warn("OAuth callback failed", "broker", kind, "err", err)
			dest.Set("login_error", msg)
			dest.Set("broker", string(kind))
		} else {
			dest.Set("connected", string(kind))
		}
		w.Header().Set("Cache-Control", "no-store")
		w.Header().Set("Referrer-Policy", "no-referrer")
		http.Redirect(w, r, "/#/auth?"+dest.Encode(), http.StatusSeeOther)
	})
}
