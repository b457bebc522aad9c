-- A replay is done in chunks, each its own short write, so other writes go
-- on between them; the row is its progress.
CREATE TABLE replays (
    id          TEXT PRIMARY KEY,
    tenant_id   TEXT NOT NULL,
    endpoint_id TEXT NOT NULL,
    -- The last event sequence looked at: the next chunk starts after it.
    cursor      INTEGER NOT NULL,
    -- Only events created at or after this time, when given.
    since       TEXT,
    -- The tenant's latest sequence when the replay was asked for: it ends there.
    up_to       INTEGER NOT NULL,
    -- Events queued so far.
    queued      INTEGER NOT NULL DEFAULT 0,
    -- running | done
    status      TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL
);
CREATE INDEX replays_running ON replays (status, id);
CREATE INDEX replays_by_endpoint ON replays (endpoint_id, id);
