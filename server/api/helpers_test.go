package api_test

import (
	"bytes"
	"context"
	"io"
	"testing"

	"github.com/feedgate/feedgate/server/config"
	"github.com/feedgate/feedgate/server/gateway"
)

// startErr tries to build a gateway on dir and returns its error.
func startErr(t *testing.T, dir string, env map[string]string) (*gateway.Gateway, error) {
	t.Helper()
	cfg, err := config.Load("test", []string{"--addr", "127.0.0.1:0", "--data-dir", dir, "--sandbox-addr", "127.0.0.1:0"}, func(k string) string { return env[k] }, io.Discard)
	if err != nil {
		return nil, err
	}
	g, err := gateway.New(context.Background(), cfg, gateway.Options{Stdout: &bytes.Buffer{}})
	if err == nil {
		_ = g.Close()
	}
	return g, err
}
