package sandbox

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"strings"
	"time"
)

// jwtKey signs the sandbox's Fyers JWTs. It is a fixed sandbox value so
// tokens stay verifiable across restarts; tokens are honoured by their
// stored hash, the signature only tells malformed from unknown.
var jwtKey = []byte("feedgate-sandbox-fyers-jwt-key")

// fyersClaims is the payload of a sandbox Fyers token.
type fyersClaims struct {
	Iss         string   `json:"iss"`
	Iat         int64    `json:"iat"`
	Exp         int64    `json:"exp"`
	Nbf         int64    `json:"nbf"`
	Aud         []string `json:"aud"`
	Sub         string   `json:"sub"`
	AtHash      string   `json:"at_hash"`
	DisplayName string   `json:"display_name"`
	FyID        string   `json:"fy_id"`
	HsmKey      string   `json:"hsm_key"`
	AppType     int      `json:"appType"`
	PoaFlag     string   `json:"poa_flag"`
}

var b64 = base64.RawURLEncoding

// signJWT returns an HS256 JWT for c.
func signJWT(c fyersClaims) string {
	head := b64.EncodeToString([]byte(`{"alg":"HS256","typ":"JWT"}`))
	body, _ := json.Marshal(c)
	msg := head + "." + b64.EncodeToString(body)
	m := hmac.New(sha256.New, jwtKey)
	m.Write([]byte(msg))
	return msg + "." + b64.EncodeToString(m.Sum(nil))
}

// parseJWT verifies a sandbox JWT's signature and returns its claims.
func parseJWT(tok string) (fyersClaims, error) {
	var c fyersClaims
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		return c, errors.New("jwt: not three parts")
	}
	sig, err := b64.DecodeString(parts[2])
	if err != nil {
		return c, err
	}
	m := hmac.New(sha256.New, jwtKey)
	m.Write([]byte(parts[0] + "." + parts[1]))
	if !hmac.Equal(sig, m.Sum(nil)) {
		return c, errors.New("jwt: bad signature")
	}
	body, err := b64.DecodeString(parts[1])
	if err != nil {
		return c, err
	}
	return c, json.Unmarshal(body, &c)
}

// newFyersJWT mints a token of kind sub ("access_token", "refresh_token")
// for account, valid from now until exp.
func newFyersJWT(sub, account string, now, exp time.Time) string {
	return signJWT(fyersClaims{
		Iss: "api.fyers.in", Iat: now.Unix(), Exp: exp.Unix(), Nbf: now.Unix(),
		Aud: []string{"d:1", "d:2", "x:0", "x:1", "x:2"}, Sub: sub, AtHash: rand.Text(),
		DisplayName: "Sandbox " + account, FyID: accountUserID("XS", account),
		HsmKey: rand.Text(), AppType: 100, PoaFlag: "N",
	})
}
