package seal

import (
	"bytes"
	"crypto/rand"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func key(t testing.TB) []byte {
	k := make([]byte, KeyLen)
	if _, err := rand.Read(k); err != nil {
		t.Fatal(err)
	}
	return k
}

func TestRoundTripAndTamper(t *testing.T) {
	t.Parallel()
	s, err := New(key(t))
	if err != nil {
		t.Fatal(err)
	}
	plain := []byte("eyJhbGciOiJIUzI1NiJ9.token")
	sealed, err := s.Seal(plain, "u_1/upstox")
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(sealed, plain) {
		t.Fatal("plaintext visible in sealed value")
	}
	again, _ := s.Seal(plain, "u_1/upstox")
	if bytes.Equal(sealed, again) {
		t.Error("two seals of one value are equal: nonce reused")
	}
	got, err := s.Open(sealed, "u_1/upstox")
	if err != nil || !bytes.Equal(got, plain) {
		t.Fatalf("Open = %q, %v", got, err)
	}
	if _, err := s.Open(sealed, "u_2/upstox"); !errors.Is(err, ErrCorrupt) {
		t.Errorf("another row's identity opened it: %v", err)
	}
	for i := 0; i < len(sealed)*8; i++ {
		c := bytes.Clone(sealed)
		c[i/8] ^= 1 << (i % 8)
		if _, err := s.Open(c, "u_1/upstox"); err == nil {
			t.Fatalf("flipped bit %d still opens", i)
		}
	}
	if _, err := s.Open(sealed[:10], "u_1/upstox"); !errors.Is(err, ErrCorrupt) {
		t.Errorf("truncated: %v", err)
	}
}

func TestRotation(t *testing.T) {
	t.Parallel()
	oldK, newK := key(t), key(t)
	old, _ := New(oldK)
	sealed, _ := old.Seal([]byte("tok"), "id")
	rotated, err := New(newK, oldK)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := rotated.Open(sealed, "id"); err != nil || string(got) != "tok" {
		t.Errorf("rotated keyring cannot open old value: %v", err)
	}
	fresh, _ := rotated.Seal([]byte("tok"), "id")
	if id, _ := SealedKeyID(fresh); id != KeyID(newK) || rotated.PrimaryKeyID() != KeyID(newK) {
		t.Errorf("new values must use the first key")
	}
	onlyNew, _ := New(newK)
	if _, err := onlyNew.Open(sealed, "id"); !errors.Is(err, ErrUnknownKey) {
		t.Errorf("missing old key: %v", err)
	}
	if _, err := New([]byte("short")); err == nil {
		t.Error("short key accepted")
	}
}

func TestKeyFile(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "d", KeyFileName)
	if _, err := ReadKeyFile(path); !errors.Is(err, ErrNoKeyFile) {
		t.Fatalf("missing: %v", err)
	}
	k, err := CreateKeyFile(path)
	if err != nil {
		t.Fatal(err)
	}
	fi, _ := os.Stat(path)
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("mode %v, want 0600", fi.Mode().Perm())
	}
	got, err := ReadKeyFile(path)
	if err != nil || !bytes.Equal(got, k) {
		t.Errorf("ReadKeyFile = %v", err)
	}
	if _, err := CreateKeyFile(path); err == nil {
		t.Error("CreateKeyFile overwrote an existing key")
	}
	_ = os.Chmod(path, 0o644)
	if _, err := ReadKeyFile(path); err == nil {
		t.Error("world-readable key file accepted")
	}
	_ = os.WriteFile(path, []byte("garbage"), 0o600)
	_ = os.Chmod(path, 0o600)
	if _, err := ReadKeyFile(path); err == nil {
		t.Error("corrupt key file accepted")
	}
}

func BenchmarkSeal(b *testing.B) {
	s, _ := New(key(b))
	plain := bytes.Repeat([]byte("t"), 600)
	b.ReportAllocs()
	for b.Loop() {
		_, _ = s.Seal(plain, "u_0123456789abcdef/upstox")
	}
}

func BenchmarkOpen(b *testing.B) {
	s, _ := New(key(b))
	sealed, _ := s.Seal(bytes.Repeat([]byte("t"), 600), "u_0123456789abcdef/upstox")
	b.ReportAllocs()
	for b.Loop() {
		_, _ = s.Open(sealed, "u_0123456789abcdef/upstox")
	}
}
