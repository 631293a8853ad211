// Package store defines feedgate's durable state: users with their hashed
// API keys, one connection per (user, broker) holding the sealed broker
// token and its state, and the append-only log of connection events. The
// Store interface has one production implementation (sqlitestore) and one
// conformance suite (storetest) that every implementation must pass.
package store

import (
	"context"
	"errors"
	"time"

	"github.com/feedgate/feedgate/server/broker"
)

// Errors returned by every Store implementation. Callers test them with
// errors.Is.
var (
	// ErrNotFound means the user or connection does not exist.
	ErrNotFound = errors.New("store: not found")
	// ErrConflict means a unique value (a user name or key) is taken.
	ErrConflict = errors.New("store: already exists")
	// ErrClosed means the store was closed.
	ErrClosed = errors.New("store: closed")
	// ErrAccountInUse means UpdateConnection would connect a broker account
	// (Connection.BrokerUserID) that is already connected to another user:
	// one broker account belongs to one feedgate user at a time.
	ErrAccountInUse = errors.New("store: the broker account is connected to another user")
	// ErrLoginStateUsed means the login state an update consumes is gone:
	// unknown, already used by another login, or deleted with its user.
	ErrLoginStateUsed = errors.New("store: login state unknown or already used")
)

// User is a feedgate account. Its API key is known only by its SHA-256 hash.
type User struct {
	ID        string
	Name      string
	Admin     bool
	KeyHash   [32]byte
	CreatedAt time.Time
	// RevokedAt is when the user's key was revoked; zero while active.
	RevokedAt time.Time
}

// Active reports whether the user's key is still accepted.
func (u User) Active() bool { return u.RevokedAt.IsZero() }

// State is a connection's state.
type State string

// Connection states.
const (
	StateConnected    State = "connected"
	StateDisconnected State = "disconnected"
)

// Reason says why a connection is disconnected.
type Reason string

// Disconnect reasons; ReasonNone while connected.
const (
	ReasonNone         Reason = ""
	ReasonTokenRevoked Reason = "token_revoked"
	ReasonTokenExpired Reason = "token_expired"
	ReasonNotConnected Reason = "not_connected"
	ReasonLoggedOut    Reason = "logged_out"
)

// Connection is one user's connection to one broker.
type Connection struct {
	UserID string
	Broker broker.Kind
	State  State
	Reason Reason
	// SealedToken is the broker token sealed by package seal; nil when
	// feedgate holds no token.
	SealedToken []byte
	// TokenGeneration increases with every successful login, so an answer
	// observed with an older token can be told from one about the current.
	TokenGeneration int64
	BrokerUserID    string
	IssuedAt        time.Time
	ExpiresAt       time.Time
	ConnectedAt     time.Time
	DisconnectedAt  time.Time
	LastValidatedAt time.Time
	// LastError is the last broker failure for people; never a secret.
	LastError string
	UpdatedAt time.Time
}

// Event is one entry of the append-only connection event log.
type Event struct {
	ID         int64
	UserID     string
	Broker     broker.Kind
	At         time.Time
	Kind       string // e.g. "login", "disconnect", "validated", "logout"
	State      State
	Reason     Reason
	Generation int64
	Detail     string

	// ConsumeLoginState, when set, names a login state the change uses up:
	// it is deleted in the same transaction, and the whole update fails
	// with ErrLoginStateUsed if it no longer exists. Not part of the log.
	ConsumeLoginState string
	// NewLoginState, when set, is a login state created in the same
	// transaction. Not part of the log.
	NewLoginState *LoginState
}

// LoginState is a pending OAuth login: the CSRF state carried through the
// broker's login dialog, bound to one user and one broker, accepted until
// ExpiresAt and deleted by the login it completes.
type LoginState struct {
	State     string
	UserID    string
	Broker    broker.Kind
	CreatedAt time.Time
	ExpiresAt time.Time
}

// ConnectionFilter selects connections for ListConnections. Zero fields
// match everything.
type ConnectionFilter struct {
	Broker broker.Kind
	State  State
	// After is the (user id, broker) the previous page ended with.
	AfterUserID string
	AfterBroker broker.Kind
	// Limit is the page size; 0 means 100.
	Limit int
}

// UserConnection is a connection with its user.
type UserConnection struct {
	User       User
	Connection Connection
}

// UpdateFunc changes a connection inside Store.UpdateConnection. It gets the
// current row (State "" and zero fields when the row does not exist yet) and
// returns the event to append, or nil to append none (the event may also
// consume or create a login state in the same transaction). Returning an
// error aborts the update. It may be called more than once and must not have
// side effects.
type UpdateFunc func(c *Connection) (*Event, error)

// Store is feedgate's durable state. Implementations are safe for
// concurrent use. Every write is durable when the call returns.
type Store interface {
	// CreateUser adds u; ErrConflict when its name or key hash is taken.
	CreateUser(ctx context.Context, u User) error
	// UserByKeyHash returns the user whose key has this hash, revoked or not.
	UserByKeyHash(ctx context.Context, hash [32]byte) (User, error)
	// UserByID returns one user.
	UserByID(ctx context.Context, id string) (User, error)
	// UserByName returns one user.
	UserByName(ctx context.Context, name string) (User, error)
	// ListUsers returns every user, oldest first.
	ListUsers(ctx context.Context) ([]User, error)
	// RevokeUser marks the user's key revoked at the given time and, in the
	// same transaction, disconnects every connected broker connection of
	// the user (reason logged_out, the sealed token dropped, an event
	// "user_revoked" each) and deletes the user's login states. Revoking
	// again keeps the first time.
	RevokeUser(ctx context.Context, id string, at time.Time) error
	// CountUsers returns how many users exist.
	CountUsers(ctx context.Context) (int, error)

	// GetConnection returns one connection; ErrNotFound when the user never
	// had one with this broker.
	GetConnection(ctx context.Context, userID string, b broker.Kind) (Connection, error)
	// UpdateConnection reads the connection, applies fn and writes the row
	// and fn's event atomically, serialised with every other writer, so
	// concurrent updates of one row never lose one another. It fails with
	// ErrAccountInUse when the row would be connected to a broker account
	// another user's connected row holds.
	UpdateConnection(ctx context.Context, userID string, b broker.Kind, fn UpdateFunc) (Connection, error)
	// ListConnections returns connections ordered by (user id, broker).
	ListConnections(ctx context.Context, f ConnectionFilter) ([]UserConnection, error)
	// Events returns a connection's events, oldest first.
	Events(ctx context.Context, userID string, b broker.Kind) ([]Event, error)

	// CreateLoginState stores a new login state (ErrConflict if its State
	// is taken, ErrNotFound if its user does not exist) and deletes every
	// state that expired by its CreatedAt.
	CreateLoginState(ctx context.Context, ls LoginState) error
	// LoginState returns one login state by its State, expired or not;
	// ErrNotFound when there is none.
	LoginState(ctx context.Context, state string) (LoginState, error)
	// LatestLoginState returns the user's login state for b that expires
	// last, expired or not; ErrNotFound when there is none.
	LatestLoginState(ctx context.Context, userID string, b broker.Kind) (LoginState, error)
	// DeleteLoginState deletes one login state; ErrNotFound when there is
	// none.
	DeleteLoginState(ctx context.Context, state string) error

	// Close releases the store. Calls after Close fail with ErrClosed.
	Close() error
}
