package config

import (
	"bytes"
	"errors"
	"flag"
	"strings"
	"testing"
	"time"

	"github.com/feedgate/feedgate/server/secret"
)

func env(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

func TestDefaults(t *testing.T) {
	t.Parallel()
	c, err := Load("t", nil, env(nil), &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if c.Addr != DefaultAddr || c.DataDir != DefaultDataDir || c.SandboxAddr != DefaultSandboxAddr ||
		c.HeartbeatInterval != 15*time.Second || c.ValidationInterval != 30*time.Minute || c.ValidationTTL != 5*time.Minute {
		t.Errorf("defaults: %+v", c)
	}
	if c.Upstox.Real() || c.Fyers.Real() {
		t.Error("no broker credentials should mean sandbox")
	}
	if c.BaseURL() != "http://127.0.0.1:8080" {
		t.Errorf("BaseURL = %q", c.BaseURL())
	}
}

func TestFlagBeatsEnvironment(t *testing.T) {
	t.Parallel()
	c, err := Load("t", []string{"--addr", "127.0.0.1:9000"}, env(map[string]string{
		"FEEDGATE_ADDR": "127.0.0.1:7000", "FEEDGATE_DATA_DIR": "/tmp/x", "FEEDGATE_UPSTOX_CLIENT_ID": "abc",
		"FEEDGATE_UPSTOX_CLIENT_SECRET": "s3cret-value",
	}), &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if c.Addr != "127.0.0.1:9000" || c.DataDir != "/tmp/x" || c.Upstox.ClientID != "abc" || c.Upstox.ClientSecret.Reveal() != "s3cret-value" {
		t.Errorf("got %+v", c)
	}
	if strings.Contains(fmtConfig(c), "s3cret-value") {
		t.Error("secret printed")
	}
}

func fmtConfig(c Config) string {
	return strings.Join([]string{c.Upstox.ClientSecret.String(), c.TokenKey.String()}, " ")
}

func TestInvalidValuesNameTheSetting(t *testing.T) {
	t.Parallel()
	cases := []struct {
		args []string
		env  map[string]string
		want string
	}{
		{[]string{"--addr", "nonsense"}, nil, "--addr"},
		{[]string{"--heartbeat-interval", "0s"}, nil, "--heartbeat-interval"},
		{[]string{"--heartbeat-interval", "soon"}, nil, "heartbeat-interval"},
		{nil, map[string]string{"FEEDGATE_VALIDATION_TTL": "forever"}, "FEEDGATE_VALIDATION_TTL"},
		{[]string{"--log-level", "loud"}, nil, "--log-level"},
		{[]string{"--log-format", "xml"}, nil, "--log-format"},
		{[]string{"--validation-concurrency", "0"}, nil, "--validation-concurrency"},
		{[]string{"--public-url", "ftp://x"}, nil, "--public-url"},
		{[]string{"--upstox-client-id", "abc"}, nil, "FEEDGATE_UPSTOX_CLIENT_SECRET"},
		{[]string{"--fyers-app-id", "X-100"}, nil, "FEEDGATE_FYERS_SECRET"},
		{nil, map[string]string{"FEEDGATE_TOKEN_KEY": "c2hvcnQ="}, "FEEDGATE_TOKEN_KEY"},
		{[]string{"stray"}, nil, "stray"},
	}
	for _, c := range cases {
		_, err := Load("t", c.args, env(c.env), &bytes.Buffer{})
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Load(%v, %v) = %v, want an error naming %s", c.args, c.env, err, c.want)
		}
	}
}

func TestHelpListsEverySetting(t *testing.T) {
	t.Parallel()
	var out bytes.Buffer
	_, err := Load("t", []string{"--help"}, env(nil), &out)
	if !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("err = %v", err)
	}
	for _, want := range []string{"--addr", "FEEDGATE_ADDR", "127.0.0.1:8080", "--data-dir", "./data", "--sandbox-addr", "127.0.0.1:8090",
		"FEEDGATE_UPSTOX_CLIENT_ID", "FEEDGATE_UPSTOX_CLIENT_SECRET", "FEEDGATE_UPSTOX_REDIRECT_URL", "FEEDGATE_UPSTOX_BASE_URL",
		"FEEDGATE_FYERS_APP_ID", "FEEDGATE_FYERS_SECRET", "FEEDGATE_FYERS_REDIRECT_URL", "FEEDGATE_FYERS_BASE_URL",
		"FEEDGATE_TOKEN_KEY", "--heartbeat-interval", "15s", "--validation-interval", "30m0s", "--validation-ttl", "5m0s"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("--help lacks %q", want)
		}
	}
}

func TestTokenKeyDecodes(t *testing.T) {
	t.Parallel()
	c, err := Load("t", nil, env(map[string]string{"FEEDGATE_TOKEN_KEY": "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="}), &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	k, err := DecodeTokenKeys(c.TokenKey)
	if err != nil || len(k) != 1 || len(k[0]) != 32 || k[0][31] != 31 {
		t.Errorf("key = %v, %v", k, err)
	}
	two, err := DecodeTokenKeys(secret.New("AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=, AQECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="))
	if err != nil || len(two) != 2 || two[1][0] != 1 {
		t.Errorf("rotation keys = %v, %v", two, err)
	}
	if _, err := DecodeTokenKeys(secret.New("AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=,short")); err == nil || !strings.Contains(err.Error(), "key 2") {
		t.Errorf("a bad second key: %v", err)
	}
}

// TestSandboxResolution: the sandbox serves both brokers only in demo mode
// (no real app); once a real app is configured it serves exactly what
// --sandbox names, never a broker with a real app.
func TestSandboxResolution(t *testing.T) {
	t.Parallel()
	realUpstox := map[string]string{"FEEDGATE_UPSTOX_CLIENT_ID": "abc", "FEEDGATE_UPSTOX_CLIENT_SECRET": "s"}
	cases := []struct {
		name    string
		args    []string
		env     map[string]string
		want    string // comma-joined, or the error's start
		wantErr bool
	}{
		{"demo mode", nil, nil, "upstox,fyers", false},
		{"demo mode, one asked for", []string{"--sandbox", "fyers"}, nil, "fyers", false},
		{"demo mode, none", []string{"--sandbox", "none"}, nil, "", false},
		{"real upstox, no flag", nil, realUpstox, "", false},
		{"real upstox, sandbox fyers", []string{"--sandbox", " Fyers "}, realUpstox, "fyers", false},
		{"real upstox, sandbox from the environment", nil, map[string]string{"FEEDGATE_UPSTOX_CLIENT_ID": "abc", "FEEDGATE_UPSTOX_CLIENT_SECRET": "s", "FEEDGATE_SANDBOX": "fyers"}, "fyers", false},
		{"order and repeats", []string{"--sandbox", "fyers,upstox,fyers"}, nil, "upstox,fyers", false},
		{"real upstox asked of the sandbox", []string{"--sandbox", "upstox,fyers"}, realUpstox, "--sandbox \"upstox,fyers\": upstox has a real app", true},
		{"unknown broker", []string{"--sandbox", "zerodha"}, nil, "--sandbox \"zerodha\": \"zerodha\" is not a broker", true},
		{"sandbox off", []string{"--sandbox", "fyers", "--sandbox-addr", "off"}, realUpstox, "--sandbox fyers needs the in-process sandbox", true},
	}
	for _, tc := range cases {
		c, err := Load("t", tc.args, env(tc.env), &bytes.Buffer{})
		switch {
		case tc.wantErr:
			if err == nil || !strings.HasPrefix(err.Error(), tc.want) {
				t.Errorf("%s: %v, want an error starting %q", tc.name, err, tc.want)
			}
		case err != nil:
			t.Errorf("%s: %v", tc.name, err)
		case strings.Join(c.Sandbox, ",") != tc.want:
			t.Errorf("%s: sandbox serves %q, want %q", tc.name, strings.Join(c.Sandbox, ","), tc.want)
		}
	}
}
