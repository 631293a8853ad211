package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/feedgate/feedgate/client"
	feedgatev1 "github.com/feedgate/feedgate/gen/go/feedgate/v1"
)

// Exit codes.
const (
	exitOK           = 0 // success, or a stream stopped by an interrupt
	exitError        = 1 // any other error
	exitUsage        = 2 // bad command line, or no API key
	exitKeyRejected  = 3 // the gateway refused the feedgate API key
	exitAuthRequired = 4 // the broker connection needs a new login (AUTH_REQUIRED)
	exitUnavailable  = 5 // the gateway or the broker is unavailable, or a timeout
)

const defaultURL = "http://127.0.0.1:8080"

const usage = `Usage: feedgate [global flags] COMMAND [flags] [args]

Commands:
  status     [--broker B]                       your connection to each broker
  login-url  --broker B                         the broker's login URL and its state
  login      --broker B --code C --state S      complete a broker login
  login      --redirect URL                     ... from the URL the broker redirected to
  chain      --broker B --underlying K --expiry YYYY-MM-DD [--strikes N]
                                                an option chain, the ATM strike marked
  quotes     --broker B KEY...                  last prices
  stream     --broker B [--mode ltpc|full|option_greeks] KEY...
                                                live ticks until interrupted
  help                                          this text

Brokers: upstox, fyers. Instrument keys are in the broker's format:
Upstox "NSE_INDEX|Nifty 50", Fyers "NSE:NIFTY50-INDEX".

Global flags (also accepted after the command):
  --url URL        the gateway (env FEEDGATE_URL, default http://127.0.0.1:8080)
  --key KEY        the feedgate API key (env FEEDGATE_API_KEY; prefer the
                   environment: flags are visible to other local users)
  --grpc           use the gRPC protocol instead of Connect
  --timeout D      deadline of each call other than stream (default 30s)

Exit codes:
  0  success (stream: interrupted)
  1  any other error
  2  usage error, or no API key
  3  the gateway refused the API key (Unauthenticated)
  4  the broker connection needs a new login (Unauthenticated with
     AuthRequired); the message says which broker, why, and how to log in
  5  the gateway or the broker is unavailable, or a timeout
`

// run runs the command line args, reading the environment with os.Getenv,
// and returns the exit code.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	return runEnv(ctx, args, os.Getenv, stdout, stderr)
}

// cli is one invocation.
type cli struct {
	url     string
	key     string
	grpc    bool
	timeout time.Duration
	stdout  io.Writer
	stderr  io.Writer
}

// globalFlags registers the global flags on fs, with the current values as
// defaults, so they may come before or after the command.
func (c *cli) globalFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.url, "url", c.url, "the gateway's base URL (env FEEDGATE_URL)")
	fs.StringVar(&c.key, "key", c.key, "the feedgate API key (env FEEDGATE_API_KEY)")
	fs.BoolVar(&c.grpc, "grpc", c.grpc, "use the gRPC protocol")
	fs.DurationVar(&c.timeout, "timeout", c.timeout, "deadline of each unary call")
}

func runEnv(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	c := &cli{url: getenv("FEEDGATE_URL"), key: getenv("FEEDGATE_API_KEY"), timeout: 30 * time.Second, stdout: stdout, stderr: stderr}
	if c.url == "" {
		c.url = defaultURL
	}
	fs := newFlagSet("feedgate", stderr)
	c.globalFlags(fs)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprint(stdout, usage)
			return exitOK
		}
		return exitUsage
	}
	if fs.NArg() == 0 {
		fmt.Fprint(stderr, usage)
		return exitUsage
	}
	cmd, rest := fs.Arg(0), fs.Args()[1:]
	commands := map[string]func(context.Context, []string) int{
		"status":    c.status,
		"login-url": c.loginURL,
		"login":     c.login,
		"chain":     c.chain,
		"quotes":    c.quotes,
		"stream":    c.stream,
	}
	if cmd == "help" {
		fmt.Fprint(stdout, usage)
		return exitOK
	}
	f, ok := commands[cmd]
	if !ok {
		fmt.Fprintf(stderr, "feedgate: unknown command %q\n\n%s", cmd, usage)
		return exitUsage
	}
	return f(ctx, rest)
}

func newFlagSet(name string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprintf(stderr, "Run \"feedgate help\" for usage.\n") }
	return fs
}

// parse parses a command's flags, which may be mixed with its positional
// arguments, and returns the positional arguments. After "--" everything is
// positional.
func parse(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		rest := fs.Args()
		if len(rest) == 0 {
			return pos, nil
		}
		if consumed := args[:len(args)-len(rest)]; len(consumed) > 0 && consumed[len(consumed)-1] == "--" {
			return append(pos, rest...), nil
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}

// command parses a command's flags (with the global ones) and checks the
// positional arguments' count. It returns false after printing why not.
func (c *cli) command(name string, args []string, setup func(*flag.FlagSet), minArgs, maxArgs int) ([]string, bool) {
	fs := newFlagSet(name, c.stderr)
	c.globalFlags(fs)
	setup(fs)
	pos, err := parse(fs, args)
	if err != nil {
		return nil, false
	}
	if len(pos) < minArgs || (maxArgs >= 0 && len(pos) > maxArgs) {
		if maxArgs == 0 {
			fmt.Fprintf(c.stderr, "feedgate %s: unexpected arguments %q\n", name, pos)
		} else {
			fmt.Fprintf(c.stderr, "feedgate %s: give at least %d instrument key(s)\n", name, minArgs)
		}
		return nil, false
	}
	return pos, true
}

// newClient makes the client, or says why not.
func (c *cli) newClient() (*client.Client, bool) {
	if c.key == "" {
		fmt.Fprintln(c.stderr, "feedgate: no API key: set FEEDGATE_API_KEY (or pass --key)")
		return nil, false
	}
	u, err := url.Parse(c.url)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		fmt.Fprintf(c.stderr, "feedgate: --url %q is not an http:// or https:// URL\n", c.url)
		return nil, false
	}
	var opts []client.Option
	if c.grpc {
		opts = append(opts, client.WithGRPC())
	}
	return client.New(c.url, c.key, opts...), true
}

// usageErr prints a usage problem and returns exitUsage.
func (c *cli) usageErr(format string, a ...any) int {
	fmt.Fprintf(c.stderr, "feedgate: "+format+"\n", a...)
	return exitUsage
}

// fail prints err for a person and returns its exit code.
func (c *cli) fail(err error) int {
	if ar, ok := client.AuthRequired(err); ok {
		printAuthRequired(c.stderr, ar)
		return exitAuthRequired
	}
	if client.IsKeyRejected(err) {
		fmt.Fprintf(c.stderr, "feedgate: %v\nThe gateway refused the feedgate API key: check FEEDGATE_API_KEY (or --key).\n", err)
		return exitKeyRejected
	}
	fmt.Fprintf(c.stderr, "feedgate: %v\n", err)
	switch connect.CodeOf(err) {
	case connect.CodeUnavailable, connect.CodeDeadlineExceeded, connect.CodeResourceExhausted:
		if d, ok := client.RetryAfter(err); ok {
			fmt.Fprintf(c.stderr, "The broker asks to wait %v before trying again.\n", d)
		}
		return exitUnavailable
	}
	return exitError
}

// printAuthRequired tells a person which broker needs a new login, why, and
// how to log in again.
func printAuthRequired(w io.Writer, ar *feedgatev1.AuthRequired) {
	name, flagName := brokerName(ar.GetBroker()), brokerFlag(ar.GetBroker())
	fmt.Fprintf(w, "feedgate: your %s connection needs a new login.\n", name)
	if ar.GetMessage() != "" {
		fmt.Fprintf(w, "  %s\n", ar.GetMessage())
	}
	fmt.Fprintf(w, "  broker: %s\n  reason: %s", name, trimEnum(ar.GetReason().String(), "DISCONNECT_REASON_"))
	if ar.GetDisconnectedAt() != nil {
		fmt.Fprintf(w, " (since %s)", formatTime(ar.GetDisconnectedAt()))
	}
	fmt.Fprintln(w)
	if ar.GetLoginUrl() != "" {
		fmt.Fprintf(w, "To reconnect, open this URL in a browser and log in to %s:\n  %s\n", name, ar.GetLoginUrl())
		fmt.Fprintf(w, "feedgate's page will say the login was not started in that browser (only the dashboard's own\nlogins complete there); copy the page's address and run:\n  feedgate login --broker %s --redirect 'THE_ADDRESS'\n", flagName)
	} else {
		fmt.Fprintf(w, "To reconnect, get a login URL with:\n  feedgate login-url --broker %s\n", flagName)
	}
}

func (c *cli) unaryCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	if c.timeout > 0 {
		return context.WithTimeout(ctx, c.timeout)
	}
	return context.WithCancel(ctx)
}

// brokerValue is a --broker flag.
type brokerValue struct{ b feedgatev1.Broker }

func (v *brokerValue) String() string {
	if v == nil || v.b == feedgatev1.Broker_BROKER_UNSPECIFIED {
		return ""
	}
	return brokerFlag(v.b)
}

func (v *brokerValue) Set(s string) error {
	switch strings.TrimPrefix(strings.ToLower(s), "broker_") {
	case "upstox":
		v.b = feedgatev1.Broker_BROKER_UPSTOX
	case "fyers":
		v.b = feedgatev1.Broker_BROKER_FYERS
	default:
		return fmt.Errorf("unknown broker %q: want upstox or fyers", s)
	}
	return nil
}

func brokerFlagVar(fs *flag.FlagSet, v *brokerValue) {
	fs.Var(v, "broker", "the broker: upstox or fyers")
}

func brokerFlag(b feedgatev1.Broker) string {
	return strings.ToLower(trimEnum(b.String(), "BROKER_"))
}

func brokerName(b feedgatev1.Broker) string {
	switch b {
	case feedgatev1.Broker_BROKER_UPSTOX:
		return "Upstox"
	case feedgatev1.Broker_BROKER_FYERS:
		return "Fyers"
	}
	return trimEnum(b.String(), "BROKER_")
}

func trimEnum(s, prefix string) string { return strings.TrimPrefix(s, prefix) }

func formatTime(ts *timestamppb.Timestamp) string {
	if ts == nil || !ts.IsValid() || (ts.Seconds == 0 && ts.Nanos == 0) {
		return "-"
	}
	return ts.AsTime().Local().Format("2006-01-02 15:04:05")
}

func (c *cli) status(ctx context.Context, args []string) int {
	var b brokerValue
	if _, ok := c.command("status", args, func(fs *flag.FlagSet) { brokerFlagVar(fs, &b) }, 0, 0); !ok {
		return exitUsage
	}
	cl, ok := c.newClient()
	if !ok {
		return exitUsage
	}
	ctx, cancel := c.unaryCtx(ctx)
	defer cancel()
	res, err := cl.Connection.GetConnectionStatus(ctx, connect.NewRequest(&feedgatev1.GetConnectionStatusRequest{Broker: b.b}))
	if err != nil {
		return c.fail(err)
	}
	tw := tabwriter.NewWriter(c.stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "BROKER\tSERVED BY\tSTATE\tREASON\tACCOUNT\tCONNECTED\tEXPIRES\tLAST VALIDATED\tDISCONNECTED\tLAST ERROR")
	var notes []string
	for _, cn := range res.Msg.GetConnections() {
		reason := trimEnum(cn.GetReason().String(), "DISCONNECT_REASON_")
		if cn.GetReason() == feedgatev1.DisconnectReason_DISCONNECT_REASON_UNSPECIFIED {
			reason = "-"
		}
		servedBy := "broker"
		switch {
		case cn.GetNotConfigured() != "":
			servedBy, reason = "not configured", "-"
			notes = append(notes, cn.GetNotConfigured())
		case cn.GetSandbox():
			servedBy = "SANDBOX (synthetic data)"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n",
			brokerName(cn.GetBroker()), servedBy, trimEnum(cn.GetState().String(), "CONNECTION_STATE_"), reason,
			orDash(cn.GetBrokerUserId()), formatTime(cn.GetConnectedAt()), formatTime(cn.GetTokenExpiresAt()),
			formatTime(cn.GetLastValidatedAt()), formatTime(cn.GetDisconnectedAt()), orDash(cn.GetLastError()))
	}
	if err := tw.Flush(); err != nil {
		return c.fail(err)
	}
	for _, n := range notes {
		fmt.Fprintln(c.stdout, n)
	}
	return exitOK
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func (c *cli) loginURL(ctx context.Context, args []string) int {
	var b brokerValue
	if _, ok := c.command("login-url", args, func(fs *flag.FlagSet) { brokerFlagVar(fs, &b) }, 0, 0); !ok {
		return exitUsage
	}
	if b.b == feedgatev1.Broker_BROKER_UNSPECIFIED {
		return c.usageErr("login-url: --broker is required (upstox or fyers)")
	}
	cl, ok := c.newClient()
	if !ok {
		return exitUsage
	}
	ctx, cancel := c.unaryCtx(ctx)
	defer cancel()
	res, err := cl.Connection.GetLoginURL(ctx, connect.NewRequest(&feedgatev1.GetLoginURLRequest{Broker: b.b}))
	if err != nil {
		return c.fail(err)
	}
	fmt.Fprintf(c.stdout, "url:     %s\nstate:   %s\nexpires: %s\n", res.Msg.GetUrl(), res.Msg.GetState(), formatTime(res.Msg.GetExpiresAt()))
	fmt.Fprintf(c.stderr, "Open the URL in a browser and log in to %s. feedgate's page will then say the login was not\nstarted in that browser (only the dashboard's own logins complete there): copy the page's address and\nrun: feedgate login --broker %s --redirect 'THE_ADDRESS'\n", brokerName(b.b), brokerFlag(b.b))
	return exitOK
}

func (c *cli) login(ctx context.Context, args []string) int {
	var (
		b                     brokerValue
		code, state, redirect string
	)
	if _, ok := c.command("login", args, func(fs *flag.FlagSet) {
		brokerFlagVar(fs, &b)
		fs.StringVar(&code, "code", "", "the auth code from the broker's redirect")
		fs.StringVar(&state, "state", "", "the state from login-url")
		fs.StringVar(&redirect, "redirect", "", "the whole URL the broker redirected to")
	}, 0, 0); !ok {
		return exitUsage
	}
	if redirect != "" {
		u, err := url.Parse(redirect)
		if err != nil || u.RawQuery == "" {
			return c.usageErr("login: --redirect %q is not a URL with a query", redirect)
		}
		q := u.Query()
		if msg := q.Get("error"); msg != "" {
			return c.usageErr("login: the broker refused the login: %s", msg)
		}
		if code == "" {
			// Fyers redirects with code=200 (a status) and the real code in
			// auth_code; Upstox sends the code as code.
			code = cmpOr(q.Get("auth_code"), q.Get("code"))
		}
		if state == "" {
			state = q.Get("state")
		}
		if b.b == feedgatev1.Broker_BROKER_UNSPECIFIED {
			// The gateway's callback is /oauth/{upstox|fyers}/callback.
			for _, p := range strings.Split(u.Path, "/") {
				if b.Set(p) == nil {
					break
				}
			}
		}
	}
	if b.b == feedgatev1.Broker_BROKER_UNSPECIFIED {
		return c.usageErr("login: --broker is required (upstox or fyers)")
	}
	if code == "" || state == "" {
		return c.usageErr("login: give --code and --state, or --redirect with the URL the broker redirected to")
	}
	cl, ok := c.newClient()
	if !ok {
		return exitUsage
	}
	ctx, cancel := c.unaryCtx(ctx)
	defer cancel()
	res, err := cl.Connection.CompleteLogin(ctx, connect.NewRequest(&feedgatev1.CompleteLoginRequest{Broker: b.b, Code: code, State: state}))
	if err != nil {
		return c.fail(err)
	}
	cn := res.Msg.GetConnection()
	fmt.Fprintf(c.stdout, "Connected to %s", brokerName(b.b))
	if cn.GetBrokerUserId() != "" {
		fmt.Fprintf(c.stdout, " as %s", cn.GetBrokerUserId())
	}
	if cn.GetTokenExpiresAt() != nil {
		fmt.Fprintf(c.stdout, "; the token expires %s", formatTime(cn.GetTokenExpiresAt()))
	}
	fmt.Fprintln(c.stdout, ".")
	return exitOK
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

func (c *cli) chain(ctx context.Context, args []string) int {
	var (
		b                  brokerValue
		underlying, expiry string
		around             int
	)
	if _, ok := c.command("chain", args, func(fs *flag.FlagSet) {
		brokerFlagVar(fs, &b)
		fs.StringVar(&underlying, "underlying", "", `the underlying's key, e.g. "NSE_INDEX|Nifty 50" (Upstox) or "NSE:NIFTY50-INDEX" (Fyers)`)
		fs.StringVar(&expiry, "expiry", "", "the expiry date, YYYY-MM-DD")
		fs.IntVar(&around, "strikes", 10, "show this many strikes on each side of the ATM strike (0: all)")
	}, 0, 0); !ok {
		return exitUsage
	}
	switch {
	case b.b == feedgatev1.Broker_BROKER_UNSPECIFIED:
		return c.usageErr("chain: --broker is required (upstox or fyers)")
	case underlying == "":
		return c.usageErr("chain: --underlying is required")
	case expiry == "":
		return c.usageErr("chain: --expiry is required (YYYY-MM-DD)")
	}
	cl, ok := c.newClient()
	if !ok {
		return exitUsage
	}
	ctx, cancel := c.unaryCtx(ctx)
	defer cancel()
	res, err := cl.MarketData.GetOptionChain(ctx, connect.NewRequest(&feedgatev1.GetOptionChainRequest{Broker: b.b, UnderlyingKey: underlying, ExpiryDate: expiry}))
	if err != nil {
		return c.fail(err)
	}
	writeChain(c.stdout, res.Msg, around)
	return exitOK
}

// atmMarker follows the ATM strike in the chain table.
const atmMarker = "<ATM>"

// atmIndex returns the index of the strike nearest the spot, or -1.
func atmIndex(strikes []*feedgatev1.OptionStrike, spot float64) int {
	best := -1
	for i, s := range strikes {
		if best < 0 || math.Abs(s.GetStrikePrice()-spot) < math.Abs(strikes[best].GetStrikePrice()-spot) {
			best = i
		}
	}
	return best
}

// writeChain prints a chain as a table, calls on the left and puts on the
// right of the strike, the ATM strike marked.
func writeChain(w io.Writer, ch *feedgatev1.GetOptionChainResponse, around int) {
	strikes := ch.GetStrikes()
	atm := atmIndex(strikes, ch.GetUnderlyingSpotPrice())
	lo, hi := 0, len(strikes)
	if around > 0 && atm >= 0 {
		lo, hi = max(0, atm-around), min(len(strikes), atm+around+1)
	}
	fmt.Fprintf(w, "%s  %s  expiry %s  spot %s", brokerName(ch.GetBroker()), ch.GetUnderlyingKey(), ch.GetExpiryDate(), num(ch.GetUnderlyingSpotPrice(), 2))
	if atm >= 0 {
		fmt.Fprintf(w, "  ATM %s", num(strikes[atm].GetStrikePrice(), -1))
	}
	fmt.Fprintf(w, "  (%d of %d strikes)\n", hi-lo, len(strikes))
	tw := tabwriter.NewWriter(w, 0, 0, 1, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "CALL OI\tIV\tΔ\tLTP\t|\tSTRIKE\t\t|\tLTP\tΔ\tIV\tPUT OI\tPCR\t")
	for i := lo; i < hi; i++ {
		s := strikes[i]
		mark := ""
		if i == atm {
			mark = atmMarker
		}
		fmt.Fprintf(tw, "%s\t|\t%s\t%s\t|\t%s\t%s\t\n", sideCells(s.GetCall(), false), num(s.GetStrikePrice(), -1), mark, sideCells(s.GetPut(), true), num(s.GetPcr(), 2))
	}
	tw.Flush()
}

// sideCells returns one side's cells: OI, IV, Δ, LTP for calls and the
// mirror image for puts.
func sideCells(o *feedgatev1.OptionSide, put bool) string {
	cells := []string{"-", "-", "-", "-"}
	if o != nil {
		cells = []string{num(o.GetOi(), 0), num(o.GetIv(), 2), num(o.GetDelta(), 3), num(o.GetLtp(), 2)}
	}
	if put {
		slices.Reverse(cells)
	}
	return strings.Join(cells, "\t")
}

// num formats f with prec decimals; prec -1 drops ".00" from whole numbers.
func num(f float64, prec int) string {
	if prec < 0 {
		if f == math.Trunc(f) {
			return strconv.FormatFloat(f, 'f', 0, 64)
		}
		prec = 2
	}
	return strconv.FormatFloat(f, 'f', prec, 64)
}

func (c *cli) quotes(ctx context.Context, args []string) int {
	var b brokerValue
	keys, ok := c.command("quotes", args, func(fs *flag.FlagSet) { brokerFlagVar(fs, &b) }, 1, -1)
	if !ok {
		return exitUsage
	}
	if b.b == feedgatev1.Broker_BROKER_UNSPECIFIED {
		return c.usageErr("quotes: --broker is required (upstox or fyers)")
	}
	cl, ok := c.newClient()
	if !ok {
		return exitUsage
	}
	ctx, cancel := c.unaryCtx(ctx)
	defer cancel()
	res, err := cl.MarketData.GetQuotes(ctx, connect.NewRequest(&feedgatev1.GetQuotesRequest{Broker: b.b, InstrumentKeys: keys}))
	if err != nil {
		return c.fail(err)
	}
	tw := tabwriter.NewWriter(c.stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "INSTRUMENT\tLTP\tCLOSE\tVOLUME\tOI")
	for _, q := range res.Msg.GetQuotes() {
		closePrice, volume, oi := "-", "-", "-"
		if q.ClosePrice != nil {
			closePrice = num(q.GetClosePrice(), 2)
		}
		if q.Volume != nil {
			volume = strconv.FormatInt(q.GetVolume(), 10)
		}
		if q.Oi != nil {
			oi = num(q.GetOi(), 0)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", q.GetInstrumentKey(), num(q.GetLtp(), 2), closePrice, volume, oi)
	}
	tw.Flush()
	if u := res.Msg.GetUnknownKeys(); len(u) > 0 {
		fmt.Fprintf(c.stderr, "feedgate: %s does not know: %s\n", brokerName(b.b), strings.Join(u, ", "))
	}
	return exitOK
}

// modeValue is a --mode flag.
type modeValue struct{ m feedgatev1.FeedMode }

func (v *modeValue) String() string {
	if v == nil {
		return ""
	}
	return strings.ToLower(trimEnum(v.m.String(), "FEED_MODE_"))
}

func (v *modeValue) Set(s string) error {
	switch strings.ReplaceAll(strings.TrimPrefix(strings.ToLower(s), "feed_mode_"), "-", "_") {
	case "ltpc":
		v.m = feedgatev1.FeedMode_FEED_MODE_LTPC
	case "full":
		v.m = feedgatev1.FeedMode_FEED_MODE_FULL
	case "option_greeks", "greeks":
		v.m = feedgatev1.FeedMode_FEED_MODE_OPTION_GREEKS
	default:
		return fmt.Errorf("unknown mode %q: want ltpc, full or option_greeks", s)
	}
	return nil
}

func (c *cli) stream(ctx context.Context, args []string) int {
	var b brokerValue
	mode := modeValue{feedgatev1.FeedMode_FEED_MODE_LTPC}
	keys, ok := c.command("stream", args, func(fs *flag.FlagSet) {
		brokerFlagVar(fs, &b)
		fs.Var(&mode, "mode", "ltpc, full or option_greeks")
	}, 1, -1)
	if !ok {
		return exitUsage
	}
	if b.b == feedgatev1.Broker_BROKER_UNSPECIFIED {
		return c.usageErr("stream: --broker is required (upstox or fyers)")
	}
	cl, ok := c.newClient()
	if !ok {
		return exitUsage
	}
	err := cl.Subscribe(ctx, &feedgatev1.StreamMarketFeedRequest{Broker: b.b, InstrumentKeys: keys, Mode: mode.m}, client.SubscribeOptions{
		OnTicks: func(tb *feedgatev1.TickBatch) {
			for _, t := range tb.GetTicks() {
				fmt.Fprintln(c.stdout, tickLine(t))
			}
		},
		OnStatus: func(s *feedgatev1.UpstreamStatus) {
			msg := s.GetMessage()
			if msg == "" {
				msg = brokerName(b.b) + " feed " + strings.ToLower(trimEnum(s.GetState().String(), "UPSTREAM_STATE_"))
			}
			fmt.Fprintf(c.stderr, "feedgate: %s\n", msg)
		},
		OnReconnect: func(r client.Reconnect) {
			fmt.Fprintf(c.stderr, "feedgate: stream lost (%v); reconnecting in %v (attempt %d)\n", r.Err, r.Delay.Round(time.Millisecond), r.Attempt)
		},
		IdleTimeout: time.Minute,
	})
	if ctx.Err() != nil && errors.Is(err, ctx.Err()) {
		return exitOK
	}
	return c.fail(err)
}

// tickLine formats one tick as a line: time, instrument, price and what
// else the mode carries.
func tickLine(t *feedgatev1.Tick) string {
	var sb strings.Builder
	ts := time.Now()
	if t.GetLttUnixMs() > 0 {
		ts = time.UnixMilli(t.GetLttUnixMs())
	}
	fmt.Fprintf(&sb, "%s %s ltp=%s", ts.Local().Format("15:04:05.000"), t.GetInstrumentKey(), num(t.GetLtp(), 2))
	if t.GetLtq() > 0 {
		fmt.Fprintf(&sb, " ltq=%d", t.GetLtq())
	}
	if t.GetVolume() > 0 {
		fmt.Fprintf(&sb, " vol=%d", t.GetVolume())
	}
	if t.GetOi() > 0 {
		fmt.Fprintf(&sb, " oi=%s", num(t.GetOi(), 0))
	}
	if t.GetIv() > 0 {
		fmt.Fprintf(&sb, " iv=%s", num(t.GetIv(), 2))
	}
	if g := t.GetGreeks(); g != nil {
		fmt.Fprintf(&sb, " Δ=%s", num(g.GetDelta(), 3))
	}
	if t.GetBidPrice() > 0 || t.GetAskPrice() > 0 {
		fmt.Fprintf(&sb, " bid=%s ask=%s", num(t.GetBidPrice(), 2), num(t.GetAskPrice(), 2))
	}
	return sb.String()
}
