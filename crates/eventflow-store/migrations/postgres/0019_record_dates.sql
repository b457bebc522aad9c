-- When an appointment starts or an encounter began, in UTC as the server
-- writes instants (`2026-12-01T09:00:00.000Z`), for date searches.
ALTER TABLE records ADD COLUMN date_at TEXT COLLATE "C";
UPDATE records SET date_at = to_char(((data::jsonb ->> 'start')::timestamptz) AT TIME ZONE 'UTC',
                                     'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')
    WHERE resource_type = 'appointment';
UPDATE records SET date_at = to_char(((data::jsonb ->> 'date')::timestamptz) AT TIME ZONE 'UTC',
                                     'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')
    WHERE resource_type = 'encounter';
CREATE INDEX records_by_date ON records (tenant_id, resource_type, date_at) WHERE date_at IS NOT NULL;
