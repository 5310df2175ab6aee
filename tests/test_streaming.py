"""Streaming: one LLM call's tokens reach every waiter live, in order, from the first."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

from tests.conftest import auth, fresh_namespace
from tests.sse import stream_chat, text_of


def test_twenty_streams_share_one_call_and_get_every_token_in_order(stack, standin):
    standin.configure(tokens=20, token_interval_s=0.1)
    body = {"prompt": "Tell me a story about a lighthouse keeper.", **fresh_namespace()}
    with ThreadPoolExecutor(20) as pool:
        early = [pool.submit(stream_chat, stack.url, body, auth()) for _ in range(19)]
        while standin.calls()["in_flight"] == 0:
            time.sleep(0.02)
        time.sleep(0.5)  # the generation is under way: a late joiner comes in now
        late = pool.submit(stream_chat, stack.url, body, auth())
        results = [f.result() for f in early] + [late.result()]

    assert standin.calls()["chat"] == 1
    done = results[0][-1][1]
    expected = done["message"]["content"]
    for events in results:
        names = [e for e, _, _ in events]
        assert names[0] == "meta" and names[-1] == "done", names
        assert text_of(events) == expected  # every token, in order
        assert events[-1][1]["message"]["content"] == expected
    statuses = sorted(r[0][1]["status"] for r in results)
    assert statuses.count("miss") == 1 and statuses.count("coalesced") == 19

    late_events = results[-1]
    first_delta = next(t for e, _, t in late_events if e == "delta")
    assert first_delta < late_events[-1][2] - 0.5  # live: well before the generation ended
    assert sum(e == "delta" for e, _, _ in late_events) >= 10  # tokens, not one lump


def test_cached_answers_replay_as_a_stream(stack, standin):
    body = {"prompt": "What is the difference between a lake and a pond?", **fresh_namespace()}
    first = stream_chat(stack.url, body, auth())
    again = stream_chat(stack.url, body, auth())
    assert again[0][1]["status"] == "exact"
    assert text_of(again) == text_of(first) == first[-1][1]["message"]["content"]
    assert sum(e == "delta" for e, _, _ in again) > 3
    assert standin.calls()["chat"] == 1, (first[0], first[-1][1]["cache"], standin.calls())


def test_a_stream_reports_errors(stack, standin):
    standin.configure(fail_status=404)
    events = stream_chat(stack.url, {"prompt": "Will this fail?", **fresh_namespace()}, auth())
    assert events[-1][0] == "error"
    assert events[-1][1]["error"]["code"] == "llm_rejected"
