package api

import (
	"errors"
	"fmt"
	"time"

	"connectrpc.com/connect"

	feedgatev1 "github.com/feedgate/feedgate/gen/go/feedgate/v1"
	"github.com/feedgate/feedgate/server/broker"
)

// maxKeyLen bounds one instrument key.
const maxKeyLen = 128

func (d *Deps) client(k broker.Kind) (broker.Client, error) {
	c, ok := d.Brokers[k]
	if !ok {
		return nil, badField("broker", "%s is not configured on this gateway", k.DisplayName())
	}
	return c, nil
}

// offeredKind validates a request's broker field and that this gateway
// offers the broker: one it does not fails with FailedPrecondition and the
// message naming what the operator sets.
func (d *Deps) offeredKind(b feedgatev1.Broker) (broker.Kind, error) {
	kind, err := brokerKind(b)
	if err != nil {
		return "", err
	}
	if msg := d.Offers[kind].NotConfigured; msg != "" {
		return "", connect.NewError(connect.CodeFailedPrecondition, errors.New(msg))
	}
	return kind, nil
}

// brokerClient validates a request's broker field and returns its client.
func (d *Deps) brokerClient(b feedgatev1.Broker) (broker.Kind, broker.Client, error) {
	kind, err := d.offeredKind(b)
	if err != nil {
		return "", nil, err
	}
	c, err := d.client(kind)
	return kind, c, err
}

// validKey checks one instrument key against the broker's format.
func validKey(c broker.Client, field, key string) error {
	if key == "" {
		return badField(field, "required")
	}
	if len(key) > maxKeyLen {
		return badField(field, "longer than %d bytes", maxKeyLen)
	}
	if err := c.ValidateInstrumentKey(key); err != nil {
		msg := err.Error()
		if be, ok := broker.AsError(err); ok && be.Message != "" {
			msg = be.Message
		}
		return badField(field, "%q is not a %s instrument key: %s", key, c.Kind().DisplayName(), msg)
	}
	return nil
}

// validKeys checks a key list: 1 to max keys, each valid. It returns the
// keys without duplicates, in first-seen order.
func validKeys(c broker.Client, field string, keys []string, max int) ([]string, error) {
	if len(keys) == 0 {
		return nil, badField(field, "at least one instrument key is required")
	}
	if len(keys) > max {
		return nil, badField(field, "%d keys: at most %d", len(keys), max)
	}
	seen := make(map[string]struct{}, len(keys))
	out := make([]string, 0, len(keys))
	for i, k := range keys {
		if err := validKey(c, fmt.Sprintf("%s[%d]", field, i), k); err != nil {
			return nil, err
		}
		if _, dup := seen[k]; !dup {
			seen[k] = struct{}{}
			out = append(out, k)
		}
	}
	return out, nil
}

// validDate checks a YYYY-MM-DD date.
func validDate(field, s string) error {
	if s == "" {
		return badField(field, "required, as YYYY-MM-DD")
	}
	t, err := time.Parse(time.DateOnly, s)
	if err != nil || t.Format(time.DateOnly) != s {
		return badField(field, "%q is not a date as YYYY-MM-DD", truncate(s, 32))
	}
	if t.Year() < 2000 || t.Year() > 2100 {
		return badField(field, "%q is out of range", s)
	}
	return nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
