-- Automations (DESIGN.md §4): workflow runs, durable timers, the outbox.

-- The last event sequence the automation engine has matched against the
-- workflows. Tenants that exist when this migration runs start at their
-- latest event: workflows never run on history from before the upgrade.
ALTER TABLE tenants ADD COLUMN automation_cursor INTEGER NOT NULL DEFAULT 0;
UPDATE tenants SET automation_cursor = last_sequence;

-- Who wrote each event: the API key's id, or workflow:NAME for a workflow's
-- step (a workflow does not run on the events its own steps wrote). Not part
-- of the envelope.
ALTER TABLE events ADD COLUMN written_by TEXT;

-- One run of a workflow's steps: the work queue and the record of it.
CREATE TABLE workflow_runs (
    id                TEXT PRIMARY KEY,
    tenant_id         TEXT NOT NULL,
    workflow          TEXT NOT NULL,
    -- The event the run started from (for a timer's run: the event of the
    -- run that scheduled it).
    event_id          TEXT,
    -- event | timer
    origin            TEXT NOT NULL,
    timer_key         TEXT,
    -- Which steps run: '' for the workflow's own, '2' for the steps of its
    -- step 2 (a schedule), '2.1' deeper.
    path              TEXT NOT NULL,
    -- The template context (the event envelope), JSON.
    context           TEXT NOT NULL,
    -- pending | succeeded | failed
    status            TEXT NOT NULL,
    -- Each step's outcome so far, JSON.
    steps             TEXT NOT NULL,
    next_step         INTEGER NOT NULL DEFAULT 0,
    -- When the failing step's 72-hour retry window opened.
    window_started_at TEXT,
    next_at           TEXT,
    lease_owner       TEXT,
    lease_until       TEXT,
    started_at        TEXT NOT NULL,
    updated_at        TEXT NOT NULL,
    finished_at       TEXT
);
CREATE INDEX workflow_runs_due ON workflow_runs (next_at) WHERE status = 'pending';
CREATE INDEX workflow_runs_by_tenant ON workflow_runs (tenant_id, id);

-- Pending timers; the key is the tenant's (the same key replaces the timer).
CREATE TABLE timers (
    tenant_id  TEXT NOT NULL,
    timer_key  TEXT NOT NULL,
    fire_at    TEXT NOT NULL,
    workflow   TEXT NOT NULL,
    path       TEXT NOT NULL,
    context    TEXT NOT NULL,
    event_id   TEXT,
    run_id     TEXT,
    created_at TEXT NOT NULL,
    PRIMARY KEY (tenant_id, timer_key)
);
CREATE INDEX timers_due ON timers (fire_at);

-- Every message automations sent or would have sent (the outbox), and
-- inbound SMS.
CREATE TABLE notifications (
    id              TEXT PRIMARY KEY,
    tenant_id       TEXT NOT NULL,
    -- sms | email | slack | claim
    channel         TEXT NOT NULL,
    -- outbound | inbound
    direction       TEXT NOT NULL,
    recipient       TEXT NOT NULL,
    subject         TEXT,
    body            TEXT NOT NULL,
    workflow        TEXT,
    run_id          TEXT,
    step            TEXT,
    -- outbox (no provider configured) or the provider's name
    provider        TEXT NOT NULL,
    provider_id     TEXT,
    provider_status TEXT,
    created_at      TEXT NOT NULL,
    UNIQUE (run_id, step)
);
CREATE INDEX notifications_by_tenant ON notifications (tenant_id, id);
-- A provider's retry of an inbound message is recognised by its id.
CREATE UNIQUE INDEX notifications_inbound ON notifications (tenant_id, provider_id)
    WHERE direction = 'inbound';

-- The deliveries of one event (GET /v1/events/{id}/deliveries, the portal).
CREATE INDEX deliveries_of_event ON deliveries (event_id);
