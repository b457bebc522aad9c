-- When an appointment starts or an encounter began, in UTC as the server
-- writes instants (`2026-12-01T09:00:00.000Z`), for date searches.
ALTER TABLE records ADD COLUMN date_at TEXT;
UPDATE records SET date_at = strftime('%Y-%m-%dT%H:%M:%fZ', json_extract(data, '$.start'))
    WHERE resource_type = 'appointment';
UPDATE records SET date_at = strftime('%Y-%m-%dT%H:%M:%fZ', json_extract(data, '$.date'))
    WHERE resource_type = 'encounter';
CREATE INDEX records_by_date ON records (tenant_id, resource_type, date_at) WHERE date_at IS NOT NULL;
