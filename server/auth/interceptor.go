package auth

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"strings"

	"connectrpc.com/connect"

	"github.com/feedgate/feedgate/gen/go/feedgate/v1/feedgatev1connect"
	"github.com/feedgate/feedgate/server/connguard"
	"github.com/feedgate/feedgate/server/store"
)

type userKey struct{}

// WithUser returns ctx carrying u, as the interceptor does.
func WithUser(ctx context.Context, u store.User) context.Context {
	return context.WithValue(ctx, userKey{}, u)
}

// UserFrom returns the authenticated user of a request.
func UserFrom(ctx context.Context) (store.User, bool) {
	u, ok := ctx.Value(userKey{}).(store.User)
	return u, ok
}

const adminPrefix = "/" + feedgatev1connect.AdminServiceName + "/"

// Interceptor authenticates every RPC it wraps from the request's
// "Authorization: Bearer KEY" header and refuses non-admin keys on
// AdminService. Mount it on the feedgate services only: health and
// reflection stay open. Put Middleware in front of those handlers too, so
// a request is authenticated before its body is read or inflated; the
// interceptor then finds the user in the context.
type Interceptor struct {
	store   store.Store
	logger  *slog.Logger
	refusal *connguard.Sampler
	streams streams
	// OnRevoked, if set before serving, is called with the id of a user
	// whose key was found revoked while it had streams open.
	OnRevoked func(userID string)
	errw      *connect.ErrorWriter
}

// NewInterceptor returns the interceptor. Refused calls are logged at
// most a few a second, with a count of those left out.
func NewInterceptor(st store.Store, logger *slog.Logger) *Interceptor {
	return &Interceptor{store: st, logger: logger, refusal: connguard.NewSampler(logger, 5, 20), errw: connect.NewErrorWriter()}
}

// feedgatePrefix starts the path of every feedgate RPC.
const feedgatePrefix = "/feedgate.v1."

// Middleware authenticates requests for the feedgate services before
// connect reads their bodies: a request without a plausible key, or with
// a key that is unknown or revoked, is answered in its own protocol
// (Connect, gRPC or gRPC-Web) with Unauthenticated, its body never read,
// decompressed or decoded. Other paths pass through.
func (i *Interceptor) Middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !strings.HasPrefix(r.URL.Path, feedgatePrefix) {
			next.ServeHTTP(w, r)
			return
		}
		ctx, err := i.authenticateOffStack(r.Context(), r.URL.Path, r.Header.Get("Authorization"))
		if err != nil {
			i.refused(r.Context(), r.URL.Path, r.RemoteAddr, err)
			if i.errw.IsSupported(r) {
				_ = i.errw.Write(w, r, err)
			} else {
				http.Error(w, err.Error(), http.StatusUnauthorized)
			}
			return
		}
		connguard.MarkAuthenticated(ctx)
		next.ServeHTTP(w, r.WithContext(ctx))
	})
}

var _ connect.Interceptor = (*Interceptor)(nil)

// authenticate returns ctx with the user, or a connect error with the code
// of design.md's error table and no detail. A key that cannot be a
// feedgate key is refused without a lookup.
func (i *Interceptor) authenticate(ctx context.Context, procedure, header string) (context.Context, error) {
	if u, ok := UserFrom(ctx); ok {
		return ctx, i.authorize(procedure, u) // already done by Middleware
	}
	scheme, key, ok := strings.Cut(header, " ")
	key = strings.TrimSpace(key)
	if header == "" || !ok || !strings.EqualFold(scheme, "Bearer") || key == "" {
		return nil, connect.NewError(connect.CodeUnauthenticated, errors.New("missing API key: send the header \"Authorization: Bearer <feedgate API key>\""))
	}
	if !Plausible(key) {
		return nil, connect.NewError(connect.CodeUnauthenticated, errors.New("invalid API key"))
	}
	u, err := Lookup(ctx, i.store, key)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return nil, connect.NewError(connect.CodeUnauthenticated, errors.New("invalid API key"))
	case errors.Is(err, ErrRevoked):
		return nil, connect.NewError(connect.CodeUnauthenticated, errors.New("API key revoked"))
	case err != nil:
		i.logger.ErrorContext(ctx, "API key lookup failed", "procedure", procedure, "err", err)
		return nil, connect.NewError(connect.CodeInternal, errors.New("internal error"))
	}
	if err := i.authorize(procedure, u); err != nil {
		return nil, err
	}
	return WithUser(ctx, u), nil
}

// authenticateOffStack is authenticate with the key lookup on a
// short-lived goroutine (see offStack); a request the Middleware already
// authenticated needs neither.
func (i *Interceptor) authenticateOffStack(ctx context.Context, procedure, header string) (context.Context, error) {
	if u, ok := UserFrom(ctx); ok {
		return ctx, i.authorize(procedure, u)
	}
	return offStack(func() (context.Context, error) { return i.authenticate(ctx, procedure, header) })
}

// authorize keeps AdminService to admin keys.
func (i *Interceptor) authorize(procedure string, u store.User) error {
	if strings.HasPrefix(procedure, adminPrefix) && !u.Admin {
		return connect.NewError(connect.CodePermissionDenied, errors.New("AdminService needs an admin API key"))
	}
	return nil
}

// WrapUnary implements connect.Interceptor.
func (i *Interceptor) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		if req.Spec().IsClient {
			return next(ctx, req)
		}
		authed, err := i.authenticate(ctx, req.Spec().Procedure, req.Header().Get("Authorization"))
		if err != nil {
			i.refused(ctx, req.Spec().Procedure, req.Peer().Addr, err)
			return nil, err
		}
		return next(authed, req)
	}
}

// WrapStreamingClient implements connect.Interceptor; clients pass through.
func (i *Interceptor) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return next
}

// WrapStreamingHandler implements connect.Interceptor.
func (i *Interceptor) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return func(ctx context.Context, conn connect.StreamingHandlerConn) error {
		authed, err := i.authenticateOffStack(ctx, conn.Spec().Procedure, conn.RequestHeader().Get("Authorization"))
		if err != nil {
			i.refused(ctx, conn.Spec().Procedure, conn.Peer().Addr, err)
			return err
		}
		ctx = authed
		u, _ := UserFrom(ctx)
		ctx, cancel := context.WithCancelCause(ctx)
		defer cancel(nil)
		defer i.streams.add(u.ID, cancel)()
		err = next(ctx, conn)
		if errors.Is(context.Cause(ctx), errKeyRevokedCause) {
			return revokedError()
		}
		return err
	}
}

// refused logs a refused call (never the key it carried), sampled.
func (i *Interceptor) refused(ctx context.Context, procedure, peer string, err error) {
	i.refusal.Info(ctx, "rpc refused", "procedure", procedure, "peer", peer, "code", connect.CodeOf(err).String(), "reason", err.Error())
}

// offStack runs f on a short-lived goroutine and waits for it. A stream's
// handler goroutine lives as long as the stream, and Go never shrinks a
// stack that is still a quarter used: the SQLite key lookup (deep,
// transpiled C) would leave every idle stream holding a 16 KB stack instead
// of 8 KB. Measured with feedload's idle scenario.
func offStack(f func() (context.Context, error)) (context.Context, error) {
	type result struct {
		ctx context.Context
		err error
	}
	ch := make(chan result, 1)
	go func() {
		c, err := f()
		ch <- result{c, err}
	}()
	r := <-ch
	return r.ctx, r.err
}
