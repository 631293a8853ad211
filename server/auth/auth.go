// Package auth provides feedgate API keys: their generation and hashing,
// user creation, and the connect interceptor that authenticates every
// feedgate RPC and keeps AdminService to admin keys.
package auth

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode"

	"github.com/feedgate/feedgate/server/secret"
	"github.com/feedgate/feedgate/server/store"
)

// KeyPrefix starts every feedgate API key, so a leaked key is recognisable
// by secret scanners.
const KeyPrefix = "fgk_"

// NewKey returns a fresh random API key and its hash.
func NewKey() (secret.Value, [32]byte, error) {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return secret.Value{}, [32]byte{}, err
	}
	key := KeyPrefix + base64.RawURLEncoding.EncodeToString(b[:])
	return secret.New(key), HashKey(key), nil
}

// keyLen is the length of every key NewKey makes: the prefix and the
// unpadded base64url of 32 bytes.
const keyLen = len(KeyPrefix) + 43

// Plausible reports whether key has the shape of a feedgate API key, so
// a request with garbage in its Authorization header is refused without a
// database lookup.
func Plausible(key string) bool {
	if len(key) != keyLen || !strings.HasPrefix(key, KeyPrefix) {
		return false
	}
	for _, r := range key[len(KeyPrefix):] {
		if !(r >= 'A' && r <= 'Z' || r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
			return false
		}
	}
	return true
}

// HashKey returns the SHA-256 hash under which a key is stored.
func HashKey(key string) [32]byte { return sha256.Sum256([]byte(key)) }

// ErrBadName means a user name is empty, too long or has odd characters.
var ErrBadName = errors.New("name must be 1-64 letters, digits, '.', '-', '_' or '@'")

// ValidName reports whether name is acceptable as a user name.
func ValidName(name string) bool {
	if name == "" || len(name) > 64 {
		return false
	}
	for _, r := range name {
		if !(unicode.IsLetter(r) || unicode.IsDigit(r) || strings.ContainsRune(".-_@", r)) {
			return false
		}
	}
	return true
}

// CreateUser creates a user with a fresh API key and returns the key. The
// key is shown once; only its hash is stored.
func CreateUser(ctx context.Context, st store.Store, name string, admin bool, now time.Time) (store.User, secret.Value, error) {
	if !ValidName(name) {
		return store.User{}, secret.Value{}, fmt.Errorf("user name %q: %w", name, ErrBadName)
	}
	key, hash, err := NewKey()
	if err != nil {
		return store.User{}, secret.Value{}, err
	}
	var id [8]byte
	if _, err := rand.Read(id[:]); err != nil {
		return store.User{}, secret.Value{}, err
	}
	u := store.User{ID: "u_" + hex.EncodeToString(id[:]), Name: name, Admin: admin, KeyHash: hash, CreatedAt: now.UTC()}
	if err := st.CreateUser(ctx, u); err != nil {
		return store.User{}, secret.Value{}, err
	}
	return u, key, nil
}

// Lookup finds the active user holding key. It returns store.ErrNotFound for
// an unknown key and ErrRevoked for a revoked one.
func Lookup(ctx context.Context, st store.Store, key string) (store.User, error) {
	h := HashKey(key)
	u, err := st.UserByKeyHash(ctx, h)
	if err != nil {
		return store.User{}, err
	}
	// The lookup is by hash; compare again in constant time so no code path
	// depends on a byte-wise comparison of key material.
	if subtle.ConstantTimeCompare(u.KeyHash[:], h[:]) != 1 {
		return store.User{}, store.ErrNotFound
	}
	if !u.Active() {
		return store.User{}, ErrRevoked
	}
	return u, nil
}

// ErrRevoked means the key was revoked.
var ErrRevoked = errors.New("API key revoked")
