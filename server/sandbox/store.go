package sandbox

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// stateFile is the name of the persisted state inside Config.DataDir.
const stateFile = "sandbox.json"

// tokenState is the fate of an issued token.
type tokenState string

const (
	stateActive    tokenState = "active"
	stateRevoked   tokenState = "revoked"
	stateExpired   tokenState = "expired"
	stateLoggedOut tokenState = "logged_out"
)

// tokenRecord is what the sandbox keeps about one issued token. The token
// itself is never stored, only its SHA-256.
type tokenRecord struct {
	Broker  Broker     `json:"broker"`
	Account string     `json:"account"`
	Kind    string     `json:"kind"` // access, extended, refresh
	Issued  time.Time  `json:"issued"`
	Expires time.Time  `json:"expires"`
	State   tokenState `json:"state"`
}

// persisted is the JSON document in stateFile.
type persisted struct {
	Tokens map[string]*tokenRecord `json:"tokens"` // sha256 hex -> record
}

// store holds issued tokens and writes them through to disk on every
// change. It is safe for concurrent use.
type store struct {
	path string // "" = memory only
	mu   sync.Mutex
	data persisted
}

func openStore(dir string) (*store, error) {
	s := &store{data: persisted{Tokens: map[string]*tokenRecord{}}}
	if dir == "" {
		return s, nil
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("sandbox: data dir: %w", err)
	}
	s.path = filepath.Join(dir, stateFile)
	b, err := os.ReadFile(s.path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return s, nil
	case err != nil:
		return nil, fmt.Errorf("sandbox: read state: %w", err)
	}
	if err := json.Unmarshal(b, &s.data); err != nil {
		return nil, fmt.Errorf("sandbox: parse %s: %w", s.path, err)
	}
	if s.data.Tokens == nil {
		s.data.Tokens = map[string]*tokenRecord{}
	}
	return s, nil
}

func hashToken(tok string) string {
	h := sha256.Sum256([]byte(tok))
	return hex.EncodeToString(h[:])
}

// add records a newly issued token.
func (s *store) add(tok string, rec tokenRecord) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := rec
	s.data.Tokens[hashToken(tok)] = &r
	return s.saveLocked()
}

// lookup returns a copy of the record of tok, if it was issued.
func (s *store) lookup(tok string) (tokenRecord, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r, ok := s.data.Tokens[hashToken(tok)]
	if !ok {
		return tokenRecord{}, false
	}
	return *r, true
}

// setState changes one token's state (logout).
func (s *store) setState(tok string, st tokenState) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	r, ok := s.data.Tokens[hashToken(tok)]
	if !ok {
		return nil
	}
	r.State = st
	return s.saveLocked()
}

// killAccount moves every active token of account at b to st.
func (s *store) killAccount(b Broker, account string, st tokenState) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, r := range s.data.Tokens {
		if r.Broker == b && r.Account == account && r.State == stateActive {
			r.State = st
		}
	}
	return s.saveLocked()
}

// accounts lists the accounts that hold tokens, per broker.
func (s *store) accounts() map[Broker][]string {
	s.mu.Lock()
	defer s.mu.Unlock()
	seen := map[string]bool{}
	out := map[Broker][]string{}
	for _, r := range s.data.Tokens {
		k := string(r.Broker) + "\x00" + r.Account
		if !seen[k] {
			seen[k] = true
			out[r.Broker] = append(out[r.Broker], r.Account)
		}
	}
	return out
}

// saveLocked writes the state atomically: temp file, fsync, rename, and an
// fsync of the directory so the rename itself is durable.
func (s *store) saveLocked() error {
	if s.path == "" {
		return nil
	}
	b, err := json.MarshalIndent(&s.data, "", "  ")
	if err != nil {
		return err
	}
	dir := filepath.Dir(s.path)
	f, err := os.CreateTemp(dir, stateFile+".tmp*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	_, err = f.Write(b)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, s.path)
	}
	if err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("sandbox: write state: %w", err)
	}
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		_ = d.Close()
	}
	return nil
}

// authState is the verdict on a presented token.
type authState int

const (
	authOK authState = iota
	authUnknown
	authRevoked // revoked or logged out
	authExpired
)

// check judges tok for broker b at time now.
func (s *store) check(b Broker, tok string, now time.Time) (tokenRecord, authState) {
	r, ok := s.lookup(tok)
	if !ok || r.Broker != b {
		return r, authUnknown
	}
	switch r.State {
	case stateRevoked, stateLoggedOut:
		return r, authRevoked
	case stateExpired:
		return r, authExpired
	}
	if !now.Before(r.Expires) {
		return r, authExpired
	}
	return r, authOK
}

// upstoxExpiry is when an Upstox access token issued at t dies: the next
// 03:30 IST strictly after t (so 02:30 dies at 03:30 the same morning).
func upstoxExpiry(t time.Time) time.Time { return nextISTClock(t, 3, 30) }

// fyersExpiryHour is the IST hour at which a Fyers access token's JWT exp
// falls: the next 06:00 IST after issue. UNCONFIRMED (brokers.md §2.3).
const fyersExpiryHour = 6

func fyersExpiry(t time.Time) time.Time { return nextISTClock(t, fyersExpiryHour, 0) }

// nextISTClock returns the first hh:mm IST strictly after t.
func nextISTClock(t time.Time, hh, mm int) time.Time {
	l := t.In(ist)
	c := time.Date(l.Year(), l.Month(), l.Day(), hh, mm, 0, 0, ist)
	if !c.After(t) {
		c = c.AddDate(0, 0, 1)
	}
	return c
}
