package secret

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"testing"
)

func TestValueNeverPrintsPlaintext(t *testing.T) {
	t.Parallel()
	const plain = "eyJhbGciOi-super-secret-token"
	v := New(plain)
	if v.Reveal() != plain {
		t.Fatalf("Reveal = %q", v.Reveal())
	}
	var buf bytes.Buffer
	logger := slog.New(slog.NewJSONHandler(&buf, nil))
	logger.Info("msg", "token", v, "nested", struct{ T Value }{v})
	js, _ := json.Marshal(struct{ Token Value }{v})
	outs := []string{
		fmt.Sprint(v), fmt.Sprintf("%v %+v %#v %s %q %x", v, v, v, v, v, v),
		fmt.Errorf("wrapped: %v", v).Error(), buf.String(), string(js),
	}
	for _, out := range outs {
		if strings.Contains(out, plain) || strings.Contains(out, "super-secret") {
			t.Errorf("plaintext leaked: %s", out)
		}
		if !strings.Contains(out, Redacted) {
			t.Errorf("no redaction marker in %q", out)
		}
	}
	if New("").String() != "" || !New("").IsZero() {
		t.Error("empty secret should print empty")
	}
}
