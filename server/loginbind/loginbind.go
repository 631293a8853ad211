// Package loginbind binds an OAuth login state to the browser that asked
// for it, against login CSRF: an attacker who starts a login for their own
// feedgate user and gets a victim's browser to finish the broker's login
// would otherwise attach the victim's broker account to the attacker's
// user. When the dashboard asks for a login URL, the response sets an
// HttpOnly, SameSite=Lax cookie holding a hash of the state; the broker's
// redirect back to the callback (a top-level GET, so Lax cookies go with
// it) must carry the cookie that matches the state it brings.
//
// Over https the cookie is "__Host-" prefixed (Secure, Path=/, no Domain),
// so a sibling subdomain cannot plant one. Its path is / either way: behind
// a proxy that adds a path prefix, the callback's path is not the
// gateway's.
package loginbind

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"net/http"
	"time"

	"github.com/feedgate/feedgate/server/broker"
)

// CallbackPath is the gateway's OAuth callback route for broker b.
func CallbackPath(b broker.Kind) string { return "/oauth/" + string(b) + "/callback" }

// CookieName is the binding cookie's name for broker b.
func CookieName(b broker.Kind, secure bool) string {
	if secure {
		return "__Host-feedgate_login_" + string(b)
	}
	return "feedgate_login_" + string(b)
}

// binding is the cookie value for state: its SHA-256, so the cookie alone
// cannot be replayed as a state.
func binding(state string) string {
	h := sha256.Sum256([]byte("feedgate login state\x00" + state))
	return base64.RawURLEncoding.EncodeToString(h[:])
}

// Cookie is the Set-Cookie that binds state, valid until expires, to the
// browser that receives it. secure is whether browsers reach the gateway
// over https.
func Cookie(b broker.Kind, state string, expires time.Time, secure bool) *http.Cookie {
	c := &http.Cookie{
		Name:     CookieName(b, secure),
		Value:    binding(state),
		Path:     "/",
		Expires:  expires,
		MaxAge:   max(1, int(time.Until(expires).Seconds())),
		HttpOnly: true,
		SameSite: http.SameSiteLaxMode,
		Secure:   secure,
	}
	return c
}

// Clear is the Set-Cookie that removes the binding cookie of broker b.
func Clear(b broker.Kind, secure bool) *http.Cookie {
	c := Cookie(b, "", time.Unix(0, 0), secure)
	c.Value, c.MaxAge = "", -1
	return c
}

// Bound reports whether r carries the binding cookie of state.
func Bound(r *http.Request, b broker.Kind, state string) bool {
	want := binding(state)
	for _, secure := range []bool{true, false} {
		for _, c := range r.CookiesNamed(CookieName(b, secure)) {
			if subtle.ConstantTimeCompare([]byte(c.Value), []byte(want)) == 1 {
				return true
			}
		}
	}
	return false
}
