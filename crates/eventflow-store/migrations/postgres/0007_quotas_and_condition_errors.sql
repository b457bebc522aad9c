-- Per-tenant daily provider quotas ([providers.*] and [billing] daily_quota):
-- how many messages (or claims) a tenant's own workflows have sent through
-- a provider on a UTC day. A row is incremented, in the writer, only while
-- it is below the quota, before the provider is called.
CREATE TABLE provider_quota_counts (
    tenant_id TEXT NOT NULL,
    provider  TEXT NOT NULL,
    day       TEXT NOT NULL,
    used      BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, provider, day)
);

-- The (run, step) each unit was reserved for: a retry of the step, or the
-- step taken over by another node, uses the unit it already has.
CREATE TABLE provider_quota_uses (
    run_id    TEXT NOT NULL,
    step      TEXT NOT NULL,
    tenant_id TEXT NOT NULL,
    provider  TEXT NOT NULL,
    day       TEXT NOT NULL,
    PRIMARY KEY (run_id, step)
);
CREATE INDEX provider_quota_uses_day ON provider_quota_uses (day);

-- Why a workflow's `if` last stopped without an answer on a tenant's event
-- (it ran out of limits.cel_cost): shown in GET /v1/workflows while the
-- workflow's condition is still `condition_source`.
CREATE TABLE workflow_condition_errors (
    tenant_id TEXT NOT NULL,
    workflow  TEXT NOT NULL,
    condition_source TEXT NOT NULL,
    message   TEXT NOT NULL,
    event_id  TEXT NOT NULL,
    at        TEXT NOT NULL,
    PRIMARY KEY (tenant_id, workflow)
);
