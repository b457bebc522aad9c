-- Tenants and their API keys. Only a SHA-256 hash of a key is stored.
CREATE TABLE tenants (
    id            TEXT PRIMARY KEY,
    name          TEXT NOT NULL UNIQUE,
    created_at    TEXT NOT NULL,
    -- The last event sequence taken; bumped in the writing transaction.
    last_sequence INTEGER NOT NULL DEFAULT 0
);

CREATE TABLE api_keys (
    id         TEXT PRIMARY KEY,
    tenant_id  TEXT NOT NULL REFERENCES tenants (id),
    key_hash   TEXT NOT NULL UNIQUE,
    created_at TEXT NOT NULL
);

-- Every live clinical record, as its JSON body, with the columns that lists,
-- includes and the delete check filter on.
CREATE TABLE records (
    tenant_id       TEXT NOT NULL,
    id              TEXT NOT NULL,
    resource_type   TEXT NOT NULL,
    version         INTEGER NOT NULL,
    patient_id      TEXT,
    practitioner_id TEXT,
    encounter_id    TEXT,
    appointment_id  TEXT,
    status          TEXT,
    updated_at      TEXT NOT NULL,
    data            TEXT NOT NULL,
    PRIMARY KEY (tenant_id, id)
) WITHOUT ROWID;
CREATE INDEX records_by_type ON records (tenant_id, resource_type, id);
CREATE INDEX records_by_patient ON records (tenant_id, patient_id, resource_type) WHERE patient_id IS NOT NULL;
CREATE INDEX records_by_practitioner ON records (tenant_id, practitioner_id) WHERE practitioner_id IS NOT NULL;
CREATE INDEX records_by_encounter ON records (tenant_id, encounter_id, resource_type) WHERE encounter_id IS NOT NULL;
CREATE INDEX records_by_appointment ON records (tenant_id, appointment_id) WHERE appointment_id IS NOT NULL;

-- The event log: per tenant, gap-free sequence in commit order.
CREATE TABLE events (
    tenant_id     TEXT NOT NULL,
    sequence      INTEGER NOT NULL,
    id            TEXT NOT NULL,
    type          TEXT NOT NULL,
    resource_type TEXT NOT NULL,
    resource_id   TEXT NOT NULL,
    created_at    TEXT NOT NULL,
    body          TEXT NOT NULL,
    PRIMARY KEY (tenant_id, sequence)
) WITHOUT ROWID;
CREATE UNIQUE INDEX events_by_id ON events (id);
CREATE INDEX events_by_time ON events (created_at);

-- Responses of POSTs made with an Idempotency-Key, kept 24 hours.
CREATE TABLE idempotency_keys (
    tenant_id   TEXT NOT NULL,
    key         TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    status      INTEGER NOT NULL,
    body        TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    PRIMARY KEY (tenant_id, key)
) WITHOUT ROWID;

-- Who read or changed which record, when.
CREATE TABLE audit_log (
    id            TEXT PRIMARY KEY,
    tenant_id     TEXT NOT NULL,
    at            TEXT NOT NULL,
    key_id        TEXT NOT NULL,
    action        TEXT NOT NULL,
    resource_type TEXT NOT NULL,
    resource_id   TEXT NOT NULL
) WITHOUT ROWID;
CREATE INDEX audit_by_tenant ON audit_log (tenant_id, id);
CREATE INDEX audit_by_resource ON audit_log (tenant_id, resource_id, id);
