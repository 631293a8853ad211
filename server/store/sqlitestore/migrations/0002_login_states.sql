-- Pending OAuth logins: the CSRF state sent to the broker's dialog, bound to
-- one user and broker, valid until expires_at (Unix nanoseconds). A state is
-- deleted in the transaction that completes its login.
CREATE TABLE login_states (
    state      TEXT PRIMARY KEY,
    user_id    TEXT NOT NULL REFERENCES users(id),
    broker     TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
) STRICT;

CREATE INDEX login_states_by_connection ON login_states (user_id, broker, expires_at);
CREATE INDEX login_states_by_expiry ON login_states (expires_at);

-- One broker account, one feedgate user: before the index below can exist,
-- any account connected to several users stays with the most recent login
-- and is disconnected from the others (their feed sockets were killing each
-- other's).
INSERT INTO connection_events (user_id, broker, at, kind, state, reason, token_generation, detail)
SELECT c.user_id, c.broker, CAST(strftime('%s', 'now') AS INTEGER) * 1000000000, 'disconnect', 'disconnected', 'logged_out',
       c.token_generation, 'the broker account is connected to another feedgate user'
FROM broker_connections c
WHERE c.state = 'connected' AND c.broker_user_id != '' AND EXISTS (
    SELECT 1 FROM broker_connections o
    WHERE o.broker = c.broker AND o.broker_user_id = c.broker_user_id AND o.state = 'connected'
      AND (o.connected_at > c.connected_at OR (o.connected_at = c.connected_at AND o.user_id > c.user_id)));

UPDATE broker_connections AS c
SET state = 'disconnected', reason = 'logged_out', sealed_token = NULL, expires_at = NULL,
    disconnected_at = CAST(strftime('%s', 'now') AS INTEGER) * 1000000000,
    updated_at = CAST(strftime('%s', 'now') AS INTEGER) * 1000000000,
    last_error = 'the broker account is connected to another feedgate user'
WHERE c.state = 'connected' AND c.broker_user_id != '' AND EXISTS (
    SELECT 1 FROM broker_connections o
    WHERE o.broker = c.broker AND o.broker_user_id = c.broker_user_id AND o.state = 'connected'
      AND (o.connected_at > c.connected_at OR (o.connected_at = c.connected_at AND o.user_id > c.user_id)));

CREATE UNIQUE INDEX broker_connections_one_user_per_account
    ON broker_connections (broker, broker_user_id) WHERE state = 'connected' AND broker_user_id != '';
