-- Clinic networks. An organisation is a row of `tenants` of kind
-- 'organisation' (id `org_…`): its keys, endpoints and workflows are kept
-- like a clinic's. `org_id` names a clinic's organisation while it is a
-- member (and an organisation's own row names itself); `joined_at` is when
-- it joined. An organisation's `last_sequence` numbers the network's log.
ALTER TABLE tenants ADD COLUMN kind TEXT NOT NULL DEFAULT 'clinic';
ALTER TABLE tenants ADD COLUMN org_id TEXT;
ALTER TABLE tenants ADD COLUMN joined_at TEXT;
CREATE INDEX tenants_by_org ON tenants (org_id, id) WHERE org_id IS NOT NULL;
-- The network's log: an event written while its clinic was a member (or by
-- the organisation itself) has its organisation and its number there.
ALTER TABLE events ADD COLUMN org_id TEXT;
ALTER TABLE events ADD COLUMN network_sequence INTEGER;
CREATE UNIQUE INDEX events_by_network ON events (org_id, network_sequence) WHERE org_id IS NOT NULL;
-- A patient's medical record number, for `?mrn=` (finding a patient by
-- MRN, in a clinic or across a network).
ALTER TABLE records ADD COLUMN mrn TEXT;
UPDATE records SET mrn = json_extract(data, '$.mrn') WHERE resource_type = 'patient';
CREATE INDEX records_by_mrn ON records (mrn, tenant_id) WHERE mrn IS NOT NULL;
