-- Audited semantic hits (tasks/flow.py: audit): the LLM answered the request again and a
-- judge compared the answers. Each namespace's pair-model score threshold is learned from
-- its most recent audits (cache/audit.py).
CREATE TABLE audits (
    id             bigserial PRIMARY KEY,
    namespace      text NOT NULL,
    entry_key      text NOT NULL,
    prompt         text NOT NULL,
    matched_prompt text NOT NULL,
    similarity     real NOT NULL,
    score          real NOT NULL,
    correct        boolean NOT NULL,
    judged_by      text NOT NULL,
    at             timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX audits_by_namespace ON audits (namespace, id DESC);
