-- Disclosure records keyed by their clinic, then their id (which sorts by
-- when they were sent): a clinic's records are one range of the table
-- itself, so the table needs no index of its own for them. Each
-- acknowledged delivery of a patient's data writes one b-tree entry less.
-- Retention reads each clinic's oldest from the same key.
CREATE TABLE disclosures_by_clinic (
    tenant_id       TEXT NOT NULL,
    id              TEXT NOT NULL,
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
    purpose_text    TEXT,
    PRIMARY KEY (tenant_id, id)
) WITHOUT ROWID;
INSERT INTO disclosures_by_clinic (tenant_id, id, patient_id, at, recipient, endpoint_id,
    organisation_id, origin, delivery_id, event_id, event_type, resource_type, resource_id,
    fields, purpose, purpose_text)
SELECT tenant_id, id, patient_id, at, recipient, endpoint_id, organisation_id, origin,
    delivery_id, event_id, event_type, resource_type, resource_id, fields, purpose, purpose_text
FROM disclosures;
DROP TABLE disclosures;
ALTER TABLE disclosures_by_clinic RENAME TO disclosures;
CREATE INDEX disclosures_of_patient ON disclosures (tenant_id, patient_id, id);
CREATE INDEX disclosures_of_organisation ON disclosures (organisation_id, id) WHERE organisation_id IS NOT NULL;
