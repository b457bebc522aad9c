-- Disclosure records keyed by their clinic, then their id (which sorts by
-- when they were sent): a clinic's records are one range of the primary
-- key, so the index kept for them goes. Each acknowledged delivery of a
-- patient's data writes one index entry less. Retention reads each
-- clinic's oldest from the same key.
-- The new key's index is built over the whole table: however long it takes.
SET LOCAL statement_timeout = 0;
ALTER TABLE disclosures DROP CONSTRAINT disclosures_pkey;
ALTER TABLE disclosures ADD PRIMARY KEY (tenant_id, id);
DROP INDEX disclosures_of_tenant;
