-- Webhook endpoints and the delivery queue (DESIGN.md §3.3, §3.4).

-- Bumped whenever the tenant's endpoints change, under the tenant's lock, so
-- a writer knows its cached endpoint list is current.
ALTER TABLE tenants ADD COLUMN endpoints_version INTEGER NOT NULL DEFAULT 0;

CREATE TABLE endpoints (
    id             TEXT PRIMARY KEY,
    tenant_id      TEXT NOT NULL,
    -- Bumped on every change: caches compare it.
    revision       INTEGER NOT NULL,
    created_at     TEXT NOT NULL,
    updated_at     TEXT NOT NULL,
    -- Soft delete: a deleted endpoint stays for disclosure accounting.
    deleted_at     TEXT,
    disabled       INTEGER NOT NULL DEFAULT 0,
    -- Why it was disabled: "manual", "gone" (410) or "failing" (72 h).
    disabled_reason TEXT,
    -- url, description, eventTypes, filter, payload, ordering, rateLimit,
    -- headers, signing (JSON).
    config         TEXT NOT NULL,
    -- The signing secrets, newest first, each with its expiry (JSON).
    secrets        TEXT NOT NULL,
    -- The last endpointSequence given.
    last_sequence  INTEGER NOT NULL DEFAULT 0,
    -- Consecutive failed attempts, and since when the endpoint has failed.
    failure_streak INTEGER NOT NULL DEFAULT 0,
    failing_since  TEXT
);
CREATE INDEX endpoints_by_tenant ON endpoints (tenant_id, id);

-- One row per (endpoint, event): the queue and the record of what was sent.
CREATE TABLE deliveries (
    id                TEXT PRIMARY KEY,
    tenant_id         TEXT NOT NULL,
    endpoint_id       TEXT NOT NULL,
    endpoint_sequence INTEGER NOT NULL,
    event_sequence    INTEGER NOT NULL,
    event_id          TEXT NOT NULL,
    event_type        TEXT NOT NULL,
    resource_id       TEXT NOT NULL,
    -- The patient whose data the event carries (disclosure accounting).
    patient_id        TEXT,
    -- 1 when the endpoint orders deliveries per resource.
    ordered           INTEGER NOT NULL DEFAULT 0,
    -- pending | succeeded | failed
    status            TEXT NOT NULL,
    created_at        TEXT NOT NULL,
    updated_at        TEXT NOT NULL,
    -- When a pending delivery is next due.
    next_at           TEXT,
    attempt_count     INTEGER NOT NULL DEFAULT 0,
    -- Every attempt: time, status code, duration, response body, error (JSON).
    attempts          TEXT NOT NULL DEFAULT '[]',
    -- When the current 72-hour retry window began (creation, or the last
    -- manual retry or replay).
    window_started_at TEXT,
    -- When a receiver first acknowledged it (kept through later retries).
    succeeded_at      TEXT,
    -- Which node works on it, until when.
    lease_owner       TEXT,
    lease_until       TEXT
);
CREATE UNIQUE INDEX deliveries_by_endpoint_sequence ON deliveries (endpoint_id, endpoint_sequence);
CREATE INDEX deliveries_by_event ON deliveries (endpoint_id, event_sequence);
CREATE INDEX deliveries_by_endpoint ON deliveries (endpoint_id, status, id);
CREATE INDEX deliveries_due ON deliveries (next_at) WHERE status = 'pending';
CREATE INDEX deliveries_ordered ON deliveries (endpoint_id, resource_id, endpoint_sequence) WHERE status = 'pending' AND ordered = 1;
CREATE INDEX deliveries_disclosed ON deliveries (tenant_id, patient_id, succeeded_at) WHERE succeeded_at IS NOT NULL AND patient_id IS NOT NULL;
