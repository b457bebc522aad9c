-- Retention reads the oldest rows first: deliveries by when they were
-- made, audit entries by when they happened (disclosure records have
-- disclosures_by_age, events events_by_time).
CREATE INDEX deliveries_by_age ON deliveries (created_at);
CREATE INDEX audit_by_age ON audit_log (at);
