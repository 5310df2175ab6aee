-- Browser sessions kept on the server, so that signing out ends one for good: the cookie
-- holds a random id, this table its SHA-256 (a leaked table row is no session).
CREATE TABLE sessions (
    id_hash     text PRIMARY KEY,
    user_id     bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL,
    revoked_at  timestamptz
);
CREATE INDEX sessions_user ON sessions (user_id);

-- Feedback is a vote on the entry that served the answer: a shared entry is taken out
-- when enough distinct users say it is wrong (FEEDBACK_QUORUM).
ALTER TABLE feedback ADD COLUMN entry_id text;
CREATE INDEX feedback_entry ON feedback (entry_id) WHERE NOT good;
CREATE INDEX feedback_namespace ON feedback (namespace, at) WHERE NOT good;

-- An admin may reset a namespace's earned threshold; votes before the reset no longer count.
ALTER TABLE namespace_thresholds ADD COLUMN reset_at timestamptz;
