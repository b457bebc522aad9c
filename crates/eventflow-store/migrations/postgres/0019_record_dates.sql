-- When an appointment is (its start, both columns) or an encounter was
-- (its date and end; no end: still going on), in UTC as the server writes
-- instants (`2026-12-01T09:00:00.000Z`), for date searches. A value
-- PostgreSQL cannot read as a time (the year 0000, which the API takes)
-- is left out: the record is found by date once it is next written.
ALTER TABLE records ADD COLUMN date_at TEXT COLLATE "C";
ALTER TABLE records ADD COLUMN date_end TEXT COLLATE "C";
CREATE FUNCTION eventflow_utc_instant(v TEXT) RETURNS TEXT LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    RETURN to_char(v::timestamptz AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"');
EXCEPTION WHEN others THEN
    RETURN NULL;
END;
$$;
UPDATE records SET date_at = eventflow_utc_instant(data::jsonb ->> 'start'),
                   date_end = eventflow_utc_instant(data::jsonb ->> 'start')
    WHERE resource_type = 'appointment';
UPDATE records SET date_at = eventflow_utc_instant(data::jsonb ->> 'date'),
                   date_end = eventflow_utc_instant(data::jsonb ->> 'end')
    WHERE resource_type = 'encounter';
DROP FUNCTION eventflow_utc_instant(TEXT);
CREATE INDEX records_by_date ON records (tenant_id, resource_type, date_at) WHERE date_at IS NOT NULL;
