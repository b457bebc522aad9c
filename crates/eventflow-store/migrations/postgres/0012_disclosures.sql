-- Disclosure records: each successful delivery that carried a patient's
-- data, kept for disclosure_retention_days whatever happens to the event,
-- the delivery or the endpoint. `tenant_id` is the clinic whose patient it
-- is (an organisation's endpoint discloses its clinics' patients);
-- `organisation_id` is set when an organisation's endpoint received it.
-- `fields` is a JSON array of the record's top-level field names sent
-- (empty for a thin payload).
CREATE TABLE disclosures (
    id              TEXT COLLATE "C" PRIMARY KEY,
    tenant_id       TEXT COLLATE "C" NOT NULL,
    patient_id      TEXT COLLATE "C" NOT NULL,
    at              TEXT COLLATE "C" NOT NULL,
    recipient       TEXT NOT NULL,
    endpoint_id     TEXT COLLATE "C" NOT NULL,
    organisation_id TEXT COLLATE "C",
    origin          TEXT NOT NULL,
    delivery_id     TEXT COLLATE "C" NOT NULL,
    event_id        TEXT COLLATE "C" NOT NULL,
    event_type      TEXT COLLATE "C" NOT NULL,
    resource_type   TEXT COLLATE "C" NOT NULL,
    resource_id     TEXT COLLATE "C" NOT NULL,
    fields          TEXT NOT NULL,
    purpose         TEXT COLLATE "C" NOT NULL,
    purpose_text    TEXT
);
CREATE INDEX disclosures_by_patient ON disclosures (tenant_id, patient_id, at);
CREATE INDEX disclosures_by_time ON disclosures (tenant_id, at);
CREATE INDEX disclosures_by_age ON disclosures (at);
-- Deliveries acknowledged before disclosure records existed: their
-- endpoint's host is the recipient, the purpose the default (operations).
INSERT INTO disclosures
SELECT 'dsc_' || substr(d.id, 5),
       COALESCE(ev.tenant_id, d.tenant_id),
       d.patient_id,
       d.succeeded_at,
       h.host,
       d.endpoint_id,
       CASE WHEN d.tenant_id LIKE 'org\_%' THEN d.tenant_id END,
       h.scheme || '://' || h.host,
       d.id,
       d.event_id,
       d.event_type,
       COALESCE(ev.resource_type, split_part(d.event_type, '.', 1)),
       d.resource_id,
       CASE WHEN ev.body IS NOT NULL AND COALESCE(ep.config::jsonb ->> 'payload', 'full') = 'full'
            THEN COALESCE((SELECT json_agg(k)::text FROM json_object_keys(ev.body::json -> 'data') AS k), '[]')
            ELSE '[]' END,
       'operations',
       NULL
FROM deliveries d
LEFT JOIN events ev ON ev.id = d.event_id
LEFT JOIN endpoints ep ON ep.id = d.endpoint_id
JOIN (
    SELECT id AS endpoint_id,
           substring(config::jsonb ->> 'url' from '^([A-Za-z][A-Za-z0-9+.-]*)://') AS scheme,
           substring(config::jsonb ->> 'url' from '^[A-Za-z][A-Za-z0-9+.-]*://(?:[^/?#@]*@)?([^/?#]*)') AS host
    FROM endpoints
) h ON h.endpoint_id = d.endpoint_id
WHERE d.succeeded_at IS NOT NULL AND d.patient_id IS NOT NULL;
