"""The bridge every chat surface stands on, side by side: the native API (webapp/api.py),
its exact hits below Flask (webapp/fastpath.py), OpenAI's (webapp/compat_openai.py) and
Ollama's (webapp/compat_ollama.py); the embeddings (webapp/embed.py) use `authorize`.

A surface turns its request into the native body and then, here: `Call.prepare` validates
it (ChatRequest.parse), builds the key and fills in the defaults; `admit` takes the
caller's rate-limit token and reads the exact cache in the same Redis command; `ask` (or
`stream`) answers on the native path (webapp/chat.py) and writes the request log; `body`
is the native answer. Errors are mapped once (webapp/errors.py: as_api_error) and every
surface only renders them in its own shape (`register_errors`).
"""

from __future__ import annotations

import itertools
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from flask import Blueprint, current_app, request

from cache import CacheKey, Entry
from webapp import chat, metrics, streaming
from webapp.auth import User, current_user
from webapp.errors import ApiError, BadRequest, RateLimited, as_api_error, respond
from webapp.schemas import ChatRequest
from webapp.services import Services, services

# Set by webapp.fastpath on a request it admitted but did not answer: (wait_s, entry),
# and when it started.
ADMITTED = "flock.admitted"
STARTED = "flock.started"


def authorize(cost: int = 1) -> User:
    """Authenticate and take `cost` tokens (one a request, one a text for embeddings) of
    the caller's rate limit."""
    user = current_user()
    limiter = services().limiter
    wait_s = limiter.take(user.rate_key, cost)
    if wait_s:
        raise _rate_limited(limiter.per_minute, wait_s)
    return user


def _rate_limited(per_minute: int, wait_s: float) -> RateLimited:
    return RateLimited(f"over {per_minute} requests a minute", retry_after_s=int(wait_s))


@dataclass(frozen=True)
class Call:
    """One chat request on the native path: same validation, key, wait, cache and log on
    every surface."""

    svc: Services  # captured: a streamed answer is computed off the request context
    req: ChatRequest
    user: User
    key: CacheKey
    threshold: float
    ttl_s: int
    timeout_s: float
    started: float
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    created: int = field(default_factory=lambda: int(time.time()))  # unix s, as APIs report

    @classmethod
    def prepare(
        cls, svc: Services, cfg: Mapping[str, Any], body: Any, user: User, started: float
    ) -> Call:
        """`body` in the native shape (model, messages or prompt, options, cache, ...).

        A shared entry is its owner's to replace: a refresh of another user's (unless by
        an admin) is answered like `bypass`, a fresh answer that replaces nothing."""
        req = ChatRequest.parse(body, cfg["OLLAMA_MODEL"], cfg["MAX_PROMPT_CHARS"])
        if req.ttl is not None and req.ttl > cfg["CACHE_MAX_TTL"]:
            raise BadRequest(f"cache.ttl must be at most {cfg['CACHE_MAX_TTL']} seconds")
        key = chat.request_key(req, user.id)
        if req.mode == "refresh" and not user.is_admin:
            exists, owner = svc.repo.owner_of(key.exact)
            if exists and owner != user.id:
                req = replace(req, mode="bypass")
                key = chat.request_key(req, user.id)
        return cls(
            svc=svc,
            req=req,
            user=user,
            key=key,
            threshold=cfg["SEMANTIC_THRESHOLD"] if req.threshold is None else req.threshold,
            ttl_s=cfg["CACHE_TTL"] if req.ttl is None else req.ttl,
            timeout_s=cfg["REQUEST_TIMEOUT_S"],
            started=started,
        )

    @property
    def exact_lookup(self) -> str | None:
        """The exact key to read in the same round trip as the rate limit (a hit costs no
        more), or None when this request must not be answered from the exact cache."""
        return self.key.exact if self.req.mode in ("use", "no-store") and self.req.wait else None

    def admit(self, admitted: tuple[float, Entry | None] | None = None) -> chat.Lookup | None:
        """Take the caller's rate-limit token and read the exact cache, in one command
        (`admitted`: what webapp.fastpath did already). Returns what the read found."""
        wait_s, entry = admitted or self.svc.admit(self.user.rate_key, self.exact_lookup)
        if wait_s:
            raise _rate_limited(self.svc.limiter.per_minute, wait_s)
        return chat.Lookup(entry) if self.exact_lookup else None

    def question(self) -> chat.Question:
        return chat.Question(self.req, self.key, self.user.id, self.ttl_s, self.threshold,
                             self.timeout_s)  # fmt: skip

    def ask(
        self, progress: chat.Progress | None = None, lookup: chat.Lookup | None = None
    ) -> chat.Answer:
        """The answer, logged; any failure raised as its ApiError (a 5xx is logged too:
        client mistakes are not)."""
        try:
            answer = chat.ask(self.svc, self.question(), progress, lookup)
        except Exception as exc:
            err = as_api_error(exc)
            if err.status >= 500:
                self.log(outcome="error", error_code=err.code)
            if err is exc:
                raise
            raise err from exc
        self.log(answer)
        return answer

    def stream(
        self, lookup: chat.Lookup | None = None
    ) -> tuple[dict[str, str], Iterator[streaming.Event]]:
        """Headers and events of a streamed answer for a format that can only append:
        ("delta", text), ("heartbeat", None), then ("done", Answer) or ("error", ApiError).

        Reads the relay up to its first event before any byte is sent, so that X-Cache
        can be a header and a failure that comes first still gets its HTTP status."""
        events = streaming.relay(self.svc, self.key, lambda p: self.ask(p, lookup), self.timeout_s)
        first = next(events)
        if first[0] == "error":
            raise first[1]
        headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        if first[0] == "meta":
            headers.update(cache_headers(first[1]["status"], first[1]["similarity"]))
        return headers, streaming.append_only(itertools.chain([first], events))

    def body(self, answer: chat.Answer) -> dict[str, Any]:
        return answer_body(answer, self.id, self.threshold, self.req.scope, self.started)

    def log(
        self, answer: chat.Answer | None = None, outcome: str = "", error_code: str | None = None
    ) -> None:
        """One row of the request log (batched) and the metrics of one answer or failure."""
        entry = answer.entry if answer else None
        saved = 0
        if answer is not None and answer.status != "miss":
            saved = answer.entry.prompt_tokens + answer.entry.completion_tokens
        outcome = answer.status if answer else outcome
        latency_ms = _ms_since(self.started)
        metrics.observe_answer(outcome, latency_ms / 1000, saved)
        self.svc.log.record(
            answer_id=self.id,
            user_id=self.user.id,
            model=self.req.model,
            outcome=outcome,
            entry_id=entry.id if entry else None,
            key=answer.key if answer else None,
            prompt=self.req.messages[-1]["content"],
            similarity=answer.similarity if answer else None,
            latency_ms=latency_ms,
            tokens_saved=saved,
            error_code=error_code,
        )


def answer_body(
    answer: chat.Answer, answer_id: str, threshold: float, scope: str, started: float
) -> dict[str, Any]:
    """The native API's answer."""
    entry = answer.entry
    return {
        "id": answer_id,
        "model": entry.model,
        "message": {"role": "assistant", "content": entry.response},
        "cache": {
            "status": answer.status,
            "similarity": answer.similarity,
            "matched_prompt": answer.matched_prompt,
            "threshold": threshold,
            "checks": answer.checks,
            "scope": scope,
            "entry_id": entry.id,
        },
        "usage": {
            "prompt_tokens": entry.prompt_tokens,
            "completion_tokens": entry.completion_tokens,
        },
        "timings": {"total_ms": _ms_since(started)},
    }


def _ms_since(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 3)


# --- for the drop-in surfaces ---------------------------------------------------------------


def read_json() -> Any:
    # force: Ollama's own examples post JSON with curl -d, i.e. without a JSON content type.
    body = request.get_json(force=True, silent=True)
    if body is None:
        raise BadRequest("the body must be valid JSON", code="invalid_json")
    return body


def with_header_mode(fields: dict[str, Any]) -> dict[str, Any]:
    """The body's cache mode, or the one `Cache-Control` asks for: no-cache (refresh),
    no-store (no-store), both (bypass). A `cache.mode` in the body wins."""
    cache = fields.get("cache", {})
    if not isinstance(cache, dict) or "mode" in cache:
        return fields  # the body decides (or ChatRequest.parse refuses it)
    cc = request.cache_control
    mode = {(True, True): "bypass", (True, False): "refresh", (False, True): "no-store"}.get(
        (bool(cc.no_cache), bool(cc.no_store))
    )
    return {**fields, "cache": {**cache, "mode": mode}} if mode else fields


def cache_headers(status: str, similarity: float | None) -> dict[str, str]:
    headers = {"X-Cache": status}
    if similarity is not None:
        headers["X-Cache-Similarity"] = f"{similarity:.4f}"
    return headers


def finish_reason(req: ChatRequest, entry: Entry) -> str:
    """'length' when the answer used its whole `num_predict` budget (how Ollama decides;
    the entry does not keep Ollama's done_reason), else 'stop'."""
    limit = req.options.get("num_predict")
    if isinstance(limit, int) and 0 < limit <= entry.completion_tokens:
        return "length"
    return "stop"


def cached_models(user: User) -> dict[str, float | None]:
    """The default model and every model with a live entry this user may be served, with
    the newest entry's time (unix seconds)."""
    default: dict[str, float | None] = {current_app.config["OLLAMA_MODEL"]: None}
    return {**default, **services().repo.models(user.id)}


def register_errors(blueprint: Blueprint, render: Callable[[ApiError], Any]) -> None:
    """Every error of `blueprint`'s views in that API's shape, with the native status."""
    blueprint.register_error_handler(Exception, lambda exc: respond(exc, render))
