package loginbind_test

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/feedgate/feedgate/server/broker"
	"github.com/feedgate/feedgate/server/loginbind"
)

func TestCookieBindsOneStateToOneBroker(t *testing.T) {
	exp := time.Now().Add(10 * time.Minute)
	for _, secure := range []bool{false, true} {
		c := loginbind.Cookie(broker.Upstox, "state-1", exp, secure)
		if !c.HttpOnly || c.SameSite != http.SameSiteLaxMode || c.Secure != secure || c.Path != "/" || c.Domain != "" {
			t.Errorf("secure=%v: cookie %s", secure, c)
		}
		if secure != strings.HasPrefix(c.Name, "__Host-") {
			t.Errorf("secure=%v: name %q", secure, c.Name)
		}
		if strings.Contains(c.Value, "state-1") {
			t.Errorf("the cookie holds the state itself: %q", c.Value)
		}
		req := func(cs ...*http.Cookie) *http.Request {
			r := httptest.NewRequest(http.MethodGet, loginbind.CallbackPath(broker.Upstox), nil)
			for _, c := range cs {
				r.AddCookie(c)
			}
			return r
		}
		if !loginbind.Bound(req(c), broker.Upstox, "state-1") {
			t.Errorf("secure=%v: the binding of the state is not accepted", secure)
		}
		other := loginbind.Cookie(broker.Upstox, "state-2", exp, secure)
		for name, r := range map[string]*http.Request{
			"no cookie":          req(),
			"another state's":    req(other),
			"another broker's":   req(loginbind.Cookie(broker.Fyers, "state-1", exp, secure)),
			"the state as value": req(&http.Cookie{Name: c.Name, Value: "state-1"}),
			"a cleared binding":  req(loginbind.Clear(broker.Upstox, secure)),
		} {
			if loginbind.Bound(r, broker.Upstox, "state-1") {
				t.Errorf("secure=%v: %s cookie accepted", secure, name)
			}
		}
		if !loginbind.Bound(req(other, c), broker.Upstox, "state-1") {
			t.Errorf("secure=%v: the right cookie among others is not found", secure)
		}
	}
}
