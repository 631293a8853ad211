package main

import (
	"context"
	"io"

	"github.com/feedgate/feedgate/server/config"
	"github.com/feedgate/feedgate/server/gateway"
)

func serve(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	cfg, err := config.Load("feedgate serve", args, getenv, stderr)
	if err != nil {
		return err
	}
	logger := newLogger(stderr, cfg.LogLevel, cfg.LogFormat)
	g, err := gateway.New(ctx, cfg, gateway.Options{Logger: logger, Stdout: stdout})
	if err != nil {
		return err
	}
	return g.Run(ctx)
}
