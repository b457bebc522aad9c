-- A tenant's settings: `max_payload` 'thin' forbids endpoints with full
-- payloads (no patient data in its webhooks).
ALTER TABLE tenants ADD COLUMN max_payload TEXT NOT NULL DEFAULT 'full';
