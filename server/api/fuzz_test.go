package api

import (
	"context"
	"crypto/rand"
	"errors"
	"net/http"
	"path/filepath"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"

	feedgatev1 "github.com/feedgate/feedgate/gen/go/feedgate/v1"
	"github.com/feedgate/feedgate/server/auth"
	"github.com/feedgate/feedgate/server/broker"
	"github.com/feedgate/feedgate/server/broker/fyers"
	"github.com/feedgate/feedgate/server/broker/upstox"
	"github.com/feedgate/feedgate/server/connections"
	"github.com/feedgate/feedgate/server/seal"
	"github.com/feedgate/feedgate/server/secret"
	"github.com/feedgate/feedgate/server/store"
	"github.com/feedgate/feedgate/server/store/sqlitestore"
)

// refusingTransport fails every broker call and counts it: the fuzzed user
// has no broker connection, so no input may reach a broker.
type refusingTransport struct{ calls atomic.Int64 }

func (r *refusingTransport) RoundTrip(*http.Request) (*http.Response, error) {
	r.calls.Add(1)
	return nil, errors.New("no broker in this test")
}

// fuzzDeps builds the handlers' real dependencies (SQLite store, sealer,
// connections manager, both broker adapters) around a refusing transport,
// and a context authenticated as a user with no broker connection.
func fuzzDeps(t testing.TB) (*Deps, context.Context, *refusingTransport) {
	ctx := context.Background()
	st, err := sqlitestore.Open(ctx, filepath.Join(t.TempDir(), "feedgate.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	u := store.User{ID: "u_fuzz", Name: "fuzz", Admin: true, CreatedAt: time.Now()}
	_, _ = rand.Read(u.KeyHash[:])
	if err := st.CreateUser(ctx, u); err != nil {
		t.Fatal(err)
	}
	key := make([]byte, seal.KeyLen)
	_, _ = rand.Read(key)
	sealer, err := seal.New(key)
	if err != nil {
		t.Fatal(err)
	}
	rt := &refusingTransport{}
	hc := &http.Client{Transport: rt}
	up, err := upstox.New(upstox.Config{ClientID: "cid", ClientSecret: secret.New("s"), RedirectURL: "http://127.0.0.1/cb", BaseURL: "http://broker.invalid/upstox", HTTPClient: hc})
	if err != nil {
		t.Fatal(err)
	}
	fy, err := fyers.New(fyers.Config{AppID: "XXXX-100", Secret: secret.New("s"), RedirectURL: "http://127.0.0.1/cb", BaseURL: "http://broker.invalid/fyers", HTTPClient: hc})
	if err != nil {
		t.Fatal(err)
	}
	brokers := map[broker.Kind]broker.Client{broker.Upstox: up, broker.Fyers: fy}
	m, err := connections.New(connections.Config{Store: st, Sealer: sealer, Brokers: brokers})
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Close)
	return &Deps{Conns: m, Brokers: brokers, Store: st}, auth.WithUser(ctx, u), rt
}

// fieldMessage is an InvalidArgument message that names a request field
// first: "expiry_date: ...", "instrument_keys[3]: ...".
var fieldMessage = regexp.MustCompile(`^([a-z_]+)(\[\d+\])?: `)

// checkOutcome fails unless err is nil, InvalidArgument naming one of
// fields, or (when authOK) Unauthenticated with an AuthRequired detail.
func checkOutcome(t *testing.T, rpc string, err error, authOK bool, fields ...string) {
	t.Helper()
	if err == nil {
		return
	}
	var ce *connect.Error
	if !errors.As(err, &ce) {
		t.Fatalf("%s: %T %v is not a connect error", rpc, err, err)
	}
	switch ce.Code() {
	case connect.CodeInvalidArgument:
		m := fieldMessage.FindStringSubmatch(ce.Message())
		if m == nil {
			t.Fatalf("%s: InvalidArgument %q names no field", rpc, ce.Message())
		}
		for _, f := range fields {
			if m[1] == f {
				return
			}
		}
		t.Fatalf("%s: InvalidArgument names %q, not one of %v", rpc, m[1], fields)
	case connect.CodeUnauthenticated:
		if authOK {
			for _, d := range ce.Details() {
				if v, _ := d.Value(); v != nil {
					if _, ok := v.(*feedgatev1.AuthRequired); ok {
						return
					}
				}
			}
		}
	}
	t.Fatalf("%s: %v (code %v)", rpc, err, ce.Code())
}

// FuzzRequestValidation sends arbitrary brokers, strings, instrument keys,
// dates, modes, states, page sizes and tokens to every RPC's handler (the
// stream's validation through the same helpers StreamMarketFeed runs before
// subscribing). It proves that no input panics or becomes Internal: each
// call succeeds, is InvalidArgument with a message that starts with the
// request field it is about, or (market data for a user with no broker
// connection) Unauthenticated with AuthRequired; and nothing reaches a
// broker.
func FuzzRequestValidation(f *testing.F) {
	f.Add(int32(1), "NSE_INDEX|Nifty 50", "2026-11-24", "NSE_EQ|INE002A01018\x00NSE_EQ", int32(0), "")
	f.Add(int32(2), "NSE:NIFTY50-INDEX", "2026-13-01", "NSE:SBIN-EQ", int32(2), "u_1/upstox")
	f.Add(int32(42), "Nifty 50", "01-12-2026", "", int32(-1), "x")
	f.Add(int32(0), "", "", "\x00\x00", int32(3), "u_1/")
	f.Add(int32(1), "NSE_INDEX|Nifty 50", "2030-01-01", strings.Repeat("NSE_EQ|A\x00", 501), int32(1001), "/upstox")
	f.Add(int32(2), "NSE:NIFTY50-INDEX", "9999-99-99", strings.Repeat("k", 129), int32(7), "a/b/c")
	f.Add(int32(1), "NSE_FO|12345", "2026-02-29", "NSE_INDEX|Nifty Bank\x00NSE_INDEX|Nifty Bank", int32(-7), "\xff")
	d, ctx, rt := fuzzDeps(f)
	md, cs, ad := NewMarketData(d), NewConnection(d), NewAdmin(d)
	f.Fuzz(func(t *testing.T, b int32, s1, s2, keyList string, n int32, token string) {
		br := feedgatev1.Broker(b)
		var keys []string
		if keyList != "" {
			keys = strings.Split(keyList, "\x00")
		}
		_, err := md.GetOptionChain(ctx, connect.NewRequest(&feedgatev1.GetOptionChainRequest{Broker: br, UnderlyingKey: s1, ExpiryDate: s2}))
		checkOutcome(t, "GetOptionChain", err, true, "broker", "underlying_key", "expiry_date")
		_, err = md.GetQuotes(ctx, connect.NewRequest(&feedgatev1.GetQuotesRequest{Broker: br, InstrumentKeys: keys}))
		checkOutcome(t, "GetQuotes", err, true, "broker", "instrument_keys")
		// StreamMarketFeed's validation, in the order the handler runs it.
		err = func() error {
			kind, err := brokerKind(br)
			if err != nil {
				return err
			}
			c, err := d.client(kind)
			if err != nil {
				return err
			}
			if _, err := validKeys(c, "instrument_keys", keys, maxStreamKeys); err != nil {
				return err
			}
			_, err = feedMode(feedgatev1.FeedMode(n))
			return err
		}()
		checkOutcome(t, "StreamMarketFeed", toConnect(ctx, d.Logger, "StreamMarketFeed", err), false, "broker", "instrument_keys", "mode")

		_, err = cs.GetLoginURL(ctx, connect.NewRequest(&feedgatev1.GetLoginURLRequest{Broker: br}))
		checkOutcome(t, "GetLoginURL", err, false, "broker")
		_, err = cs.CompleteLogin(ctx, connect.NewRequest(&feedgatev1.CompleteLoginRequest{Broker: br, Code: s1, State: s2}))
		checkOutcome(t, "CompleteLogin", err, false, "broker", "code", "state")
		_, err = cs.GetConnectionStatus(ctx, connect.NewRequest(&feedgatev1.GetConnectionStatusRequest{Broker: br}))
		checkOutcome(t, "GetConnectionStatus", err, false, "broker")
		_, err = cs.Disconnect(ctx, connect.NewRequest(&feedgatev1.DisconnectRequest{Broker: br}))
		checkOutcome(t, "Disconnect", err, false, "broker")
		_, err = cs.ClearValidationCache(ctx, connect.NewRequest(&feedgatev1.ClearValidationCacheRequest{Broker: br}))
		checkOutcome(t, "ClearValidationCache", err, false, "broker")

		_, err = ad.ValidateAllTokens(ctx, connect.NewRequest(&feedgatev1.ValidateAllTokensRequest{Broker: br}))
		checkOutcome(t, "ValidateAllTokens", err, false, "broker")
		_, err = ad.ClearValidationCache(ctx, connect.NewRequest(&feedgatev1.AdminServiceClearValidationCacheRequest{Broker: br, UserId: s1}))
		checkOutcome(t, "Admin.ClearValidationCache", err, false, "broker", "user_id")
		_, err = ad.ListConnections(ctx, connect.NewRequest(&feedgatev1.ListConnectionsRequest{Broker: br, State: feedgatev1.ConnectionState(n), PageSize: n, PageToken: token}))
		checkOutcome(t, "ListConnections", err, false, "broker", "state", "page_size", "page_token")
		_, err = ad.GetValidationCacheStats(ctx, connect.NewRequest(&feedgatev1.GetValidationCacheStatsRequest{}))
		checkOutcome(t, "GetValidationCacheStats", err, false)

		if c := rt.calls.Load(); c != 0 {
			t.Fatalf("%d broker calls for a user with no connection", c)
		}
	})
}
