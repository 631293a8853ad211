// Package sqlitestore implements store.Store on SQLite (modernc.org/sqlite,
// no cgo): WAL journal, synchronous=FULL, busy_timeout=5000, immediate
// write transactions on one writer connection, and a pool of read-only
// connections beside it. Migrations are embedded and forward-only.
package sqlitestore

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/feedgate/feedgate/server/broker"
	"github.com/feedgate/feedgate/server/store"

	_ "modernc.org/sqlite" // registers the "sqlite" driver
)

//go:embed migrations/*.sql
var migrationFS embed.FS

// ErrNewerSchema means the database was written by a newer feedgate.
var ErrNewerSchema = errors.New("sqlitestore: database schema is newer than this feedgate")

// Store is the SQLite store. It is safe for concurrent use.
type Store struct {
	w, r   *sql.DB
	closed atomic.Bool
	// Statements of the hot reads (every RPC's key lookup, every broker
	// call's connection lookup), prepared once on the reader pool.
	userByHash, connByKey *sql.Stmt
}

var _ store.Store = (*Store)(nil)

func dsn(path string, readOnly bool) string {
	q := url.Values{}
	q.Add("_pragma", "busy_timeout(5000)")
	q.Add("_pragma", "journal_mode(WAL)")
	q.Add("_pragma", "synchronous(FULL)")
	q.Add("_pragma", "foreign_keys(1)")
	if readOnly {
		q.Add("_pragma", "query_only(1)")
	} else {
		q.Set("_txlock", "immediate")
	}
	return "file:" + path + "?" + q.Encode()
}

// Open opens (creating if needed) the database file at path and applies
// pending migrations. It fails with ErrNewerSchema when the file was
// migrated by a newer version.
func Open(ctx context.Context, path string) (*Store, error) {
	if err := ownerOnly(path); err != nil {
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	w, err := sql.Open("sqlite", dsn(path, false))
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	w.SetMaxOpenConns(1)
	w.SetMaxIdleConns(1)
	w.SetConnMaxLifetime(0)
	if err := w.PingContext(ctx); err != nil {
		_ = w.Close()
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	if err := migrate(ctx, w); err != nil {
		_ = w.Close()
		return nil, fmt.Errorf("migrate %s: %w", path, err)
	}
	r, err := sql.Open("sqlite", dsn(path, true))
	if err != nil {
		_ = w.Close()
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	r.SetMaxOpenConns(4)
	r.SetMaxIdleConns(4)
	s := &Store{w: w, r: r}
	if s.userByHash, err = r.PrepareContext(ctx, `SELECT `+userColumns+` FROM users WHERE key_hash = ?`); err == nil {
		s.connByKey, err = r.PrepareContext(ctx, connByKeyQuery)
	}
	if err != nil {
		_ = s.Close()
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	return s, nil
}

// ownerOnly creates the database file with mode 0600 if it does not exist
// and takes group and world access away from it and its -wal and -shm
// files if they have it: they hold user names, key hashes and broker
// account ids. SQLite creates the -wal and -shm files with the database
// file's mode.
func ownerOnly(path string) error {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	for _, p := range []string{path, path + "-wal", path + "-shm"} {
		st, err := os.Stat(p)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return err
		}
		if st.Mode().Perm()&0o077 != 0 {
			if err := os.Chmod(p, st.Mode().Perm()&0o700); err != nil {
				return err
			}
		}
	}
	return nil
}

type migration struct {
	version int
	name    string
	sql     string
}

func migrations() ([]migration, error) {
	entries, err := fs.ReadDir(migrationFS, "migrations")
	if err != nil {
		return nil, err
	}
	var ms []migration
	for _, e := range entries {
		num, _, ok := strings.Cut(e.Name(), "_")
		v, err := strconv.Atoi(num)
		if !ok || err != nil {
			return nil, fmt.Errorf("migration %q: name must start with a number", e.Name())
		}
		b, err := fs.ReadFile(migrationFS, "migrations/"+e.Name())
		if err != nil {
			return nil, err
		}
		ms = append(ms, migration{version: v, name: e.Name(), sql: string(b)})
	}
	sort.Slice(ms, func(i, j int) bool { return ms[i].version < ms[j].version })
	return ms, nil
}

// SchemaVersion is the newest migration this build knows.
func SchemaVersion() int {
	ms, err := migrations()
	if err != nil || len(ms) == 0 {
		return 0
	}
	return ms[len(ms)-1].version
}

func migrate(ctx context.Context, db *sql.DB) error {
	ms, err := migrations()
	if err != nil {
		return err
	}
	if _, err := db.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
		version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at INTEGER NOT NULL) STRICT`); err != nil {
		return err
	}
	var current int
	if err := db.QueryRowContext(ctx, `SELECT COALESCE(MAX(version), 0) FROM schema_migrations`).Scan(&current); err != nil {
		return err
	}
	if len(ms) > 0 && current > ms[len(ms)-1].version {
		return fmt.Errorf("%w (database version %d, this build knows %d)", ErrNewerSchema, current, ms[len(ms)-1].version)
	}
	for _, m := range ms {
		if m.version <= current {
			continue
		}
		tx, err := db.BeginTx(ctx, nil)
		if err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, m.sql); err != nil {
			_ = tx.Rollback()
			return fmt.Errorf("%s: %w", m.name, err)
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)`,
			m.version, m.name, time.Now().UnixNano()); err != nil {
			_ = tx.Rollback()
			return err
		}
		if err := tx.Commit(); err != nil {
			return err
		}
	}
	return nil
}

// Close closes both connection pools.
func (s *Store) Close() error {
	if !s.closed.CompareAndSwap(false, true) {
		return nil
	}
	var errs []error
	for _, st := range []*sql.Stmt{s.userByHash, s.connByKey} {
		if st != nil {
			errs = append(errs, st.Close())
		}
	}
	return errors.Join(append(errs, s.r.Close(), s.w.Close())...)
}

func (s *Store) check() error {
	if s.closed.Load() {
		return store.ErrClosed
	}
	return nil
}

// nanos converts a time to its column value; the zero time is NULL.
func nanos(t time.Time) any {
	if t.IsZero() {
		return nil
	}
	return t.UnixNano()
}

func fromNanos(v sql.NullInt64) time.Time {
	if !v.Valid {
		return time.Time{}
	}
	return time.Unix(0, v.Int64).UTC()
}

func isUniqueViolation(err error) bool {
	return err != nil && strings.Contains(err.Error(), "UNIQUE constraint failed")
}

const userColumns = `id, name, key_hash, admin, created_at, revoked_at`

type scanner interface{ Scan(dest ...any) error }

func scanUser(row scanner) (store.User, error) {
	var (
		u       store.User
		hash    []byte
		created int64
		revoked sql.NullInt64
	)
	if err := row.Scan(&u.ID, &u.Name, &hash, &u.Admin, &created, &revoked); err != nil {
		if errors.Is(err, sql.ErrNoRows) {
			return store.User{}, store.ErrNotFound
		}
		return store.User{}, err
	}
	copy(u.KeyHash[:], hash)
	u.CreatedAt = time.Unix(0, created).UTC()
	u.RevokedAt = fromNanos(revoked)
	return u, nil
}

// CreateUser implements store.Store.
func (s *Store) CreateUser(ctx context.Context, u store.User) error {
	if err := s.check(); err != nil {
		return err
	}
	_, err := s.w.ExecContext(ctx, `INSERT INTO users (`+userColumns+`) VALUES (?, ?, ?, ?, ?, ?)`,
		u.ID, u.Name, u.KeyHash[:], u.Admin, u.CreatedAt.UnixNano(), nanos(u.RevokedAt))
	if isUniqueViolation(err) {
		return fmt.Errorf("user %q: %w", u.Name, store.ErrConflict)
	}
	return err
}

func (s *Store) userWhere(ctx context.Context, where string, arg any) (store.User, error) {
	if err := s.check(); err != nil {
		return store.User{}, err
	}
	return scanUser(s.r.QueryRowContext(ctx, `SELECT `+userColumns+` FROM users WHERE `+where, arg))
}

// UserByKeyHash implements store.Store.
func (s *Store) UserByKeyHash(ctx context.Context, hash [32]byte) (store.User, error) {
	if err := s.check(); err != nil {
		return store.User{}, err
	}
	return scanUser(s.userByHash.QueryRowContext(ctx, hash[:]))
}

// UserByID implements store.Store.
func (s *Store) UserByID(ctx context.Context, id string) (store.User, error) {
	return s.userWhere(ctx, `id = ?`, id)
}

// UserByName implements store.Store.
func (s *Store) UserByName(ctx context.Context, name string) (store.User, error) {
	return s.userWhere(ctx, `name = ?`, name)
}

// ListUsers implements store.Store.
func (s *Store) ListUsers(ctx context.Context) ([]store.User, error) {
	if err := s.check(); err != nil {
		return nil, err
	}
	rows, err := s.r.QueryContext(ctx, `SELECT `+userColumns+` FROM users ORDER BY created_at, id`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var us []store.User
	for rows.Next() {
		u, err := scanUser(rows)
		if err != nil {
			return nil, err
		}
		us = append(us, u)
	}
	return us, rows.Err()
}

// CountUsers implements store.Store.
func (s *Store) CountUsers(ctx context.Context) (int, error) {
	if err := s.check(); err != nil {
		return 0, err
	}
	var n int
	err := s.r.QueryRowContext(ctx, `SELECT COUNT(*) FROM users`).Scan(&n)
	return n, err
}

// RevokeUser implements store.Store.
func (s *Store) RevokeUser(ctx context.Context, id string, at time.Time) error {
	return s.inTx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `UPDATE users SET revoked_at = COALESCE(revoked_at, ?) WHERE id = ?`, at.UnixNano(), id)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return store.ErrNotFound
		}
		const detail = "the feedgate user was revoked"
		if _, err := tx.ExecContext(ctx, `INSERT INTO connection_events
			(user_id, broker, at, kind, state, reason, token_generation, detail)
			SELECT user_id, broker, ?, 'user_revoked', ?, ?, token_generation, ?
			FROM broker_connections WHERE user_id = ? AND state = ?`,
			at.UnixNano(), string(store.StateDisconnected), string(store.ReasonLoggedOut), detail, id, string(store.StateConnected)); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `UPDATE broker_connections
			SET state = ?, reason = ?, sealed_token = NULL, expires_at = NULL, disconnected_at = ?, updated_at = ?, last_error = ?
			WHERE user_id = ? AND state = ?`,
			string(store.StateDisconnected), string(store.ReasonLoggedOut), at.UnixNano(), at.UnixNano(), detail, id, string(store.StateConnected)); err != nil {
			return err
		}
		_, err = tx.ExecContext(ctx, `DELETE FROM login_states WHERE user_id = ?`, id)
		return err
	})
}

// inTx runs fn in one IMMEDIATE transaction on the writer connection and
// commits it if fn succeeds.
func (s *Store) inTx(ctx context.Context, fn func(*sql.Tx) error) error {
	if err := s.check(); err != nil {
		return err
	}
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer func() { _ = tx.Rollback() }()
	if err := fn(tx); err != nil {
		return err
	}
	return tx.Commit()
}

const connColumns = `user_id, broker, state, reason, sealed_token, token_generation, broker_user_id,
	issued_at, expires_at, connected_at, disconnected_at, last_validated_at, last_error, updated_at`

func scanConn(row scanner, extra ...any) (store.Connection, error) {
	var (
		c                                          store.Connection
		b, st, reason                              string
		issued, expires, conn, disc, valid, update sql.NullInt64
	)
	dest := append([]any{&c.UserID, &b, &st, &reason, &c.SealedToken, &c.TokenGeneration, &c.BrokerUserID,
		&issued, &expires, &conn, &disc, &valid, &c.LastError, &update}, extra...)
	if err := row.Scan(dest...); err != nil {
		if errors.Is(err, sql.ErrNoRows) {
			return store.Connection{}, store.ErrNotFound
		}
		return store.Connection{}, err
	}
	c.Broker, c.State, c.Reason = broker.Kind(b), store.State(st), store.Reason(reason)
	c.IssuedAt, c.ExpiresAt, c.ConnectedAt = fromNanos(issued), fromNanos(expires), fromNanos(conn)
	c.DisconnectedAt, c.LastValidatedAt, c.UpdatedAt = fromNanos(disc), fromNanos(valid), fromNanos(update)
	return c, nil
}

type queryer interface {
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

const connByKeyQuery = `SELECT ` + connColumns + ` FROM broker_connections WHERE user_id = ? AND broker = ?`

func getConn(ctx context.Context, q queryer, userID string, b broker.Kind) (store.Connection, error) {
	return scanConn(q.QueryRowContext(ctx, connByKeyQuery, userID, string(b)))
}

// GetConnection implements store.Store.
func (s *Store) GetConnection(ctx context.Context, userID string, b broker.Kind) (store.Connection, error) {
	if err := s.check(); err != nil {
		return store.Connection{}, err
	}
	return scanConn(s.connByKey.QueryRowContext(ctx, userID, string(b)))
}

// UpdateConnection implements store.Store. The read, fn and the writes run
// in one IMMEDIATE transaction on the single writer connection.
func (s *Store) UpdateConnection(ctx context.Context, userID string, b broker.Kind, fn store.UpdateFunc) (store.Connection, error) {
	var c store.Connection
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		var err error
		c, err = updateConnection(ctx, tx, userID, b, fn)
		return err
	})
	if err != nil {
		return store.Connection{}, err
	}
	return c, nil
}

func updateConnection(ctx context.Context, tx *sql.Tx, userID string, b broker.Kind, fn store.UpdateFunc) (store.Connection, error) {
	c, err := getConn(ctx, tx, userID, b)
	if errors.Is(err, store.ErrNotFound) {
		c = store.Connection{UserID: userID, Broker: b}
	} else if err != nil {
		return store.Connection{}, err
	}
	ev, err := fn(&c)
	if err != nil {
		return store.Connection{}, err
	}
	c.UserID, c.Broker = userID, b
	if c.State == "" {
		return store.Connection{}, errors.New("sqlitestore: connection state must be set")
	}
	if c.UpdatedAt.IsZero() {
		c.UpdatedAt = time.Now().UTC()
	}
	_, err = tx.ExecContext(ctx, `INSERT INTO broker_connections (`+connColumns+`)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
		ON CONFLICT (user_id, broker) DO UPDATE SET
			state = excluded.state, reason = excluded.reason, sealed_token = excluded.sealed_token,
			token_generation = excluded.token_generation, broker_user_id = excluded.broker_user_id,
			issued_at = excluded.issued_at, expires_at = excluded.expires_at,
			connected_at = excluded.connected_at, disconnected_at = excluded.disconnected_at,
			last_validated_at = excluded.last_validated_at, last_error = excluded.last_error,
			updated_at = excluded.updated_at`,
		c.UserID, string(c.Broker), string(c.State), string(c.Reason), c.SealedToken, c.TokenGeneration, c.BrokerUserID,
		nanos(c.IssuedAt), nanos(c.ExpiresAt), nanos(c.ConnectedAt), nanos(c.DisconnectedAt), nanos(c.LastValidatedAt),
		c.LastError, c.UpdatedAt.UnixNano())
	if err != nil {
		if strings.Contains(err.Error(), "FOREIGN KEY") {
			return store.Connection{}, fmt.Errorf("user %q: %w", userID, store.ErrNotFound)
		}
		if isUniqueViolation(err) {
			return store.Connection{}, fmt.Errorf("%s account %q: %w", b, c.BrokerUserID, store.ErrAccountInUse)
		}
		return store.Connection{}, err
	}
	if ev == nil {
		return c, nil
	}
	if ev.ConsumeLoginState != "" {
		res, err := tx.ExecContext(ctx, `DELETE FROM login_states WHERE state = ? AND user_id = ? AND broker = ?`, ev.ConsumeLoginState, userID, string(b))
		if err != nil {
			return store.Connection{}, err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return store.Connection{}, store.ErrLoginStateUsed
		}
	}
	if ev.NewLoginState != nil {
		if err := insertLoginState(ctx, tx, *ev.NewLoginState); err != nil {
			return store.Connection{}, err
		}
	}
	at := ev.At
	if at.IsZero() {
		at = c.UpdatedAt
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO connection_events
		(user_id, broker, at, kind, state, reason, token_generation, detail) VALUES (?, ?, ?, ?, ?, ?, ?, ?)`,
		userID, string(b), at.UnixNano(), ev.Kind, string(c.State), string(c.Reason), c.TokenGeneration, ev.Detail); err != nil {
		return store.Connection{}, err
	}
	return c, nil
}

// ListConnections implements store.Store.
func (s *Store) ListConnections(ctx context.Context, f store.ConnectionFilter) ([]store.UserConnection, error) {
	if err := s.check(); err != nil {
		return nil, err
	}
	limit := f.Limit
	if limit <= 0 {
		limit = 100
	}
	var (
		where []string
		args  []any
	)
	if f.Broker != "" {
		where, args = append(where, "c.broker = ?"), append(args, string(f.Broker))
	}
	if f.State != "" {
		where, args = append(where, "c.state = ?"), append(args, string(f.State))
	}
	if f.AfterUserID != "" {
		where = append(where, "(c.user_id > ? OR (c.user_id = ? AND c.broker > ?))")
		args = append(args, f.AfterUserID, f.AfterUserID, string(f.AfterBroker))
	}
	q := `SELECT ` + prefixed("c.", connColumns) + `, ` + prefixed("u.", userColumns) +
		` FROM broker_connections c JOIN users u ON u.id = c.user_id`
	if len(where) > 0 {
		q += " WHERE " + strings.Join(where, " AND ")
	}
	q += " ORDER BY c.user_id, c.broker LIMIT ?"
	args = append(args, limit)
	rows, err := s.r.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []store.UserConnection
	for rows.Next() {
		var (
			u       store.User
			hash    []byte
			created int64
			revoked sql.NullInt64
		)
		c, err := scanConn(rows, &u.ID, &u.Name, &hash, &u.Admin, &created, &revoked)
		if err != nil {
			return nil, err
		}
		copy(u.KeyHash[:], hash)
		u.CreatedAt, u.RevokedAt = time.Unix(0, created).UTC(), fromNanos(revoked)
		out = append(out, store.UserConnection{User: u, Connection: c})
	}
	return out, rows.Err()
}

func prefixed(p, cols string) string {
	parts := strings.Split(cols, ",")
	for i, c := range parts {
		parts[i] = p + strings.TrimSpace(c)
	}
	return strings.Join(parts, ", ")
}

// Events implements store.Store.
func (s *Store) Events(ctx context.Context, userID string, b broker.Kind) ([]store.Event, error) {
	if err := s.check(); err != nil {
		return nil, err
	}
	rows, err := s.r.QueryContext(ctx, `SELECT id, user_id, broker, at, kind, state, reason, token_generation, detail
		FROM connection_events WHERE user_id = ? AND broker = ? ORDER BY id`, userID, string(b))
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var evs []store.Event
	for rows.Next() {
		var (
			e              store.Event
			at             int64
			bk, st, reason string
		)
		if err := rows.Scan(&e.ID, &e.UserID, &bk, &at, &e.Kind, &st, &reason, &e.Generation, &e.Detail); err != nil {
			return nil, err
		}
		e.Broker, e.State, e.Reason, e.At = broker.Kind(bk), store.State(st), store.Reason(reason), time.Unix(0, at).UTC()
		evs = append(evs, e)
	}
	return evs, rows.Err()
}

type execer interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
}

func insertLoginState(ctx context.Context, x execer, ls store.LoginState) error {
	if _, err := x.ExecContext(ctx, `DELETE FROM login_states WHERE expires_at <= ?`, ls.CreatedAt.UnixNano()); err != nil {
		return err
	}
	_, err := x.ExecContext(ctx, `INSERT INTO login_states (state, user_id, broker, created_at, expires_at) VALUES (?, ?, ?, ?, ?)`,
		ls.State, ls.UserID, string(ls.Broker), ls.CreatedAt.UnixNano(), ls.ExpiresAt.UnixNano())
	switch {
	case isUniqueViolation(err):
		return fmt.Errorf("login state: %w", store.ErrConflict)
	case err != nil && strings.Contains(err.Error(), "FOREIGN KEY"):
		return fmt.Errorf("user %q: %w", ls.UserID, store.ErrNotFound)
	}
	return err
}

// CreateLoginState implements store.Store.
func (s *Store) CreateLoginState(ctx context.Context, ls store.LoginState) error {
	return s.inTx(ctx, func(tx *sql.Tx) error { return insertLoginState(ctx, tx, ls) })
}

const loginStateColumns = `state, user_id, broker, created_at, expires_at`

func scanLoginState(row scanner) (store.LoginState, error) {
	var (
		ls               store.LoginState
		b                string
		created, expires int64
	)
	if err := row.Scan(&ls.State, &ls.UserID, &b, &created, &expires); err != nil {
		if errors.Is(err, sql.ErrNoRows) {
			return store.LoginState{}, store.ErrNotFound
		}
		return store.LoginState{}, err
	}
	ls.Broker, ls.CreatedAt, ls.ExpiresAt = broker.Kind(b), time.Unix(0, created).UTC(), time.Unix(0, expires).UTC()
	return ls, nil
}

// LoginState implements store.Store.
func (s *Store) LoginState(ctx context.Context, state string) (store.LoginState, error) {
	if err := s.check(); err != nil {
		return store.LoginState{}, err
	}
	return scanLoginState(s.r.QueryRowContext(ctx, `SELECT `+loginStateColumns+` FROM login_states WHERE state = ?`, state))
}

// LatestLoginState implements store.Store.
func (s *Store) LatestLoginState(ctx context.Context, userID string, b broker.Kind) (store.LoginState, error) {
	if err := s.check(); err != nil {
		return store.LoginState{}, err
	}
	return scanLoginState(s.r.QueryRowContext(ctx, `SELECT `+loginStateColumns+` FROM login_states
		WHERE user_id = ? AND broker = ? ORDER BY expires_at DESC, state LIMIT 1`, userID, string(b)))
}

// DeleteLoginState implements store.Store.
func (s *Store) DeleteLoginState(ctx context.Context, state string) error {
	if err := s.check(); err != nil {
		return err
	}
	res, err := s.w.ExecContext(ctx, `DELETE FROM login_states WHERE state = ?`, state)
	if err != nil {
		return err
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return store.ErrNotFound
	}
	return nil
}
