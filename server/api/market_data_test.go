package api_test

import (
	"context"
	"errors"
	"math"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"

	feedgatev1 "github.com/feedgate/feedgate/gen/go/feedgate/v1"
	"github.com/feedgate/feedgate/server/gateway/gatewaytest"
	"github.com/feedgate/feedgate/server/sandbox"
)

var (
	upstox = feedgatev1.Broker_BROKER_UPSTOX
	fyers  = feedgatev1.Broker_BROKER_FYERS
)

// underlyings are each broker's Nifty 50 key.
var underlyings = map[feedgatev1.Broker]string{upstox: "NSE_INDEX|Nifty 50", fyers: "NSE:NIFTY50-INDEX"}

func brokerName(b feedgatev1.Broker) string {
	if b == fyers {
		return "fyers"
	}
	return "upstox"
}

func nearestExpiry(t *testing.T, e *gatewaytest.Env) string {
	t.Helper()
	exp := e.Sandbox().Expiries("NSE_INDEX|Nifty 50")
	if len(exp) == 0 {
		t.Fatal("sandbox lists no expiries")
	}
	return exp[0]
}

func authRequired(t *testing.T, err error) *feedgatev1.AuthRequired {
	t.Helper()
	var ce *connect.Error
	if !errors.As(err, &ce) || ce.Code() != connect.CodeUnauthenticated {
		t.Fatalf("err = %v, want Unauthenticated", err)
	}
	for _, d := range ce.Details() {
		v, err := d.Value()
		if err != nil {
			t.Fatalf("detail: %v", err)
		}
		if ar, ok := v.(*feedgatev1.AuthRequired); ok {
			return ar
		}
	}
	t.Fatalf("Unauthenticated without an AuthRequired detail: %v", err)
	return nil
}

func TestOptionChainAndQuotesEndToEnd(t *testing.T) {
	t.Parallel()
	e := gatewaytest.Start(t, gatewaytest.Options{})
	expiry := nearestExpiry(t, e)
	for _, p := range gatewaytest.Protocols {
		for _, b := range []feedgatev1.Broker{upstox, fyers} {
			t.Run(p.Name+"/"+brokerName(b), func(t *testing.T) {
				ctx := context.Background()
				c := e.Clients(e.NewUser("u-"+p.Name+"-"+brokerName(b), false), p)
				conn := e.Login(c, b, "alice-"+p.Name)
				if conn.State != feedgatev1.ConnectionState_CONNECTION_STATE_CONNECTED || conn.TokenGeneration != 1 || conn.TokenExpiresAt == nil {
					t.Fatalf("after login: %v", conn)
				}
				res, err := c.MarketData.GetOptionChain(ctx, connect.NewRequest(&feedgatev1.GetOptionChainRequest{
					Broker: b, UnderlyingKey: underlyings[b], ExpiryDate: expiry,
				}))
				if err != nil {
					t.Fatal(err)
				}
				ch := res.Msg
				if ch.UnderlyingSpotPrice < 10000 || ch.ExpiryDate != expiry || len(ch.Strikes) < 20 {
					t.Fatalf("chain: spot %v expiry %s strikes %d", ch.UnderlyingSpotPrice, ch.ExpiryDate, len(ch.Strikes))
				}
				atm := ch.Strikes[0]
				for i, s := range ch.Strikes {
					if i > 0 && (s.StrikePrice <= ch.Strikes[i-1].StrikePrice || s.Call.GetLtp() > ch.Strikes[i-1].Call.GetLtp()) {
						t.Fatalf("strikes not ascending, or call prices rising with the strike, at %d", i)
					}
					if s.Call == nil || s.Put == nil || s.Call.InstrumentKey == "" || s.Put.InstrumentKey == "" || s.Put.Ltp <= 0 || s.Call.Oi <= 0 {
						t.Fatalf("strike %v incomplete: %v", s.StrikePrice, s)
					}
					// Greeks of a real chain: call delta in [0,1], put delta
					// in [-1,0], parity between them, positive IV.
					if s.Call.Delta < 0 || s.Call.Delta > 1 || s.Put.Delta < -1 || s.Put.Delta > 0 ||
						math.Abs(s.Call.Delta-s.Put.Delta-1) > 0.02 || s.Call.Iv <= 0 || s.Put.Iv <= 0 {
						t.Fatalf("strike %v greeks implausible: call %v put %v", s.StrikePrice, s.Call, s.Put)
					}
					if math.Abs(s.StrikePrice-ch.UnderlyingSpotPrice) < math.Abs(atm.StrikePrice-ch.UnderlyingSpotPrice) {
						atm = s
					}
				}
				if atm.Call.Gamma <= 0 || atm.Call.Delta < 0.3 || atm.Call.Delta > 0.7 || atm.Call.Vega <= 0 || atm.Call.Theta >= 0 {
					t.Errorf("at-the-money greeks implausible: %v", atm.Call)
				}
				keys := []string{underlyings[b], ch.Strikes[len(ch.Strikes)/2].Call.InstrumentKey}
				q, err := c.MarketData.GetQuotes(ctx, connect.NewRequest(&feedgatev1.GetQuotesRequest{Broker: b, InstrumentKeys: keys}))
				if err != nil {
					t.Fatal(err)
				}
				if len(q.Msg.Quotes) != 2 || q.Msg.Quotes[0].InstrumentKey != keys[0] || q.Msg.Quotes[0].Ltp < 10000 || q.Msg.Quotes[1].Ltp <= 0 {
					t.Errorf("quotes = %v", q.Msg)
				}
			})
		}
	}
}

func TestBadInputIsInvalidArgumentNamingTheField(t *testing.T) {
	t.Parallel()
	e := gatewaytest.Start(t, gatewaytest.Options{})
	expiry := nearestExpiry(t, e)
	tooMany := make([]string, 501)
	for i := range tooMany {
		tooMany[i] = "NSE_EQ|INE002A01018"
	}
	for _, p := range gatewaytest.Protocols {
		t.Run(p.Name, func(t *testing.T) {
			ctx := context.Background()
			c := e.Clients(e.NewUser("bad-"+p.Name, false), p)
			e.Login(c, upstox, "bad-"+p.Name)
			e.Login(c, fyers, "bad-"+p.Name)
			chain := func(b feedgatev1.Broker, key, date string) error {
				_, err := c.MarketData.GetOptionChain(ctx, connect.NewRequest(&feedgatev1.GetOptionChainRequest{Broker: b, UnderlyingKey: key, ExpiryDate: date}))
				return err
			}
			quotes := func(b feedgatev1.Broker, keys ...string) error {
				_, err := c.MarketData.GetQuotes(ctx, connect.NewRequest(&feedgatev1.GetQuotesRequest{Broker: b, InstrumentKeys: keys}))
				return err
			}
			cases := []struct {
				name  string
				err   error
				field string
			}{
				{"unknown broker", chain(feedgatev1.Broker(42), "NSE_INDEX|Nifty 50", expiry), "broker"},
				{"no broker", quotes(feedgatev1.Broker_BROKER_UNSPECIFIED, "NSE_EQ|INE002A01018"), "broker"},
				{"malformed upstox key", chain(upstox, "Nifty 50", expiry), "underlying_key"},
				{"fyers-style key on upstox", chain(upstox, "NSE:NIFTY50-INDEX", expiry), "underlying_key"},
				{"upstox-style key on fyers", chain(fyers, "NSE_INDEX|Nifty 50", expiry), "underlying_key"},
				{"empty key", chain(upstox, "", expiry), "underlying_key"},
				{"bad date", chain(upstox, "NSE_INDEX|Nifty 50", "2026-13-01"), "expiry_date"},
				{"date in another format", chain(upstox, "NSE_INDEX|Nifty 50", "01-12-2026"), "expiry_date"},
				{"no date", chain(fyers, "NSE:NIFTY50-INDEX", ""), "expiry_date"},
				{"date that is not an expiry", chain(upstox, "NSE_INDEX|Nifty 50", "2030-01-01"), "expiry_date"},
				{"fyers date that is not an expiry", chain(fyers, "NSE:NIFTY50-INDEX", "2030-01-01"), "expiry_date"},
				{"no keys", quotes(upstox), "instrument_keys"},
				{"too many keys", quotes(upstox, tooMany...), "instrument_keys"},
				{"one bad key among good", quotes(upstox, "NSE_EQ|INE002A01018", "NSE_EQ"), "instrument_keys[1]"},
			}
			for _, tc := range cases {
				if code := connect.CodeOf(tc.err); code != connect.CodeInvalidArgument {
					t.Errorf("%s: code %v (%v), want InvalidArgument", tc.name, code, tc.err)
					continue
				}
				if !strings.Contains(tc.err.Error(), tc.field) {
					t.Errorf("%s: message %q does not name %s", tc.name, tc.err, tc.field)
				}
			}
		})
	}
}

func TestBrokerFaults(t *testing.T) {
	t.Parallel()
	e := gatewaytest.Start(t, gatewaytest.Options{})
	expiry := nearestExpiry(t, e)
	for _, p := range gatewaytest.Protocols {
		t.Run(p.Name, func(t *testing.T) {
			ctx := context.Background()
			acct := "faults-" + p.Name
			c := e.Clients(e.NewUser(acct, false), p)
			e.Login(c, upstox, acct)
			chain := func(ctx context.Context) error {
				_, err := c.MarketData.GetOptionChain(ctx, connect.NewRequest(&feedgatev1.GetOptionChainRequest{Broker: upstox, UnderlyingKey: "NSE_INDEX|Nifty 50", ExpiryDate: expiry}))
				return err
			}
			// Faults are global to the sandbox: run the protocols one at a time.
			mu.Lock()
			defer mu.Unlock()
			defer e.Sandbox().ClearFaults()

			before := e.Calls("upstox", "/v2/option/chain", 0, acct)
			e.SandboxPost("/sandbox/faults", sandbox.Fault{Broker: "upstox", PathPrefix: "/v2/option/chain", Status: 503, Count: 2})
			if err := chain(ctx); err != nil {
				t.Fatalf("two 503s should be absorbed by retries: %v", err)
			}
			if n := e.Calls("upstox", "/v2/option/chain", 0, acct) - before; n != 3 {
				t.Errorf("two 503s then success took %d broker calls, want 3", n)
			}

			before = e.Calls("upstox", "/v2/option/chain", 0, acct)
			e.SandboxPost("/sandbox/faults", sandbox.Fault{Broker: "upstox", PathPrefix: "/v2/option/chain", Status: 503, Count: 100})
			err := chain(ctx)
			if code := connect.CodeOf(err); code != connect.CodeUnavailable {
				t.Errorf("503 streak: %v, want Unavailable", err)
			}
			if n := e.Calls("upstox", "/v2/option/chain", 0, acct) - before; n < 1 || n > 3 {
				t.Errorf("503 streak took %d broker calls, want at most 3", n)
			}
			e.Sandbox().ClearFaults()

			e.SandboxPost("/sandbox/faults", sandbox.Fault{Broker: "upstox", PathPrefix: "/v2/option/chain", Status: 429, Count: 5, RetryAfterMS: 60000})
			short, cancel := context.WithTimeout(ctx, 2*time.Second)
			defer cancel()
			err = chain(short)
			var ce *connect.Error
			if !errors.As(err, &ce) || ce.Code() != connect.CodeResourceExhausted {
				t.Fatalf("429 beyond the deadline: %v, want ResourceExhausted", err)
			}
			var rl *feedgatev1.RateLimited
			for _, d := range ce.Details() {
				if v, _ := d.Value(); v != nil {
					rl, _ = v.(*feedgatev1.RateLimited)
				}
			}
			if rl == nil || rl.RetryAfter.AsDuration() < 30*time.Second || rl.Broker != upstox {
				t.Errorf("RateLimited detail = %v", rl)
			}
		})
	}
}

var mu sync.Mutex
