package broker

import (
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/feedgate/feedgate/server/ratelimit"
)

// CallerConfig is what an adapter's constructor needs to build its Caller.
type CallerConfig struct {
	Broker   Kind
	Classify Classifier
	// BaseURL must be an absolute http(s) URL.
	BaseURL string
	// HTTPClient defaults to a client with a 30 s timeout.
	HTTPClient *http.Client
	// Now defaults to time.Now.
	Now func() time.Time
	// Limits are the per-user rate limits.
	Limits []ratelimit.Window
}

// NewCaller validates an adapter's base URL and builds its Caller with the
// per-user rate limiter. It returns the base URL without a trailing slash.
func NewCaller(c CallerConfig) (*Caller, string, error) {
	u, err := url.Parse(c.BaseURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, "", fmt.Errorf("%s: BaseURL must be an absolute http(s) URL", c.Broker)
	}
	if c.HTTPClient == nil {
		c.HTTPClient = &http.Client{Timeout: 30 * time.Second}
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	lim, err := ratelimit.New(c.Limits)
	if err != nil {
		return nil, "", err
	}
	return &Caller{Broker: c.Broker, Classify: c.Classify, HTTPClient: c.HTTPClient, Limiter: lim, Now: c.Now},
		strings.TrimRight(c.BaseURL, "/"), nil
}

// UniqueKeys checks a quotes call's keys (at most MaxQuoteKeys, each valid
// by validate) and returns them without duplicates, in first-seen order.
// Failures are ClassBadInput on instrument_keys.
func UniqueKeys(kind Kind, op string, keys []string, validate func(string) error) ([]string, error) {
	bad := func(msg string) error {
		return &Error{Broker: kind, Class: ClassBadInput, Op: op, Field: "instrument_keys", Message: msg}
	}
	if len(keys) > MaxQuoteKeys {
		return nil, bad(fmt.Sprintf("at most %d instrument keys", MaxQuoteKeys))
	}
	uniq := make([]string, 0, len(keys))
	seen := make(map[string]bool, len(keys))
	for _, k := range keys {
		if err := validate(k); err != nil {
			return nil, bad(err.Error())
		}
		if !seen[k] {
			seen[k] = true
			uniq = append(uniq, k)
		}
	}
	return uniq, nil
}

// RequireAppID reports a missing app id / client id.
func RequireAppID(kind Kind, field, v string) error {
	if v == "" {
		return fmt.Errorf("%s: %s is required", kind, field)
	}
	return nil
}
