-- Disclosure records are read a page at a time in id order: of a clinic,
-- of a patient of a clinic, or of an organisation's endpoints. Their ids
-- sort by when they were sent, so retention reads the oldest by the
-- primary key. The index deliveries kept for the listing that disclosure
-- records replace goes. (Fewer indexes to write on every acknowledged
-- delivery.)
DROP INDEX disclosures_by_patient;
DROP INDEX disclosures_by_time;
DROP INDEX disclosures_by_age;
CREATE INDEX disclosures_of_patient ON disclosures (tenant_id, patient_id, id);
CREATE INDEX disclosures_of_tenant ON disclosures (tenant_id, id);
CREATE INDEX disclosures_of_organisation ON disclosures (organisation_id, id) WHERE organisation_id IS NOT NULL;
DROP INDEX deliveries_disclosed;
