package gateway

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"time"

	"github.com/feedgate/feedgate/server/api"
	"github.com/feedgate/feedgate/server/broker"
	"github.com/feedgate/feedgate/server/broker/fyers"
	"github.com/feedgate/feedgate/server/broker/upstox"
	"github.com/feedgate/feedgate/server/config"
	"github.com/feedgate/feedgate/server/loginbind"
	"github.com/feedgate/feedgate/server/sandbox"
	"github.com/feedgate/feedgate/server/secret"
)

// startSandbox runs the sandbox broker in-process when the configuration
// has it serve a broker (config.Config.Sandbox) and --sandbox-addr is not
// "off".
func (g *Gateway) startSandbox() error {
	if len(g.cfg.Sandbox) == 0 || g.cfg.SandboxAddr == "off" {
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
	g.opts.Logger.Info("sandbox broker serving (no broker account needed)", "url", g.SandboxURL(), "brokers", strings.Join(g.cfg.Sandbox, ","))
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

// Offer is what the gateway offers for one broker: a real broker app, the
// sandbox, or nothing (NotConfigured says why and what to set).
type Offer = api.Offer

// brokerSetting resolves one broker's app: the configured real app, or the
// sandbox's when the configuration has the sandbox serve it. ok is false
// when the broker is not offered; o says so.
func (g *Gateway) brokerSetting(b config.Broker, kind broker.Kind, sandboxID, sandboxSecret string) (_ config.Broker, o Offer, ok bool) {
	if b.Real() {
		return b, Offer{}, true
	}
	if !g.cfg.Sandboxed(string(kind)) || g.sandbox == nil {
		return config.Broker{}, Offer{NotConfigured: notConfigured(kind)}, false
	}
	b.ClientID, b.ClientSecret = sandboxID, secret.New(sandboxSecret)
	if b.BaseURL == "" {
		b.BaseURL = g.SandboxURL() + "/" + string(kind)
	}
	return b, Offer{Sandbox: true}, true
}

// notConfigured is the message every call for an unoffered broker fails
// with: what it is and what the operator sets to offer it.
func notConfigured(kind broker.Kind) string {
	set := "--upstox-client-id and FEEDGATE_UPSTOX_CLIENT_SECRET"
	if kind == broker.Fyers {
		set = "--fyers-app-id and FEEDGATE_FYERS_SECRET"
	}
	return fmt.Sprintf("%s is not configured on this gateway: set %s (docs/brokers/%s.md), or --sandbox=%s for synthetic data",
		kind.DisplayName(), set, kind, kind)
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

// buildBrokers makes one client per offered broker and logs, for each
// broker, what serves it.
func (g *Gateway) buildBrokers() error {
	g.brokers = make(map[broker.Kind]broker.Client)
	g.offers = make(map[broker.Kind]Offer)
	if b, o, ok := g.brokerSetting(g.cfg.Upstox, broker.Upstox, sandbox.UpstoxClientID, sandbox.UpstoxClientSecret); ok {
		c, err := upstox.New(upstox.Config{ClientID: b.ClientID, ClientSecret: b.ClientSecret, RedirectURL: g.redirectURL(g.cfg.Upstox, broker.Upstox), BaseURL: b.BaseURL, Now: g.opts.Clock.Now})
		if err != nil {
			return fmt.Errorf("upstox: %w", err)
		}
		g.brokers[broker.Upstox], g.offers[broker.Upstox] = c, o
	} else {
		g.offers[broker.Upstox] = o
	}
	if b, o, ok := g.brokerSetting(g.cfg.Fyers, broker.Fyers, sandbox.FyersAppID, sandbox.FyersSecret); ok {
		c, err := fyers.New(fyers.Config{AppID: b.ClientID, Secret: b.ClientSecret, RedirectURL: g.redirectURL(g.cfg.Fyers, broker.Fyers), BaseURL: b.BaseURL, Now: g.opts.Clock.Now})
		if err != nil {
			return fmt.Errorf("fyers: %w", err)
		}
		g.brokers[broker.Fyers], g.offers[broker.Fyers] = c, o
	} else {
		g.offers[broker.Fyers] = o
	}
	if len(g.brokers) == 0 {
		return errors.New("no broker available: configure a broker app or leave --sandbox-addr on")
	}
	demo := !g.cfg.Upstox.Real() && !g.cfg.Fyers.Real()
	for _, kind := range broker.Kinds {
		switch o := g.offers[kind]; {
		case o.NotConfigured != "":
			g.opts.Logger.Warn("broker not offered: calls for it fail with FailedPrecondition", "broker", kind, "why", o.NotConfigured)
		case o.Sandbox && demo:
			g.opts.Logger.Info("broker served by the sandbox: synthetic data, every login approved (demo mode)", "broker", kind)
		case o.Sandbox:
			g.opts.Logger.Warn("broker served by the sandbox, as --sandbox asks: synthetic data, every login approved", "broker", kind)
		default:
			g.opts.Logger.Info("broker served by its real app", "broker", kind)
		}
	}
	return nil
}

// Offers says, for every broker, what the gateway offers for it.
func (g *Gateway) Offers() map[broker.Kind]Offer { return g.offers }
