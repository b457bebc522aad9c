-- Disclosure records: each successful delivery that carried a patient's
-- data, kept for disclosure_retention_days whatever happens to the event,
-- the delivery or the endpoint. `tenant_id` is the clinic whose patient it
-- is (an organisation's endpoint discloses its clinics' patients);
-- `organisation_id` is set when an organisation's endpoint received it.
-- `fields` is a JSON array of the record's top-level field names sent
-- (empty for a thin payload).
CREATE TABLE disclosures (
    id              TEXT PRIMARY KEY,
    tenant_id       TEXT NOT NULL,
    patient_id      TEXT NOT NULL,
    at              TEXT NOT NULL,
    recipient       TEXT NOT NULL,
    endpoint_id     TEXT NOT NULL,
    organisation_id TEXT,
    origin          TEXT NOT NULL,
    delivery_id     TEXT NOT NULL,
    event_id        TEXT NOT NULL,
    event_type      TEXT NOT NULL,
    resource_type   TEXT NOT NULL,
    resource_id     TEXT NOT NULL,
    fields          TEXT NOT NULL,
    purpose         TEXT NOT NULL,
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
       CASE WHEN d.tenant_id LIKE 'org\_%' ESCAPE '\' THEN d.tenant_id END,
       h.scheme || '://' || h.host,
       d.id,
       d.event_id,
       d.event_type,
       COALESCE(ev.resource_type, substr(d.event_type, 1, instr(d.event_type, '.') - 1)),
       d.resource_id,
       CASE WHEN ev.body IS NOT NULL AND COALESCE(json_extract(ep.config, '$.payload'), 'full') = 'full'
            THEN (SELECT json_group_array(key) FROM json_each(ev.body, '$.data'))
            ELSE '[]' END,
       'operations',
       NULL
FROM deliveries d
LEFT JOIN events ev ON ev.id = d.event_id
LEFT JOIN endpoints ep ON ep.id = d.endpoint_id
JOIN (
    SELECT e.id AS endpoint_id,
           substr(u.url, 1, instr(u.url, '://') - 1) AS scheme,
           substr(p.authority, instr(p.authority, '@') + 1) AS host
    FROM endpoints e
    JOIN (SELECT id, json_extract(config, '$.url') AS url FROM endpoints) u ON u.id = e.id
    JOIN (
        SELECT id,
               CASE
                 WHEN instr(r, '/') > 0 THEN substr(r, 1, instr(r, '/') - 1)
                 WHEN instr(r, '?') > 0 THEN substr(r, 1, instr(r, '?') - 1)
                 WHEN instr(r, '#') > 0 THEN substr(r, 1, instr(r, '#') - 1)
                 ELSE r
               END AS authority
        FROM (SELECT id, substr(json_extract(config, '$.url'), instr(json_extract(config, '$.url'), '://') + 3) AS r FROM endpoints)
    ) p ON p.id = e.id
) h ON h.endpoint_id = d.endpoint_id
WHERE d.succeeded_at IS NOT NULL AND d.patient_id IS NOT NULL;
