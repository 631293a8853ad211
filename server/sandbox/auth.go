package sandbox

import (
	"crypto/rand"
	"net/http"
	"strings"
	"sync"
	"time"
)

// codeTTL is how long an unused login or feed code stays valid.
const codeTTL = 10 * time.Minute

// grant is what a single-use code stands for.
type grant struct {
	broker      Broker
	account     string
	redirectURI string // login codes: the dialog's redirect_uri
	token       string // feed codes: the token that authorized it (memory only)
	requestID   string // feed codes
	issued      time.Time
}

// codes holds outstanding single-use codes (login and feed). They live in
// memory only: a restart forgets them, as a real broker's short-lived codes
// would be forgotten by a client anyway.
type codes struct {
	mu sync.Mutex
	m  map[string]grant
}

func newCodes() *codes { return &codes{m: map[string]grant{}} }

// issue stores g under a new random code and returns the code.
func (c *codes) issue(g grant) string {
	code := rand.Text()
	c.mu.Lock()
	c.m[code] = g
	c.mu.Unlock()
	return code
}

// take removes code and returns its grant if it was live at now: every
// code works at most once, whether or not its use then succeeds.
func (c *codes) take(code string, now time.Time) (grant, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	g, ok := c.m[code]
	if !ok {
		return grant{}, false
	}
	delete(c.m, code)
	if now.Sub(g.issued) > codeTTL {
		return grant{}, false
	}
	return g, true
}

// newOpaqueToken returns a random opaque token (Upstox).
func newOpaqueToken() string { return rand.Text() + rand.Text() }

// bearer extracts the token of "Authorization: Bearer <token>".
func bearer(r *http.Request) string {
	h := r.Header.Get("Authorization")
	if len(h) > 7 && strings.EqualFold(h[:7], "bearer ") {
		return strings.TrimSpace(h[7:])
	}
	return ""
}
