-- Disclosure records are read a page at a time in id order: of a clinic,
-- of a patient of a clinic, or of an organisation's endpoints. Their ids
-- sort by when they were sent, so retention reads the oldest by the
-- primary key. The index deliveries kept for the listing that disclosure
-- records replace goes. (Fewer indexes to write on every acknowledged
-- delivery.)
-- Kept in the order of their ids (WITHOUT ROWID): the table is its primary
-- key's index, one b-tree less to write.
CREATE TABLE disclosures_by_id (
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
) WITHOUT ROWID;
INSERT INTO disclosures_by_id SELECT id, tenant_id, patient_id, at, recipient, endpoint_id,
    organisation_id, origin, delivery_id, event_id, event_type, resource_type, resource_id,
    fields, purpose, purpose_text FROM disclosures;
DROP TABLE disclosures;
ALTER TABLE disclosures_by_id RENAME TO disclosures;
CREATE INDEX disclosures_of_patient ON disclosures (tenant_id, patient_id, id);
CREATE INDEX disclosures_of_tenant ON disclosures (tenant_id, id);
CREATE INDEX disclosures_of_organisation ON disclosures (organisation_id, id) WHERE organisation_id IS NOT NULL;
DROP INDEX deliveries_disclosed;
