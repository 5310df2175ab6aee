"""Drop-in APIs: the real `openai` and `ollama` clients against a running stack.

Each test asks in a namespace of its own (a random seed), so no test can be served
another's entry, exactly or semantically.
"""

from __future__ import annotations

import random
from types import SimpleNamespace

import ollama
import openai
import psycopg
import pytest
import requests

from tests.conftest import auth, nonsense_word, post_chat
from webapp import create_app
from webapp.streaming import append_only

MODEL = "llama3.2:1b"  # the stack's OLLAMA_MODEL


def fresh_seed() -> int:
    return random.randrange(2**31)


@pytest.fixture
def oai(stack, api_key) -> openai.OpenAI:
    # No retries: a test that expects an error must see the first one.
    return openai.OpenAI(base_url=f"{stack.url}/v1", api_key=api_key, max_retries=0)


def ollama_client(stack, **headers: str) -> ollama.Client:
    return ollama.Client(host=stack.url, headers={**auth(), **headers})


def native(stack, messages: list[dict], seed: int) -> dict:
    """The native API's answer to the same question, asked of the LLM again (bypass): equal
    text means the drop-in surface sent the LLM the same request."""
    body = {"messages": messages, "options": {"seed": seed}, "cache": {"mode": "bypass"}}
    resp = post_chat(stack.url, body)
    assert resp.status_code == 200, resp.text
    return resp.json()


def entry_rows(database: str, text: str) -> int:
    with psycopg.connect(database) as conn:
        row = conn.execute(
            "SELECT count(*) FROM cache_entries WHERE prompt LIKE %s", (f"%{text}%",)
        ).fetchone()
    assert row is not None
    return row[0]


# --- OpenAI ---------------------------------------------------------------------------------


def test_openai_chat_is_the_native_answer_and_is_cached(stack, standin, oai, prompt):
    seed = fresh_seed()
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": prompt}]
    raw = oai.chat.completions.with_raw_response.create(model=MODEL, messages=messages, seed=seed)
    first = raw.parse()
    assert raw.headers["X-Cache"] == "miss"
    assert first.id.startswith("chatcmpl-") and first.object == "chat.completion"
    assert first.model == MODEL
    choice = first.choices[0]
    assert choice.message.role == "assistant" and choice.finish_reason == "stop"
    expected = native(stack, messages, seed)
    assert choice.message.content == expected["message"]["content"]
    usage = expected["usage"]
    assert first.usage.prompt_tokens == usage["prompt_tokens"] > 0
    assert first.usage.completion_tokens == usage["completion_tokens"] > 0
    assert first.usage.total_tokens == usage["prompt_tokens"] + usage["completion_tokens"]

    raw = oai.chat.completions.with_raw_response.create(model=MODEL, messages=messages, seed=seed)
    assert raw.headers["X-Cache"] == "exact"
    assert raw.parse().choices[0].message.content == choice.message.content
    assert standin.calls()["chat"] == 2  # the first call and the native bypass


def test_openai_stream_is_the_same_answer_with_usage(stack, standin, oai, prompt):
    seed = fresh_seed()
    messages = [{"role": "user", "content": prompt}]
    raw = oai.chat.completions.with_raw_response.create(
        model=MODEL, messages=messages, seed=seed, stream=True,
        stream_options={"include_usage": True},
    )  # fmt: skip
    assert raw.headers["X-Cache"] == "miss"  # known with the first token
    chunks = list(raw.parse())
    assert all(c.object == "chat.completion.chunk" and c.id == chunks[0].id for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == native(stack, messages, seed)["message"]["content"]
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens > 0
    assert chunks[-1].usage.total_tokens == (
        chunks[-1].usage.prompt_tokens + chunks[-1].usage.completion_tokens
    )

    # The cached answer, streamed without usage (none asked): same text, status in a header.
    # "coalesced" too: within STREAM_TTL_S the relay may replay the finished generation's
    # token stream before its exact lookup answers (a race in streaming.relay).
    raw = oai.chat.completions.with_raw_response.create(
        model=MODEL, messages=messages, seed=seed, stream=True
    )
    assert raw.headers["X-Cache"] in ("exact", "coalesced")
    again = list(raw.parse())
    assert "".join(c.choices[0].delta.content or "" for c in again) == text
    assert all(c.usage is None for c in again)
    assert standin.calls()["chat"] == 2


def test_openai_params_become_ollama_options(stack, standin, oai, prompt):
    """The same parameters, as OpenAI names them and as Ollama options: one cache entry."""
    seed = fresh_seed()
    oai.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": prompt}], seed=seed,
        temperature=0.3, top_p=0.9, max_completion_tokens=50, stop=["\n\n"],
        presence_penalty=0.1, frequency_penalty=0.2, user="ignored-field",
    )  # fmt: skip
    options = {"seed": seed, "temperature": 0.3, "top_p": 0.9, "num_predict": 50,
               "stop": ["\n\n"], "presence_penalty": 0.1, "frequency_penalty": 0.2}  # fmt: skip
    resp = post_chat(stack.url, {"prompt": prompt, "options": options})
    assert resp.json()["cache"]["status"] == "exact", resp.json()
    assert standin.calls()["chat"] == 1


def test_a_paraphrase_reports_its_similarity(stack, standin, oai):
    seed, topic = fresh_seed(), nonsense_word()
    ask = {"model": MODEL, "seed": seed}
    first = oai.chat.completions.create(
        **ask,
        messages=[
            {"role": "user", "content": f"How do I reset the password of my {topic} account?"}
        ],
    )
    raw = oai.chat.completions.with_raw_response.create(
        **ask,
        messages=[{"role": "user", "content": f"How can I reset my {topic} account password?"}],
    )
    assert raw.headers["X-Cache"] == "semantic"
    assert 0.9 <= float(raw.headers["X-Cache-Similarity"]) < 1
    assert raw.parse().choices[0].message.content == first.choices[0].message.content
    assert standin.calls()["chat"] == 1


def test_openai_errors_have_openai_shape(stack, standin, oai, prompt):
    bad = openai.OpenAI(base_url=f"{stack.url}/v1", api_key="not-a-key", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as info:
        bad.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}])
    assert info.value.status_code == 401
    assert info.value.body["type"] == "authentication_error"
    assert set(info.value.body) == {"message", "type", "param", "code"}

    with pytest.raises(openai.BadRequestError) as info:
        oai.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "x"}], n=2)
    assert info.value.body["param"] == "n" and info.value.body["code"] == "bad_request"
    with pytest.raises(openai.BadRequestError) as info:
        oai.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": " "}])
    assert "empty" in info.value.body["message"]

    resp = requests.post(f"{stack.url}/v1/chat/completions", data="{", headers=auth(), timeout=10)
    assert resp.status_code == 400
    assert resp.json()["error"]["code"] == "invalid_json"

    # An LLM failure before the first token is still an HTTP error when streaming.
    standin.configure(fail_status=404)
    with pytest.raises(openai.APIStatusError) as info:
        oai.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": prompt}], stream=True,
            seed=fresh_seed(),
        )  # fmt: skip
    assert info.value.status_code == 502 and info.value.body["code"] == "llm_rejected"


def test_openai_lists_the_default_and_cached_models(stack, oai, prompt):
    model = f"compat-{fresh_seed()}:latest"  # the stand-in serves any name
    oai.chat.completions.create(model=model, messages=[{"role": "user", "content": prompt}])
    listed = {m.id: m for m in oai.models.list()}
    assert MODEL in listed and model in listed
    assert listed[model].owned_by == "flock" and listed[model].created > 0


def test_a_retried_stream_is_spliced_where_it_repeats_and_fails_where_it_differs():
    done = ("done", SimpleNamespace(entry=SimpleNamespace(response="a b c")))
    retried = [("meta", {}), ("delta", "a "), ("delta", "b "), ("reset", None),
               ("heartbeat", None), ("delta", "a "), ("delta", "b c"), done]  # fmt: skip
    assert list(append_only(iter(retried))) == [
        ("delta", "a "), ("delta", "b "), ("heartbeat", None), ("delta", "c"), done,
    ]  # fmt: skip
    diverged = [("delta", "a "), ("reset", None), ("delta", "x "), done]
    assert [e for e, _ in append_only(iter(diverged))] == ["delta", "error"]
    shorter = [("delta", "a b c d"), ("reset", None), ("delta", "a b c"), done]
    assert [e for e, _ in append_only(iter(shorter))] == ["delta", "error"]


# --- Ollama ---------------------------------------------------------------------------------


def test_ollama_chat_is_the_native_answer(stack, standin, prompt):
    client, seed = ollama_client(stack), fresh_seed()
    messages = [{"role": "user", "content": prompt}]
    expected = native(stack, messages, seed)
    answer = client.chat(model=MODEL, messages=messages, options={"seed": seed})
    assert answer.message.role == "assistant"
    assert answer.message.content == expected["message"]["content"]
    assert answer.done and answer.done_reason == "stop" and answer.model == MODEL
    assert answer.eval_count == expected["usage"]["completion_tokens"]
    assert answer.prompt_eval_count == expected["usage"]["prompt_tokens"]
    assert answer.total_duration > 0 and answer.created_at.endswith("Z")

    parts = list(client.chat(model=MODEL, messages=messages, options={"seed": seed}, stream=True))
    assert all(not p.done for p in parts[:-1]) and parts[-1].done
    assert parts[-1].done_reason == "stop" and parts[-1].eval_count == answer.eval_count
    assert "".join(p.message.content for p in parts) == answer.message.content
    assert standin.calls()["chat"] == 2  # the native bypass and the first chat


def test_ollama_generate_is_the_native_answer(stack, standin, prompt):
    client, seed = ollama_client(stack), fresh_seed()
    messages = [{"role": "system", "content": "Answer in French."},
                {"role": "user", "content": prompt}]  # fmt: skip
    expected = native(stack, messages, seed)["message"]["content"]
    kwargs = {"model": MODEL, "prompt": prompt, "system": "Answer in French.",
              "options": {"seed": seed}}  # fmt: skip
    parts = list(client.generate(**kwargs, stream=True))
    assert "".join(p.response for p in parts) == expected and parts[-1].done
    answer = client.generate(**kwargs)
    assert answer.response == expected and answer.done and answer.done_reason == "stop"
    assert standin.calls()["chat"] == 2  # the native bypass and the first generate


def test_ollama_errors_and_unsupported_fields(stack, standin, prompt):
    client = ollama_client(stack)
    for field in ({"raw": True}, {"context": [1, 2]}, {"images": ["aGk="]}):
        with pytest.raises(ollama.ResponseError) as info:
            client.generate(model=MODEL, prompt=prompt, **field)
        assert info.value.status_code == 400
        assert next(iter(field)) in info.value.error and "not supported" in info.value.error

    resp = requests.post(f"{stack.url}/api/chat", json={"messages": []}, timeout=10)
    assert resp.status_code == 401 and isinstance(resp.json()["error"], str)

    standin.configure(fail_status=404)
    with pytest.raises(ollama.ResponseError) as info:
        list(client.chat(model=MODEL, messages=[{"role": "user", "content": prompt}],
                         options={"seed": fresh_seed()}, stream=True))  # fmt: skip
    assert info.value.status_code == 502


def test_ollama_tags_and_version_come_from_upstream(stack):
    client = ollama_client(stack)
    names = {m.model for m in client.list().models}
    assert {"llama3.2:1b", "smollm2:135m"} <= names  # what the stand-in lists
    resp = requests.get(f"{stack.url}/api/version", headers=auth(), timeout=10)
    assert resp.json() == {"version": "0.6.0"}


def test_ollama_tags_fall_back_to_cached_models(stack, stack_env, oai, prompt, monkeypatch):
    model = f"compat-{fresh_seed()}:latest"
    oai.chat.completions.create(model=model, messages=[{"role": "user", "content": prompt}])
    # An app of our own whose Ollama is unreachable (nothing listens on port 9).
    for name, value in stack_env.items():
        monkeypatch.setenv(name, value)
    app = create_app({"OLLAMA_URL": "http://127.0.0.1:9"})
    with app.test_client() as web:
        resp = web.get("/api/tags", headers=auth())
        assert resp.status_code == 200
        listed = ollama.ListResponse(**resp.get_json())  # what the ollama client parses
        assert {MODEL, model} <= {m.model for m in listed.models}
        assert web.get("/api/version", headers=auth()).get_json() == {"version": "0.6.0"}


# --- per-request cache control --------------------------------------------------------------


def test_cache_control_no_cache_asks_the_llm_again(stack, standin, oai, prompt):
    ask = {"model": MODEL, "messages": [{"role": "user", "content": prompt}], "seed": fresh_seed()}
    oai.chat.completions.create(**ask)
    raw = oai.chat.completions.with_raw_response.create(
        **ask, extra_headers={"Cache-Control": "no-cache"}
    )
    assert raw.headers["X-Cache"] == "miss"
    assert standin.calls()["chat"] == 2

    # The native cache object works on both surfaces.
    raw = oai.chat.completions.with_raw_response.create(
        **ask, extra_body={"cache": {"mode": "refresh"}}
    )
    assert raw.headers["X-Cache"] == "miss"
    answer = ollama_client(stack).chat(
        model=MODEL, messages=ask["messages"], options={"seed": ask["seed"]}
    )
    assert standin.calls()["chat"] == 3  # served from the cache
    assert answer.message.content == raw.parse().choices[0].message.content


def test_cache_control_no_store_leaves_nothing_behind(stack, standin, database, prompt):
    client, seed = ollama_client(stack, **{"Cache-Control": "no-store"}), fresh_seed()
    messages = [{"role": "user", "content": prompt}]
    client.chat(model=MODEL, messages=messages, options={"seed": seed})
    assert entry_rows(database, prompt.split()[3]) == 0

    resp = requests.post(
        f"{stack.url}/api/chat", headers=auth(), timeout=30,
        json={"model": MODEL, "messages": messages, "options": {"seed": seed}, "stream": False},
    )  # fmt: skip
    assert resp.headers["X-Cache"] == "miss"
    assert standin.calls()["chat"] == 2
    assert entry_rows(database, prompt.split()[3]) == 1
