-- Feedback on answers; wrong semantic hits are the negatives that tighten a namespace.
CREATE TABLE feedback (
    id          bigserial PRIMARY KEY,
    answer_id   text NOT NULL,
    user_id     bigint REFERENCES users (id) ON DELETE SET NULL,
    good        boolean NOT NULL,
    outcome     text NOT NULL,
    namespace   text,
    prompt      text,
    matched     text,
    similarity  real,
    at          timestamptz NOT NULL DEFAULT now()
);

-- A namespace that collected wrong semantic hits requires a higher similarity.
CREATE TABLE namespace_thresholds (
    namespace   text PRIMARY KEY,
    threshold   real NOT NULL CHECK (threshold BETWEEN 0 AND 1),
    wrong_hits  integer NOT NULL DEFAULT 0,
    updated_at  timestamptz NOT NULL DEFAULT now()
);
