-- Users: an API key is stored only as its SHA-256 hash.
CREATE TABLE users (
    id         TEXT PRIMARY KEY,
    name       TEXT NOT NULL UNIQUE,
    key_hash   BLOB NOT NULL UNIQUE,
    admin      INTEGER NOT NULL DEFAULT 0,
    created_at INTEGER NOT NULL,
    revoked_at INTEGER
) STRICT;

-- One row per (user, broker): the connection state and the sealed token.
-- Times are Unix nanoseconds; NULL means never.
CREATE TABLE broker_connections (
    user_id           TEXT NOT NULL REFERENCES users(id),
    broker            TEXT NOT NULL,
    state             TEXT NOT NULL,
    reason            TEXT NOT NULL DEFAULT '',
    sealed_token      BLOB,
    token_generation  INTEGER NOT NULL DEFAULT 0,
    broker_user_id    TEXT NOT NULL DEFAULT '',
    issued_at         INTEGER,
    expires_at        INTEGER,
    connected_at      INTEGER,
    disconnected_at   INTEGER,
    last_validated_at INTEGER,
    last_error        TEXT NOT NULL DEFAULT '',
    updated_at        INTEGER NOT NULL,
    PRIMARY KEY (user_id, broker)
) STRICT;

CREATE INDEX broker_connections_by_state ON broker_connections (state, broker);

-- The append-only audit trail behind the token-health view.
CREATE TABLE connection_events (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id          TEXT NOT NULL,
    broker           TEXT NOT NULL,
    at               INTEGER NOT NULL,
    kind             TEXT NOT NULL,
    state            TEXT NOT NULL,
    reason           TEXT NOT NULL DEFAULT '',
    token_generation INTEGER NOT NULL,
    detail           TEXT NOT NULL DEFAULT ''
) STRICT;

CREATE INDEX connection_events_by_connection ON connection_events (user_id, broker, id);

CREATE TRIGGER connection_events_no_update BEFORE UPDATE ON connection_events
BEGIN SELECT RAISE(ABORT, 'connection_events is append-only'); END;
CREATE TRIGGER connection_events_no_delete BEFORE DELETE ON connection_events
BEGIN SELECT RAISE(ABORT, 'connection_events is append-only'); END;
