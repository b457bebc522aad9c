-- The same schema as SQLite's 0001. Identifiers, types and timestamps are
-- TEXT with the "C" collation, so comparisons are bytewise on both backends
-- (timestamps are fixed-width UTC; ids sort by creation).

CREATE TABLE tenants (
    id            TEXT COLLATE "C" PRIMARY KEY,
    name          TEXT NOT NULL UNIQUE,
    created_at    TEXT COLLATE "C" NOT NULL,
    -- The last event sequence taken; bumped in the writing transaction,
    -- whose row lock orders commits.
    last_sequence BIGINT NOT NULL DEFAULT 0
);

CREATE TABLE api_keys (
    id         TEXT COLLATE "C" PRIMARY KEY,
    tenant_id  TEXT COLLATE "C" NOT NULL REFERENCES tenants (id),
    key_hash   TEXT COLLATE "C" NOT NULL UNIQUE,
    created_at TEXT COLLATE "C" NOT NULL
);

CREATE TABLE records (
    tenant_id       TEXT COLLATE "C" NOT NULL,
    id              TEXT COLLATE "C" NOT NULL,
    resource_type   TEXT COLLATE "C" NOT NULL,
    version         BIGINT NOT NULL,
    patient_id      TEXT COLLATE "C",
    practitioner_id TEXT COLLATE "C",
    encounter_id    TEXT COLLATE "C",
    appointment_id  TEXT COLLATE "C",
    status          TEXT COLLATE "C",
    updated_at      TEXT COLLATE "C" NOT NULL,
    data            TEXT NOT NULL,
    PRIMARY KEY (tenant_id, id)
);
CREATE INDEX records_by_type ON records (tenant_id, resource_type, id);
CREATE INDEX records_by_patient ON records (tenant_id, patient_id, resource_type) WHERE patient_id IS NOT NULL;
CREATE INDEX records_by_practitioner ON records (tenant_id, practitioner_id) WHERE practitioner_id IS NOT NULL;
CREATE INDEX records_by_encounter ON records (tenant_id, encounter_id, resource_type) WHERE encounter_id IS NOT NULL;
CREATE INDEX records_by_appointment ON records (tenant_id, appointment_id) WHERE appointment_id IS NOT NULL;

CREATE TABLE events (
    tenant_id     TEXT COLLATE "C" NOT NULL,
    sequence      BIGINT NOT NULL,
    id            TEXT COLLATE "C" NOT NULL,
    type          TEXT COLLATE "C" NOT NULL,
    resource_type TEXT COLLATE "C" NOT NULL,
    resource_id   TEXT COLLATE "C" NOT NULL,
    created_at    TEXT COLLATE "C" NOT NULL,
    body          TEXT NOT NULL,
    PRIMARY KEY (tenant_id, sequence)
);
CREATE UNIQUE INDEX events_by_id ON events (id);
CREATE INDEX events_by_time ON events (created_at);

CREATE TABLE idempotency_keys (
    tenant_id   TEXT COLLATE "C" NOT NULL,
    key         TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    status      BIGINT NOT NULL,
    body        TEXT NOT NULL,
    created_at  TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (tenant_id, key)
);

CREATE TABLE audit_log (
    id            TEXT COLLATE "C" PRIMARY KEY,
    tenant_id     TEXT COLLATE "C" NOT NULL,
    at            TEXT COLLATE "C" NOT NULL,
    key_id        TEXT COLLATE "C" NOT NULL,
    action        TEXT NOT NULL,
    resource_type TEXT COLLATE "C" NOT NULL,
    resource_id   TEXT COLLATE "C" NOT NULL
);
CREATE INDEX audit_by_tenant ON audit_log (tenant_id, id);
CREATE INDEX audit_by_resource ON audit_log (tenant_id, resource_id, id);
