"""Streamed answers: the relay every streaming surface renders (native SSE, OpenAI's SSE,
Ollama's NDJSON).

The answer is computed exactly as without streaming (webapp.call.Call.ask, in a side
thread); meanwhile the request relays the key's live token stream. Events: `meta`
once the status is known, `delta` tokens, `reset` if the LLM call was retried after
streaming began, `done` with the Answer, `error` with an ApiError, and heartbeats.
The stream always ends with the answer's full text: whatever the live relay did not
deliver (it lags, or the answer came from the cache) is sent before `done`.
"""

from __future__ import annotations

import json
import queue
import re
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from typing import Any

from cache import CacheKey
from webapp.chat import Answer, Progress
from webapp.errors import ApiError, LLMFailed, WaitTimeout, as_api_error
from webapp.services import Services

HEARTBEAT_S = 10.0
# The relay gives the answer this long past the request's own deadline (the answer reports
# its own timeout, or a failure, first; this is for an answer stuck in a Redis call).
DEADLINE_GRACE_S = 1.0
Event = tuple[str, Any]


def chunks(text: str) -> list[str]:
    """A cached answer replayed as tokens: words with their trailing white space."""
    return re.findall(r"\S+\s*|\s+", text)


def relay(
    svc: Services, key: CacheKey, ask: Callable[[Progress], Answer], timeout_s: float
) -> Iterator[Event]:
    """Events of one streamed answer; the last is ("done", Answer) or ("error", ApiError),
    within `timeout_s` (REQUEST_TIMEOUT_S) and a grace: a stream never outlives its
    request's deadline, whatever the answer is stuck in."""
    progress = Progress()
    result: queue.SimpleQueue[Answer | ApiError] = queue.SimpleQueue()
    deadline = time.monotonic() + timeout_s + DEADLINE_GRACE_S

    def run() -> None:
        try:
            result.put(ask(progress))
        except BaseException as exc:  # every failure reaches the reader, as its ApiError
            result.put(as_api_error(exc))
            if not isinstance(exc, Exception):
                raise

    threading.Thread(target=run, name="stream-ask", daemon=True).start()
    sent: list[str] = []
    meta: dict[str, Any] | None = None
    beat = time.monotonic()
    with ExitStack() as stack:
        tokens = stack.enter_context(svc.tokens.read(key.exact))
        while True:
            try:
                final = result.get_nowait()
                break
            except queue.Empty:
                pass
            if time.monotonic() > deadline:
                final = WaitTimeout(f"no answer within {timeout_s:g} s")
                break
            if not progress.looked_up.wait(0.05):
                continue  # not before the exact lookup: a cached answer is no live one
            try:
                entry = tokens.get(timeout=0.05)
            except queue.Empty:
                if time.monotonic() - beat > HEARTBEAT_S:
                    beat = time.monotonic()
                    yield "heartbeat", None
                continue
            if "follow" in entry:  # our prompt follows a similar one: relay its tokens
                stack.close()
                tokens = stack.enter_context(svc.tokens.read(entry["follow"]))
                meta = {"status": "coalesced", "similarity": float(entry["similarity"]),
                        "matched_prompt": entry["prompt"]}  # fmt: skip
                yield "meta", meta
            elif "reset" in entry and sent:
                sent.clear()
                yield "reset", None
            elif "t" in entry:
                if meta is None:
                    meta = {"status": "miss" if progress.dispatched else "coalesced",
                            "similarity": None, "matched_prompt": None}  # fmt: skip
                    yield "meta", meta
                sent.append(entry["t"])
                yield "delta", entry["t"]
    if isinstance(final, ApiError):
        yield "error", final
        return
    if meta is None:
        yield "meta", {"status": final.status, "similarity": final.similarity,
                       "matched_prompt": final.matched_prompt}  # fmt: skip
    text, streamed = final.entry.response, "".join(sent)
    if not text.startswith(streamed):
        yield "reset", None
        streamed = ""
    for piece in chunks(text[len(streamed) :]):
        yield "delta", piece
    yield "done", final


def append_only(events: Iterator[Event]) -> Iterator[Event]:
    """Relay events for formats that can only append text.

    `meta` is dropped (it went into the headers). A `reset` (the LLM call was retried
    after streaming began) cannot be taken back, so the new text is accepted while it
    repeats what the client already has, and the stream fails if it says otherwise."""
    sent, redo = "", None  # redo: the text since a reset, while it catches up with `sent`
    diverged = LLMFailed(
        "the LLM call was retried mid-stream and its new answer differs from the text "
        "already sent; ask again",
        code="stream_diverged",
    )
    for event, data in events:
        if event == "meta":
            continue
        if event == "reset":
            redo = ""
        elif event == "delta" and redo is None:
            sent += data
            yield event, data
        elif event == "delta":
            redo += data
            if sent.startswith(redo):
                continue
            if not redo.startswith(sent):
                yield "error", diverged
                return
            data, sent, redo = redo[len(sent) :], redo, None
            yield event, data
        elif event == "done" and sent != data.entry.response:
            yield "error", diverged
            return
        else:
            yield event, data


def sse(event: str, data: Any) -> str:
    if event == "heartbeat":
        return ": heartbeat\n\n"
    return f"event: {event}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n"
