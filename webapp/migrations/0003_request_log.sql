-- One row per answered (or failed) request, written in batches off the request path.
CREATE TABLE request_log (
    id           bigserial PRIMARY KEY,
    answer_id    text NOT NULL,
    at           timestamptz NOT NULL,
    user_id      bigint REFERENCES users (id) ON DELETE SET NULL,
    model        text NOT NULL,
    outcome      text NOT NULL CHECK (outcome IN ('exact', 'semantic', 'coalesced', 'miss', 'error')),
    entry_id     text,
    key          text,
    prompt       text,
    similarity   real,
    latency_ms   real NOT NULL,
    tokens_saved integer NOT NULL DEFAULT 0,
    error_code   text
);
CREATE INDEX request_log_at ON request_log (at);
CREATE UNIQUE INDEX request_log_answer ON request_log (answer_id);
