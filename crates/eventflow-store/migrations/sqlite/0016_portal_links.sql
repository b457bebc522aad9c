-- Vendor portal links: a single-use sign-in to a portal session that sees
-- and manages only the endpoints of one `owner`. Only the SHA-256 of the
-- link's token is kept; `used_at` is set when it is used (once).
CREATE TABLE portal_links (
    id          TEXT PRIMARY KEY,
    tenant_id   TEXT NOT NULL,
    key_id      TEXT NOT NULL,
    -- The SHA-256 of the making key's secret: a session from the link
    -- lasts only while that key is live.
    key_hash    TEXT NOT NULL,
    token_hash  TEXT NOT NULL UNIQUE,
    owner       TEXT NOT NULL,
    -- The scopes the session gets (JSON): the making key's read scopes of
    -- records and events, and endpoints:read (and :write unless read-only).
    scopes      TEXT NOT NULL,
    read_only   INTEGER NOT NULL,
    created_at  TEXT NOT NULL,
    expires_at  TEXT NOT NULL,
    used_at     TEXT
);
CREATE INDEX portal_links_by_age ON portal_links (expires_at);
