package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"time"

	"github.com/feedgate/feedgate/server/config"
	sb "github.com/feedgate/feedgate/server/sandbox"
)

// sandbox runs the sandbox broker alone ("feedgate sandbox"), so a gateway
// elsewhere can use it across a real network hop with
// FEEDGATE_UPSTOX_BASE_URL=http://HOST:PORT/upstox and
// FEEDGATE_FYERS_BASE_URL=http://HOST:PORT/fyers (and the sandbox's app
// credentials, which it prints).
func sandbox(ctx context.Context, args []string, getenv func(string) string, stderr io.Writer) error {
	fs := flag.NewFlagSet("feedgate sandbox", flag.ContinueOnError)
	fs.SetOutput(stderr)
	env := func(name, def string) string {
		if v := getenv(name); v != "" {
			return v
		}
		return def
	}
	addr := fs.String("addr", env("FEEDGATE_SANDBOX_ADDR", config.DefaultSandboxAddr), "address to serve the sandbox broker on (FEEDGATE_SANDBOX_ADDR)")
	dataDir := fs.String("data-dir", env("FEEDGATE_DATA_DIR", config.DefaultDataDir), "data directory; the sandbox keeps what it issued in <data-dir>/sandbox (FEEDGATE_DATA_DIR)")
	interval := fs.Duration("feed-interval", time.Second, "interval between live feed ticks")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("sandbox: unexpected argument %q", fs.Arg(0))
	}
	if *interval <= 0 {
		return errors.New("sandbox: --feed-interval must be positive")
	}
	logger := newLogger(stderr, slog.LevelInfo, "text")
	s, err := sb.New(sb.Config{DataDir: filepath.Join(*dataDir, "sandbox"), FeedInterval: *interval, Logger: logger})
	if err != nil {
		return fmt.Errorf("sandbox: %w", err)
	}
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		_ = s.Close()
		return fmt.Errorf("sandbox: --addr %s: %w", *addr, err)
	}
	srv := &http.Server{Handler: s.Handler(), ReadHeaderTimeout: 10 * time.Second}
	base := "http://" + ln.Addr().String()
	fmt.Fprintf(stderr, "feedgate sandbox broker on %s\n"+
		"  point a gateway at it with:\n"+
		"    FEEDGATE_UPSTOX_BASE_URL=%s/upstox FEEDGATE_UPSTOX_CLIENT_ID=%s FEEDGATE_UPSTOX_CLIENT_SECRET=%s\n"+
		"    FEEDGATE_FYERS_BASE_URL=%s/fyers FEEDGATE_FYERS_APP_ID=%s FEEDGATE_FYERS_SECRET=%s\n",
		base, base, sb.UpstoxClientID, sb.UpstoxClientSecret, base, sb.FyersAppID, sb.FyersSecret)
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case <-ctx.Done():
	case err = <-errc:
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = srv.Shutdown(sctx)
	if cerr := s.Close(); err == nil || errors.Is(err, http.ErrServerClosed) {
		err = cerr
	}
	return err
}
