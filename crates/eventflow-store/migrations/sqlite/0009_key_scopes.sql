-- API keys with names, scopes, an expiry, revocation and rotation. A key
-- made before scopes existed keeps every scope (`*`) and has no prefix: its
-- secret was never stored.
ALTER TABLE api_keys ADD COLUMN name TEXT NOT NULL DEFAULT '';
ALTER TABLE api_keys ADD COLUMN scopes TEXT NOT NULL DEFAULT '["*"]';
ALTER TABLE api_keys ADD COLUMN prefix TEXT;
ALTER TABLE api_keys ADD COLUMN expires_at TEXT;
ALTER TABLE api_keys ADD COLUMN last_used_at TEXT;
ALTER TABLE api_keys ADD COLUMN revoked_at TEXT;
-- The secret a rotation replaced, valid until previous_until.
ALTER TABLE api_keys ADD COLUMN previous_hash TEXT;
ALTER TABLE api_keys ADD COLUMN previous_until TEXT;
CREATE UNIQUE INDEX api_keys_previous_hash ON api_keys (previous_hash);
CREATE INDEX api_keys_tenant ON api_keys (tenant_id, id);
