"""The embedded llama.cpp backend: same `chat()` contract as OllamaClient, on a real 135M model.

The model loads once for the module (a few seconds); answers are kept short so the whole
file stays well under 30 s on two busy CPU cores.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from inference.embedded import DEFAULT_MODEL_NAME, EmbeddedLLM, default_gguf_path
from inference.ollama import PermanentLLMError

FRANCE = [{"role": "user", "content": "What is the capital of France?"}]
GREEDY = {"temperature": 0, "seed": 42}


@pytest.fixture(scope="module")
def llm() -> EmbeddedLLM:
    return EmbeddedLLM(n_ctx=1024)


def test_default_gguf_path_exists():
    path = Path(default_gguf_path())
    assert path.is_file()
    assert path.suffix == ".gguf"


def test_version_does_not_load_the_model():
    llm = EmbeddedLLM(n_ctx=512)  # a configuration no other test loads
    assert llm.version().startswith("xllamacpp ")
    assert not llm.loaded


@pytest.mark.parametrize(
    ("model", "messages", "options", "message"),
    [
        ("llama3.2:1b", FRANCE, None, "not found"),
        (DEFAULT_MODEL_NAME, [], None, "non-empty list"),
        (DEFAULT_MODEL_NAME, [{"role": "user"}], None, "'role' and 'content'"),
        (DEFAULT_MODEL_NAME, FRANCE, {"num_predict": "many"}, "num_predict"),
    ],
)
def test_bad_requests_are_permanent_before_loading(model, messages, options, message):
    llm = EmbeddedLLM(n_ctx=512)
    with pytest.raises(PermanentLLMError, match=message):
        llm.chat(model, messages, options)
    assert not llm.loaded


@pytest.mark.slow
def test_answer_streams_token_by_token(llm):
    tokens: list[str] = []
    completion = llm.chat(DEFAULT_MODEL_NAME, FRANCE, {**GREEDY, "num_predict": 32}, tokens.append)
    assert completion.content.strip()
    assert len(tokens) > 1
    assert "".join(tokens) == completion.content
    assert 0 < completion.completion_tokens <= 32
    assert completion.prompt_tokens > 0
    assert completion.model == DEFAULT_MODEL_NAME
    assert completion.done_reason in ("stop", "length")


@pytest.mark.slow
def test_greedy_answers_repeat(llm):
    options = {**GREEDY, "num_predict": 16}
    first = llm.chat(DEFAULT_MODEL_NAME, FRANCE, options)
    second = llm.chat(DEFAULT_MODEL_NAME, FRANCE, options)
    assert first.content == second.content
    assert first.completion_tokens == second.completion_tokens


@pytest.mark.slow
def test_num_predict_bounds_the_answer(llm):
    completion = llm.chat(DEFAULT_MODEL_NAME, FRANCE, {**GREEDY, "num_predict": 3})
    assert completion.completion_tokens == 3
    assert completion.done_reason == "length"


@pytest.mark.slow
def test_server_rejections_are_permanent(llm):
    with pytest.raises(PermanentLLMError, match="temperature"):
        llm.chat(DEFAULT_MODEL_NAME, FRANCE, {"temperature": "hot"})
    too_long = [{"role": "user", "content": "word " * 2000}]
    with pytest.raises(PermanentLLMError, match="context"):
        llm.chat(DEFAULT_MODEL_NAME, too_long, {"num_predict": 1})


@pytest.mark.slow
def test_on_token_errors_propagate_and_stop_the_answer(llm):
    class Stop(Exception):
        pass

    def on_token(token: str) -> None:
        raise Stop(token)

    with pytest.raises(Stop):
        llm.chat(DEFAULT_MODEL_NAME, FRANCE, {**GREEDY, "num_predict": 200}, on_token)
    # The server cancelled that generation: the next request is answered at once.
    assert llm.chat(DEFAULT_MODEL_NAME, FRANCE, {**GREEDY, "num_predict": 2}).completion_tokens


@pytest.mark.slow
def test_concurrent_calls_keep_their_own_tokens(llm):
    questions = ["Name a colour.", "Name a fruit.", "Name an animal."]
    results: dict[int, tuple[str, str]] = {}
    errors: list[BaseException] = []

    def ask(i: int) -> None:
        tokens: list[str] = []
        try:
            completion = llm.chat(
                DEFAULT_MODEL_NAME,
                [{"role": "user", "content": questions[i]}],
                {**GREEDY, "num_predict": 4},
                tokens.append,
            )
            results[i] = ("".join(tokens), completion.content)
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(len(questions))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors
    assert len(results) == len(questions)
    for streamed, content in results.values():
        assert streamed == content and content
