package gateway

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"time"

	"github.com/feedgate/feedgate/server/broker"
	"github.com/feedgate/feedgate/server/broker/fyers"
	"github.com/feedgate/feedgate/server/broker/upstox"
	"github.com/feedgate/feedgate/server/config"
	"github.com/feedgate/feedgate/server/loginbind"
	"github.com/feedgate/feedgate/server/sandbox"
	"github.com/feedgate/feedgate/server/secret"
)

// startSandbox runs the sandbox broker in-process when a broker has no
// real credentials (and --sandbox-addr is not "off").
func (g *Gateway) startSandbox() error {
	needed := !g.cfg.Upstox.Real() || !g.cfg.Fyers.Real()
	if !needed || g.cfg.SandboxAddr == "off" {
		return nil
	}
	sb, err := sandbox.New(sandbox.Config{
		DataDir:      filepath.Join(g.cfg.DataDir, "sandbox"),
		FeedInterval: g.cfg.SandboxFeedInterval,
		Logger:       g.opts.Logger.With("component", "sandbox"),
	})
	if err != nil {
		return fmt.Errorf("sandbox broker: %w", err)
	}
	ln, err := net.Listen("tcp", g.cfg.SandboxAddr)
	if err != nil {
		_ = sb.Close()
		return fmt.Errorf("--sandbox-addr %s: %w", g.cfg.SandboxAddr, err)
	}
	g.sandbox = sb
	g.sandboxLn = ln
	g.sandboxSrv = &http.Server{Handler: sb.Handler(), ReadHeaderTimeout: 10 * time.Second}
	go func() {
		if err := g.sandboxSrv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			g.opts.Logger.Error("sandbox broker stopped", "err", err)
		}
	}()
	g.opts.Logger.Info("sandbox broker serving (no broker account needed)", "url", g.SandboxURL())
	return nil
}

// SandboxURL is the in-process sandbox broker's base URL, or "" when none runs.
func (g *Gateway) SandboxURL() string {
	if g.sandboxLn == nil {
		return ""
	}
	return "http://" + g.sandboxLn.Addr().String()
}

// Sandbox is the in-process sandbox broker, or nil.
func (g *Gateway) Sandbox() *sandbox.Sandbox { return g.sandbox }

// brokerSetting resolves one broker's app: the configured real app, or the
// sandbox's.
func (g *Gateway) brokerSetting(b config.Broker, kind broker.Kind, sandboxID, sandboxSecret string) (config.Broker, bool) {
	if b.Real() {
		return b, true
	}
	if g.sandbox == nil {
		return config.Broker{}, false
	}
	b.ClientID, b.ClientSecret = sandboxID, secret.New(sandboxSecret)
	if b.BaseURL == "" {
		b.BaseURL = g.SandboxURL() + "/" + string(kind)
	}
	return b, true
}

func (g *Gateway) redirectURL(b config.Broker, kind broker.Kind) string {
	if b.RedirectURL != "" {
		return b.RedirectURL
	}
	return g.publicURL() + loginbind.CallbackPath(kind)
}

func (g *Gateway) publicURL() string {
	if g.cfg.PublicURL != "" {
		return g.cfg.BaseURL()
	}
	return "http://" + g.Addr()
}

// buildBrokers makes one client per available broker.
func (g *Gateway) buildBrokers() error {
	g.brokers = make(map[broker.Kind]broker.Client)
	if b, ok := g.brokerSetting(g.cfg.Upstox, broker.Upstox, sandbox.UpstoxClientID, sandbox.UpstoxClientSecret); ok {
		c, err := upstox.New(upstox.Config{ClientID: b.ClientID, ClientSecret: b.ClientSecret, RedirectURL: g.redirectURL(g.cfg.Upstox, broker.Upstox), BaseURL: b.BaseURL, Now: g.opts.Clock.Now})
		if err != nil {
			return fmt.Errorf("upstox: %w", err)
		}
		g.brokers[broker.Upstox] = c
	}
	if b, ok := g.brokerSetting(g.cfg.Fyers, broker.Fyers, sandbox.FyersAppID, sandbox.FyersSecret); ok {
		c, err := fyers.New(fyers.Config{AppID: b.ClientID, Secret: b.ClientSecret, RedirectURL: g.redirectURL(g.cfg.Fyers, broker.Fyers), BaseURL: b.BaseURL, Now: g.opts.Clock.Now})
		if err != nil {
			return fmt.Errorf("fyers: %w", err)
		}
		g.brokers[broker.Fyers] = c
	}
	if len(g.brokers) == 0 {
		return errors.New("no broker available: configure a broker app or leave --sandbox-addr on")
	}
	return nil
}
