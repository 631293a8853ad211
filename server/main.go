// Command server runs feedgate.
//
//	go run ./server                      serve (the same as "serve")
//	go run ./server serve [flags]        serve the gateway; --help lists every setting
//	go run ./server users create --name NAME [--admin] [--data-dir DIR]
//	go run ./server users list [--data-dir DIR]
//	go run ./server users revoke --name NAME [--data-dir DIR]
//	go run ./server sandbox [--addr 127.0.0.1:8090] [--data-dir DIR]
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
	stop()
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(0)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "feedgate:", err)
		os.Exit(1)
	}
}

const usage = `feedgate: a market-data gateway for Indian brokers.

Commands:
  serve      serve the gateway (the default); "serve --help" lists every setting
  users      create, list or revoke feedgate users and their API keys
  sandbox    run the sandbox broker alone
`

// run dispatches a command line. It is main without the process globals.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	cmd := "serve"
	if len(args) > 0 && (args[0] == "" || args[0][0] != '-') {
		cmd, args = args[0], args[1:]
	}
	switch cmd {
	case "serve":
		return serve(ctx, args, getenv, stdout, stderr)
	case "users":
		return users(ctx, args, getenv, stdout, stderr)
	case "sandbox":
		return sandbox(ctx, args, getenv, stderr)
	case "help":
		fmt.Fprint(stdout, usage)
		return nil
	}
	fmt.Fprint(stderr, usage)
	return fmt.Errorf("unknown command %q", cmd)
}

func newLogger(w io.Writer, level slog.Level, format string) *slog.Logger {
	opts := &slog.HandlerOptions{Level: level}
	if format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}
