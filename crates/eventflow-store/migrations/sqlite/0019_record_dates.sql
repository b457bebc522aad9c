-- When an appointment is (its start, both columns) or an encounter was
-- (its date and end; no end: still going on), in UTC as the server writes
-- instants (`2026-12-01T09:00:00.000Z`), for date searches. Values the
-- API took in lowercase (`t`, `z`) are read in uppercase.
ALTER TABLE records ADD COLUMN date_at TEXT;
ALTER TABLE records ADD COLUMN date_end TEXT;
UPDATE records SET date_at = strftime('%Y-%m-%dT%H:%M:%fZ', upper(json_extract(data, '$.start')))
    WHERE resource_type = 'appointment';
UPDATE records SET date_at = strftime('%Y-%m-%dT%H:%M:%fZ', upper(json_extract(data, '$.date'))),
                   date_end = strftime('%Y-%m-%dT%H:%M:%fZ', upper(json_extract(data, '$.end')))
    WHERE resource_type = 'encounter';
UPDATE records SET date_end = date_at WHERE resource_type = 'appointment';
CREATE INDEX records_by_date ON records (tenant_id, resource_type, date_at) WHERE date_at IS NOT NULL;
