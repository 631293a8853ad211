// Package config turns flags and FEEDGATE_* environment variables into one
// validated Config. Every setting has a flag, an environment variable named
// after it (--data-dir is FEEDGATE_DATA_DIR) and a default shown by --help;
// a flag wins over the environment. Secrets come from the environment only,
// so they never show in a process listing.
package config

import (
	"encoding/base64"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"strings"
	"time"

	"github.com/feedgate/feedgate/server/secret"
)

// Broker holds one broker app's settings. A broker without credentials is
// served by the sandbox broker when Config.Sandbox names it, and is not
// offered at all otherwise.
type Broker struct {
	ClientID     string
	ClientSecret secret.Value
	RedirectURL  string
	BaseURL      string
}

// Real reports whether real broker app credentials are configured.
func (b Broker) Real() bool { return b.ClientID != "" }

// Config is the gateway's whole configuration.
type Config struct {
	Addr        string
	DataDir     string
	SandboxAddr string
	PublicURL   string
	LogLevel    slog.Level
	LogFormat   string
	TokenKey    secret.Value

	Upstox Broker
	Fyers  Broker
	// Sandbox names the brokers the in-process sandbox serves ("upstox",
	// "fyers"), resolved by Load: what --sandbox says, or, without the
	// flag, both brokers when no real broker app is configured (demo mode)
	// and none once one is.
	Sandbox []string

	HeartbeatInterval     time.Duration
	ValidationInterval    time.Duration
	ValidationTTL         time.Duration
	ValidationConcurrency int
	ShutdownTimeout       time.Duration
	SandboxFeedInterval   time.Duration
	KeyRecheckInterval    time.Duration

	// Per-user limits.
	MaxStreamsPerUser  int
	MaxWatchersPerUser int
	MaxPendingLogins   int
	// Per-peer limits: open connections (0: from the descriptor limit) and
	// per remote address (-1: none).
	MaxConns        int
	MaxConnsPerAddr int
}

// Defaults of the settings.
const (
	DefaultAddr        = "127.0.0.1:8080"
	DefaultDataDir     = "./data"
	DefaultSandboxAddr = "127.0.0.1:8090"
)

// envName is the environment variable of a flag.
func envName(flagName string) string {
	return "FEEDGATE_" + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

type secretEnv struct {
	name, usage string
	dst         *secret.Value
}

// Load parses args (without the program and command names) and the
// environment (getenv, usually os.Getenv) into a validated Config. The
// help text goes to out. It returns flag.ErrHelp for -h/--help.
func Load(name string, args []string, getenv func(string) string, out io.Writer) (Config, error) {
	var c Config
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(out)
	var logLevel, sandboxList string
	str := func(p *string, flagName, def, usage string) { fs.StringVar(p, flagName, def, usage) }
	dur := func(p *time.Duration, flagName string, def time.Duration, usage string) {
		fs.DurationVar(p, flagName, def, usage)
	}
	str(&c.Addr, "addr", DefaultAddr, "address to serve Connect, gRPC and gRPC-Web on (h2c and HTTP/1.1)")
	str(&c.DataDir, "data-dir", DefaultDataDir, "directory for feedgate.db, the token key file and the sandbox's state")
	str(&c.SandboxAddr, "sandbox-addr", DefaultSandboxAddr, "address of the in-process sandbox broker, started when --sandbox names a broker; \"off\" never starts it")
	str(&c.PublicURL, "public-url", "", "base URL browsers use to reach the gateway, for the OAuth callback (default http://<addr>)")
	str(&logLevel, "log-level", "info", "log level: debug, info, warn or error")
	str(&c.LogFormat, "log-format", "text", "log format: text or json")
	str(&c.Upstox.ClientID, "upstox-client-id", "", "Upstox app's API key (client_id); empty: Upstox is the sandbox's in demo mode, or not offered (see --sandbox)")
	str(&c.Upstox.RedirectURL, "upstox-redirect-url", "", "redirect URL registered with the Upstox app (default <public-url>/oauth/upstox/callback)")
	str(&c.Upstox.BaseURL, "upstox-base-url", "", "Upstox API base URL (default https://api.upstox.com, or the sandbox's)")
	str(&c.Fyers.ClientID, "fyers-app-id", "", "Fyers app id (e.g. XXXX-100); empty: Fyers is the sandbox's in demo mode, or not offered (see --sandbox)")
	str(&c.Fyers.RedirectURL, "fyers-redirect-url", "", "redirect URL registered with the Fyers app (default <public-url>/oauth/fyers/callback)")
	str(&c.Fyers.BaseURL, "fyers-base-url", "", "Fyers API base URL (default https://api-t1.fyers.in, or the sandbox's)")
	str(&sandboxList, "sandbox", "", "brokers the in-process sandbox serves with synthetic data, comma-separated (upstox,fyers) or \"none\"; default: both when no real broker app is configured, none once one is")
	dur(&c.HeartbeatInterval, "heartbeat-interval", 15*time.Second, "interval of heartbeat messages on open streams")
	dur(&c.ValidationInterval, "validation-interval", 30*time.Minute, "interval of the sweep that probes every connected broker token")
	dur(&c.ValidationTTL, "validation-ttl", 5*time.Minute, "how long a token validation result is trusted")
	fs.IntVar(&c.ValidationConcurrency, "validation-concurrency", 4, "broker probes run at once by a validation sweep")
	dur(&c.ShutdownTimeout, "shutdown-timeout", 10*time.Second, "how long a graceful shutdown waits for requests to finish")
	dur(&c.SandboxFeedInterval, "sandbox-feed-interval", time.Second, "interval between the sandbox broker's live feed ticks")
	dur(&c.KeyRecheckInterval, "key-recheck-interval", 5*time.Second, "how often the API keys of open streams are checked again, so revoking a key ends its streams")
	fs.IntVar(&c.MaxStreamsPerUser, "max-streams-per-user", 200, "open market-feed streams one user may have")
	fs.IntVar(&c.MaxWatchersPerUser, "max-watchers-per-user", 20, "open WatchConnectionStatus streams one user may have")
	fs.IntVar(&c.MaxPendingLogins, "max-pending-logins", 4, "broker logins (code exchanges) one user may have in progress at once")
	fs.IntVar(&c.MaxConns, "max-conns", 0, "open client connections in all; 0 = three quarters of the descriptor limit")
	fs.IntVar(&c.MaxConnsPerAddr, "max-conns-per-addr", 1024, "open client connections from one IP address; -1 = no limit (behind a proxy)")

	secrets := []secretEnv{
		{"FEEDGATE_TOKEN_KEY", "base64 of 32 bytes: the key that seals broker tokens at rest (default: a key file created in the data directory); \"NEW,OLD\" rotates keys", &c.TokenKey},
		{"FEEDGATE_UPSTOX_CLIENT_SECRET", "Upstox app's API secret", &c.Upstox.ClientSecret},
		{"FEEDGATE_FYERS_SECRET", "Fyers app's secret", &c.Fyers.ClientSecret},
	}
	fs.Usage = func() {
		fmt.Fprintf(out, "Usage: %s [flags]\n\nFlags (each also read from the environment variable shown):\n", name)
		fs.VisitAll(func(f *flag.Flag) {
			def := f.DefValue
			if def == "" {
				def = `""`
			}
			fmt.Fprintf(out, "  --%s (%s)\n      %s (default %s)\n", f.Name, envName(f.Name), f.Usage, def)
		})
		fmt.Fprintf(out, "\nSecrets, from the environment only:\n")
		for _, s := range secrets {
			fmt.Fprintf(out, "  %s\n      %s\n", s.name, s.usage)
		}
	}

	// Environment first, so flags given on the command line win.
	var envErr error
	fs.VisitAll(func(f *flag.Flag) {
		if v := getenv(envName(f.Name)); v != "" {
			if err := f.Value.Set(v); err != nil {
				envErr = errors.Join(envErr, fmt.Errorf("%s=%q: %v", envName(f.Name), v, err))
			}
		}
	})
	if envErr != nil {
		return Config{}, envErr
	}
	if err := fs.Parse(args); err != nil {
		return Config{}, err
	}
	if fs.NArg() > 0 {
		return Config{}, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	for _, s := range secrets {
		*s.dst = secret.New(getenv(s.name))
	}
	if c.Upstox.ClientID != "" && c.Upstox.ClientSecret.IsZero() {
		return Config{}, errors.New("--upstox-client-id is set but FEEDGATE_UPSTOX_CLIENT_SECRET is empty")
	}
	if c.Fyers.ClientID != "" && c.Fyers.ClientSecret.IsZero() {
		return Config{}, errors.New("--fyers-app-id is set but FEEDGATE_FYERS_SECRET is empty")
	}
	if err := c.LogLevel.UnmarshalText([]byte(logLevel)); err != nil {
		return Config{}, fmt.Errorf("--log-level %q: want debug, info, warn or error", logLevel)
	}
	sandboxSet := false
	fs.Visit(func(f *flag.Flag) { sandboxSet = sandboxSet || f.Name == "sandbox" })
	sandboxSet = sandboxSet || getenv(envName("sandbox")) != ""
	sb, err := c.resolveSandbox(sandboxList, sandboxSet)
	if err != nil {
		return Config{}, err
	}
	c.Sandbox = sb
	return c, c.Validate()
}

// BrokerNames are the brokers a configuration can name, in order.
var BrokerNames = []string{"upstox", "fyers"}

// Broker returns the settings of the broker named name ("upstox", "fyers").
func (c *Config) Broker(name string) Broker {
	if name == "fyers" {
		return c.Fyers
	}
	return c.Upstox
}

// Sandboxed reports whether the sandbox serves the broker named name.
func (c *Config) Sandboxed(name string) bool {
	for _, b := range c.Sandbox {
		if b == name {
			return true
		}
	}
	return false
}

// resolveSandbox turns the --sandbox value into the brokers the sandbox
// serves. A broker with a real app cannot also be the sandbox's: asking for
// both is a mistake worth refusing at startup.
func (c *Config) resolveSandbox(list string, set bool) ([]string, error) {
	if !set {
		if c.Upstox.Real() || c.Fyers.Real() {
			return nil, nil
		}
		return append([]string(nil), BrokerNames...), nil
	}
	if strings.TrimSpace(list) == "none" {
		return nil, nil
	}
	seen := map[string]bool{}
	for _, part := range strings.Split(list, ",") {
		name := strings.ToLower(strings.TrimSpace(part))
		switch {
		case name == "":
			continue
		case name != "upstox" && name != "fyers":
			return nil, fmt.Errorf("--sandbox %q: %q is not a broker (want upstox, fyers or none)", list, part)
		case c.Broker(name).Real():
			return nil, fmt.Errorf("--sandbox %q: %s has a real app configured; the sandbox cannot serve it too", list, name)
		}
		seen[name] = true
	}
	var out []string
	for _, name := range BrokerNames {
		if seen[name] {
			out = append(out, name)
		}
	}
	return out, nil
}

// Validate checks every setting and names the first bad one.
func (c *Config) Validate() error {
	if err := checkAddr("--addr", c.Addr); err != nil {
		return err
	}
	if c.SandboxAddr != "off" {
		if err := checkAddr("--sandbox-addr", c.SandboxAddr); err != nil {
			return err
		}
	} else if len(c.Sandbox) > 0 && (c.Upstox.Real() || c.Fyers.Real()) {
		return fmt.Errorf("--sandbox %s needs the in-process sandbox, but --sandbox-addr is off", strings.Join(c.Sandbox, ","))
	}
	if c.DataDir == "" {
		return errors.New("--data-dir must not be empty")
	}
	if c.LogFormat != "text" && c.LogFormat != "json" {
		return fmt.Errorf("--log-format %q: want text or json", c.LogFormat)
	}
	for _, u := range []struct{ name, v string }{
		{"--public-url", c.PublicURL}, {"--upstox-redirect-url", c.Upstox.RedirectURL}, {"--upstox-base-url", c.Upstox.BaseURL},
		{"--fyers-redirect-url", c.Fyers.RedirectURL}, {"--fyers-base-url", c.Fyers.BaseURL},
	} {
		if u.v == "" {
			continue
		}
		p, err := url.Parse(u.v)
		if err != nil || (p.Scheme != "http" && p.Scheme != "https") || p.Host == "" {
			return fmt.Errorf("%s %q: want an absolute http(s) URL", u.name, u.v)
		}
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{
		{"--heartbeat-interval", c.HeartbeatInterval}, {"--validation-interval", c.ValidationInterval},
		{"--validation-ttl", c.ValidationTTL}, {"--shutdown-timeout", c.ShutdownTimeout},
		{"--sandbox-feed-interval", c.SandboxFeedInterval}, {"--key-recheck-interval", c.KeyRecheckInterval},
	} {
		if d.v <= 0 {
			return fmt.Errorf("%s %s: must be positive", d.name, d.v)
		}
	}
	if c.ValidationConcurrency < 1 || c.ValidationConcurrency > 64 {
		return fmt.Errorf("--validation-concurrency %d: want 1 to 64", c.ValidationConcurrency)
	}
	for _, n := range []struct {
		name string
		v    int
	}{
		{"--max-streams-per-user", c.MaxStreamsPerUser}, {"--max-watchers-per-user", c.MaxWatchersPerUser},
		{"--max-pending-logins", c.MaxPendingLogins},
	} {
		if n.v < 1 {
			return fmt.Errorf("%s %d: must be at least 1", n.name, n.v)
		}
	}
	if c.MaxConns < 0 {
		return fmt.Errorf("--max-conns %d: must not be negative", c.MaxConns)
	}
	if c.MaxConnsPerAddr == 0 || c.MaxConnsPerAddr < -1 {
		return fmt.Errorf("--max-conns-per-addr %d: want a positive number, or -1 for no limit", c.MaxConnsPerAddr)
	}
	if !c.TokenKey.IsZero() {
		if _, err := DecodeTokenKeys(c.TokenKey); err != nil {
			return fmt.Errorf("FEEDGATE_TOKEN_KEY: %v", err)
		}
	}
	return nil
}

func checkAddr(name, addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil || port == "" {
		return fmt.Errorf("%s %q: want host:port", name, addr)
	}
	_ = host
	return nil
}

// SecureCookies reports whether browsers reach the gateway over https.
func (c *Config) SecureCookies() bool {
	return strings.HasPrefix(strings.ToLower(c.PublicURL), "https://")
}

// BaseURL returns the gateway's public base URL without a trailing slash.
func (c *Config) BaseURL() string {
	if c.PublicURL != "" {
		return strings.TrimRight(c.PublicURL, "/")
	}
	return "http://" + c.Addr
}

// DecodeTokenKeys decodes FEEDGATE_TOKEN_KEY: one key, or several
// separated by commas to rotate keys (the first seals new tokens; all of
// them open existing ones).
func DecodeTokenKeys(v secret.Value) ([][]byte, error) {
	var keys [][]byte
	for i, part := range strings.Split(v.Reveal(), ",") {
		k, err := decodeTokenKey(part)
		if err != nil {
			return nil, fmt.Errorf("key %d: %w", i+1, err)
		}
		keys = append(keys, k)
	}
	return keys, nil
}

// decodeTokenKey decodes one key: standard or URL base64 of exactly 32
// bytes.
func decodeTokenKey(s string) ([]byte, error) {
	s = strings.TrimSpace(s)
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		if b, err := enc.DecodeString(s); err == nil {
			if len(b) != 32 {
				return nil, fmt.Errorf("decodes to %d bytes, want 32 (generate one with: openssl rand -base64 32)", len(b))
			}
			return b, nil
		}
	}
	return nil, errors.New("not base64 (generate one with: openssl rand -base64 32)")
}
