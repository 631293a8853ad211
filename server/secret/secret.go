// Package secret provides a string type for credentials (broker tokens, API
// keys, key material) whose printed, logged and JSON forms are redacted, so a
// secret that reaches a log line or an error message by mistake shows as
// "[REDACTED]".
package secret

import (
	"fmt"
	"log/slog"
)

// Redacted is what every printed form of a Value shows.
const Redacted = "[REDACTED]"

// Value holds a secret string. Its zero value is the empty secret. The only
// way to read it is Reveal, which makes every use of the plaintext explicit.
type Value struct {
	s string
}

// New wraps s.
func New(s string) Value { return Value{s: s} }

// Reveal returns the plaintext. Call it only where the secret leaves the
// process on purpose (an Authorization header, the sealed store column).
func (v Value) Reveal() string { return v.s }

// IsZero reports whether the secret is empty.
func (v Value) IsZero() bool { return v.s == "" }

// Equal reports whether two secrets hold the same plaintext.
func (v Value) Equal(o Value) bool { return v.s == o.s }

// String returns Redacted (or "" for the empty secret).
func (v Value) String() string {
	if v.s == "" {
		return ""
	}
	return Redacted
}

// GoString returns Redacted, so %#v does not leak the value either.
func (v Value) GoString() string { return "secret.Value(" + Redacted + ")" }

// Format makes every fmt verb print the redacted form.
func (v Value) Format(f fmt.State, verb rune) { _, _ = f.Write([]byte(v.String())) }

// LogValue implements slog.LogValuer.
func (v Value) LogValue() slog.Value { return slog.StringValue(v.String()) }

// MarshalJSON writes the redacted form, so a struct holding a secret never
// serialises the plaintext by accident.
func (v Value) MarshalJSON() ([]byte, error) { return []byte(`"` + v.String() + `"`), nil }

// MarshalText writes the redacted form.
func (v Value) MarshalText() ([]byte, error) { return []byte(v.String()), nil }
