// Package seal encrypts broker tokens at rest with AES-256-GCM. A sealed
// value is a self-describing envelope:
//
//	version (1 byte, 1) | key id (8 bytes) | nonce (12 random bytes) | ciphertext+tag
//
// The key id lets keys rotate: a Sealer seals with its first key and opens
// with any key it holds. The caller's row identity is the additional data,
// so a value copied into another row does not open.
package seal

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
)

const (
	version   = 1
	idLen     = 8
	nonceLen  = 12
	headerLen = 1 + idLen + nonceLen
	// KeyLen is the key size: AES-256.
	KeyLen = 32
)

// Errors from Open.
var (
	// ErrUnknownKey means the value was sealed with a key this Sealer lacks.
	ErrUnknownKey = errors.New("seal: sealed with a key that is not configured")
	// ErrCorrupt means the value is malformed, was altered, or belongs to
	// another row.
	ErrCorrupt = errors.New("seal: value is corrupt, altered or from another row")
)

// Sealer seals and opens values. It is safe for concurrent use.
type Sealer struct {
	primary [idLen]byte
	aeads   map[[idLen]byte]cipher.AEAD
}

// KeyID returns a key's public id: the first 8 bytes of its SHA-256.
func KeyID(key []byte) string {
	id := keyID(key)
	return hex.EncodeToString(id[:])
}

func keyID(key []byte) [idLen]byte {
	h := sha256.Sum256(append([]byte("feedgate-seal-key-id:"), key...))
	var id [idLen]byte
	copy(id[:], h[:idLen])
	return id
}

// New returns a Sealer that seals with keys[0] and opens with any of keys.
func New(keys ...[]byte) (*Sealer, error) {
	if len(keys) == 0 {
		return nil, errors.New("seal: no key")
	}
	s := &Sealer{aeads: make(map[[idLen]byte]cipher.AEAD, len(keys))}
	for i, k := range keys {
		if len(k) != KeyLen {
			return nil, fmt.Errorf("seal: key %d is %d bytes, want %d", i, len(k), KeyLen)
		}
		block, err := aes.NewCipher(k)
		if err != nil {
			return nil, err
		}
		aead, err := cipher.NewGCM(block)
		if err != nil {
			return nil, err
		}
		id := keyID(k)
		if i == 0 {
			s.primary = id
		}
		s.aeads[id] = aead
	}
	return s, nil
}

// PrimaryKeyID is the id of the key new values are sealed with.
func (s *Sealer) PrimaryKeyID() string { return hex.EncodeToString(s.primary[:]) }

// Seal encrypts plaintext bound to identity (e.g. "user_id/broker").
func (s *Sealer) Seal(plaintext []byte, identity string) ([]byte, error) {
	out := make([]byte, headerLen, headerLen+len(plaintext)+16)
	out[0] = version
	copy(out[1:], s.primary[:])
	if _, err := rand.Read(out[1+idLen : headerLen]); err != nil {
		return nil, err
	}
	return s.aeads[s.primary].Seal(out, out[1+idLen:headerLen], plaintext, aad(out[:1+idLen], identity)), nil
}

// Open decrypts a sealed value bound to identity.
func (s *Sealer) Open(sealed []byte, identity string) ([]byte, error) {
	if len(sealed) < headerLen+16 || sealed[0] != version {
		return nil, ErrCorrupt
	}
	var id [idLen]byte
	copy(id[:], sealed[1:1+idLen])
	aead, ok := s.aeads[id]
	if !ok {
		return nil, fmt.Errorf("%w (key id %s)", ErrUnknownKey, hex.EncodeToString(id[:]))
	}
	pt, err := aead.Open(nil, sealed[1+idLen:headerLen], sealed[headerLen:], aad(sealed[:1+idLen], identity))
	if err != nil {
		return nil, ErrCorrupt
	}
	return pt, nil
}

// SealedKeyID returns the key id of a sealed value.
func SealedKeyID(sealed []byte) (string, bool) {
	if len(sealed) < headerLen || sealed[0] != version {
		return "", false
	}
	return hex.EncodeToString(sealed[1 : 1+idLen]), true
}

// aad binds the header (version and key id) and the row identity.
func aad(header []byte, identity string) []byte {
	b := make([]byte, 0, len(header)+len(identity)+8)
	b = append(b, "feedgate"...)
	b = append(b, header...)
	return append(b, identity...)
}
