-- When a FHIR subscription's next heartbeat may be due: a heartbeat period
-- after its handshake, its last heartbeat or its last notification.
-- NULL for endpoints that send none.
ALTER TABLE endpoints ADD COLUMN heartbeat_at TEXT;
CREATE INDEX endpoints_heartbeats ON endpoints (heartbeat_at) WHERE heartbeat_at IS NOT NULL;
