-- Endpoint verification. `verification` (JSON): state (pending, verified,
-- skipped), the challenge out, when it started, attempts, when verified,
-- the last error; NULL for endpoints made before it existed (skipped).
-- `verify_at`: when the challenge is next sent, while pending.
ALTER TABLE endpoints ADD COLUMN verification TEXT;
ALTER TABLE endpoints ADD COLUMN verify_at TEXT;
CREATE INDEX endpoints_to_verify ON endpoints (verify_at) WHERE verify_at IS NOT NULL;
