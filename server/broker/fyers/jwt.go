package fyers

import (
	"encoding/base64"
	"encoding/json"
	"math"
	"strings"
	"time"
)

// claims are the parts of a Fyers access token's JWT payload feedgate reads.
type claims struct {
	Exp  float64 `json:"exp"`
	FyID string  `json:"fy_id"`
}

// expiry returns exp as a time, zero when absent.
func (c claims) expiry() time.Time {
	if c.Exp <= 0 || c.Exp > math.MaxInt32*4 {
		return time.Time{}
	}
	return time.Unix(int64(c.Exp), 0)
}

// jwtClaims decodes token's payload without verifying the signature.
func jwtClaims(token string) (claims, bool) {
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return claims{}, false
	}
	raw, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(parts[1], "="))
	if err != nil {
		return claims{}, false
	}
	var c claims
	if err := json.Unmarshal(raw, &c); err != nil {
		return claims{}, false
	}
	return c, true
}
