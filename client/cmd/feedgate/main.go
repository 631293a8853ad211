// Command feedgate is a command-line client of the feedgate market-data
// gateway: connection status, broker login, option chains, quotes and live
// ticks. Run "feedgate help" for its commands, flags and exit codes.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
