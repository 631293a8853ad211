package seal

import (
	"bytes"
	"errors"
	"testing"
)

// fuzzKeys are fixed so that failing inputs replay.
var fuzzKeys = [2][]byte{bytes.Repeat([]byte{0x11}, KeyLen), bytes.Repeat([]byte{0x22}, KeyLen)}

// FuzzSealOpen proves the sealed-token envelope's contract on arbitrary
// tokens and row identities: Open(Seal(x)) == x; the value opens under its
// own identity only; any flipped bit, truncation or extension makes it fail;
// a sealer without the key refuses it as an unknown key, a sealer that holds
// it among others (rotation) opens it; arbitrary bytes never open and never
// panic.
func FuzzSealOpen(f *testing.F) {
	f.Add([]byte("eyJhbGciOiJIUzI1NiJ9.token"), "u_1/upstox", "u_2/upstox", uint(0), []byte{1})
	f.Add([]byte(""), "", "u_1/fyers", uint(77), []byte{})
	f.Add([]byte("upx-SECRET-7f9a2c"), "u_1/upstox", "u_1/upstoy", uint(1000), bytes.Repeat([]byte{1}, 40))
	f.Add(bytes.Repeat([]byte{0}, 4096), "u_ab/fyers", "u_a/bfyers", uint(12345), []byte{version, 1, 2, 3})
	f.Fuzz(func(t *testing.T, plain []byte, identity, other string, bit uint, junk []byte) {
		s, err := New(fuzzKeys[0])
		if err != nil {
			t.Fatal(err)
		}
		sealed, err := s.Seal(plain, identity)
		if err != nil {
			t.Fatal(err)
		}
		got, err := s.Open(sealed, identity)
		if err != nil || !bytes.Equal(got, plain) {
			t.Fatalf("Open(Seal(x)) = %q, %v", got, err)
		}
		if len(plain) >= 8 && bytes.Contains(sealed, plain) {
			t.Fatal("plaintext visible in the sealed value")
		}
		if id, ok := SealedKeyID(sealed); !ok || id != s.PrimaryKeyID() {
			t.Fatalf("SealedKeyID = %q, %v", id, ok)
		}
		if other != identity {
			if _, err := s.Open(sealed, other); !errors.Is(err, ErrCorrupt) {
				t.Fatalf("opened under identity %q (sealed for %q): %v", other, identity, err)
			}
		}
		flipped := bytes.Clone(sealed)
		i := bit % uint(len(sealed)*8)
		flipped[i/8] ^= 1 << (i % 8)
		if _, err := s.Open(flipped, identity); err == nil {
			t.Fatalf("bit %d flipped still opens", i)
		}
		cut := int(bit % uint(len(sealed)))
		if _, err := s.Open(sealed[:cut], identity); err == nil {
			t.Fatalf("truncated to %d bytes still opens", cut)
		}
		if _, err := s.Open(append(bytes.Clone(sealed), junk...), identity); err == nil && len(junk) > 0 {
			t.Fatal("extended value still opens")
		}
		stranger, _ := New(fuzzKeys[1])
		if _, err := stranger.Open(sealed, identity); !errors.Is(err, ErrUnknownKey) {
			t.Fatalf("a sealer without the key: %v", err)
		}
		rotated, _ := New(fuzzKeys[1], fuzzKeys[0])
		if got, err := rotated.Open(sealed, identity); err != nil || !bytes.Equal(got, plain) {
			t.Fatalf("after rotation: %q, %v", got, err)
		}
		if _, err := s.Open(junk, identity); err == nil {
			t.Fatalf("arbitrary bytes %x opened", junk)
		}
	})
}
