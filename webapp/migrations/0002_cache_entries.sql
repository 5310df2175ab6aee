-- The record of every answer. Redis holds hot copies; this table survives a flush.
CREATE TABLE cache_entries (
    id                 text PRIMARY KEY,
    key                text NOT NULL,
    namespace          text NOT NULL,
    model              text NOT NULL,
    prompt             text NOT NULL,
    response           text NOT NULL,
    embedding          bytea,
    scope              text NOT NULL DEFAULT 'shared' CHECK (scope IN ('shared', 'private')),
    owner_id           bigint REFERENCES users (id) ON DELETE CASCADE,
    prompt_tokens      integer NOT NULL DEFAULT 0,
    completion_tokens  integer NOT NULL DEFAULT 0,
    created_at         timestamptz NOT NULL DEFAULT now(),
    expires_at         timestamptz NOT NULL,
    hits               bigint NOT NULL DEFAULT 0,
    last_hit_at        timestamptz,
    invalidated_at     timestamptz,
    invalidated_reason text
);
-- At most one live entry per exact key; a refresh invalidates the old one first.
CREATE UNIQUE INDEX cache_entries_live_key ON cache_entries (key) WHERE invalidated_at IS NULL;
CREATE INDEX cache_entries_live_lru ON cache_entries (coalesce(last_hit_at, created_at))
    WHERE invalidated_at IS NULL;
CREATE INDEX cache_entries_expires ON cache_entries (expires_at) WHERE invalidated_at IS NULL;
CREATE INDEX cache_entries_owner ON cache_entries (owner_id);
