-- Disclosure records are read a page at a time in id order: of a clinic,
-- of a patient of a clinic, or of an organisation's endpoints. The index
-- deliveries kept for the listing that disclosure records replace goes (one
-- index less to write on every acknowledged delivery).
DROP INDEX disclosures_by_patient;
DROP INDEX disclosures_by_time;
CREATE INDEX disclosures_of_patient ON disclosures (tenant_id, patient_id, id);
CREATE INDEX disclosures_of_tenant ON disclosures (tenant_id, id);
CREATE INDEX disclosures_of_organisation ON disclosures (organisation_id, id) WHERE organisation_id IS NOT NULL;
DROP INDEX deliveries_disclosed;
