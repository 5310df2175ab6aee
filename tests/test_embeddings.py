"""The MiniLM embedders on the real model: the ONNX int8 fast path against sentence-transformers.

One export per session, into a temporary cache directory, made by two processes racing for it
(the situation of two Celery children starting on a fresh machine).
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from bench.embed_speed import SAMPLE_SENTENCES
from inference.embeddings import (
    EMBEDDING_DIM,
    Embedder,
    OnnxEmbedder,
    SentenceTransformerEmbedder,
    default_model_path,
    load_embedder,
)
from inference.onnx_export import MANIFEST_FILE, MODEL_FILE

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent

# (text, paraphrase, unrelated). English only: MiniLM-L6 was trained on English pairs, and a
# German paraphrase scores barely above an unrelated German sentence (0.61 vs 0.50).
TRIPLES = [
    ("What is the capital of France?", "Which city is France's capital?", "How do I bake bread?"),
    (
        "How do I reverse a list in Python?",
        "What's the way to reverse a Python list?",
        "The weather is lovely in spring.",
    ),
    ("Thanks a lot!", "Thank you so much!", "The server returned a 500 error."),
    (
        "My laptop will not turn on.",
        "My computer does not start.",
        "Recommend a science-fiction novel.",
    ),
    ("Is it going to rain tomorrow?", "Will it rain tomorrow?", "Where can I buy running shoes?"),
    (
        "Summarise the plot of Hamlet.",
        "Give me a summary of Hamlet's story.",
        "Convert 10 miles to kilometres.",
    ),
]

_RACE = """
import json, sys
from pathlib import Path
from inference.onnx_export import ensure_quantized_model
path, exported = ensure_quantized_model(Path(sys.argv[1]), Path(sys.argv[2]))
print(json.dumps({"path": str(path), "exported": exported}))
"""


@dataclass(frozen=True)
class SharedCache:
    directory: Path
    racers: list[dict[str, object]]


@pytest.fixture(scope="session")
def shared_cache(tmp_path_factory: pytest.TempPathFactory) -> SharedCache:
    directory = tmp_path_factory.mktemp("onnx-cache")
    model_path = str(default_model_path())
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _RACE, model_path, str(directory)],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    racers = []
    for proc in procs:
        out, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err[-2000:]
        racers.append(json.loads(out.strip().splitlines()[-1]))
    return SharedCache(directory, racers)


@pytest.fixture(scope="session")
def onnx_embedder(shared_cache: SharedCache) -> OnnxEmbedder:
    return OnnxEmbedder(cache_dir=shared_cache.directory)


@pytest.fixture(scope="session")
def torch_embedder() -> SentenceTransformerEmbedder:
    return SentenceTransformerEmbedder()


@pytest.fixture(params=["onnx", "torch"])
def embedder(
    request: pytest.FixtureRequest,
    onnx_embedder: OnnxEmbedder,
    torch_embedder: SentenceTransformerEmbedder,
) -> Embedder:
    return onnx_embedder if request.param == "onnx" else torch_embedder


def test_the_sample_is_varied_enough() -> None:
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(default_model_path() / "tokenizer.json"))
    tokenizer.no_truncation()
    tokenizer.no_padding()  # tokenizer.json pads everything to 128
    lengths = [len(tokenizer.encode(text).ids) for text in SAMPLE_SENTENCES]
    assert len(SAMPLE_SENTENCES) >= 30
    assert sum(n > 256 for n in lengths) >= 2  # truncation is exercised
    assert sum(n <= 5 for n in lengths) >= 5  # so are one-word and punctuation-only inputs


def test_onnx_int8_agrees_with_sentence_transformers(
    onnx_embedder: OnnxEmbedder, torch_embedder: SentenceTransformerEmbedder
) -> None:
    fast = onnx_embedder.embed(SAMPLE_SENTENCES)
    reference = torch_embedder.embed(SAMPLE_SENTENCES)
    cosines = (fast * reference).sum(axis=1)
    worst = int(cosines.argmin())
    assert cosines.min() >= 0.99, (SAMPLE_SENTENCES[worst], float(cosines[worst]))


def test_shape_dtype_and_unit_norm(embedder: Embedder) -> None:
    vectors = embedder.embed(SAMPLE_SENTENCES[:5] + [""])
    assert vectors.shape == (6, EMBEDDING_DIM) == (6, embedder.dim)
    assert vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert embedder.embed([]).shape == (0, EMBEDDING_DIM)


def test_names_tell_the_paths_apart(
    onnx_embedder: OnnxEmbedder, torch_embedder: SentenceTransformerEmbedder
) -> None:
    assert onnx_embedder.name == "minilm-l6-v2/onnx-int8"
    assert torch_embedder.name == "minilm-l6-v2/torch"


def test_a_single_string_is_refused(embedder: Embedder) -> None:
    with pytest.raises(TypeError):
        embedder.embed("one string")  # type: ignore[arg-type]


def test_onnx_vectors_depend_on_the_text_only(
    onnx_embedder: OnnxEmbedder, shared_cache: SharedCache
) -> None:
    batch = onnx_embedder.embed(SAMPLE_SENTENCES)
    assert np.array_equal(batch, onnx_embedder.embed(SAMPLE_SENTENCES))
    alone = np.stack([onnx_embedder.embed([text])[0] for text in SAMPLE_SENTENCES])
    assert np.array_equal(batch, alone)  # whatever it is batched with
    another = OnnxEmbedder(cache_dir=shared_cache.directory)
    assert np.array_equal(batch, another.embed(SAMPLE_SENTENCES))


def test_torch_path_is_deterministic(torch_embedder: SentenceTransformerEmbedder) -> None:
    texts = SAMPLE_SENTENCES[::4]  # a third of the sample keeps this quick on torch
    first = torch_embedder.embed(texts)
    np.testing.assert_allclose(torch_embedder.embed(texts), first, atol=1e-6)


def test_paraphrases_score_higher_than_unrelated_sentences(embedder: Embedder) -> None:
    para, unrelated = [], []
    for text, paraphrase, other in TRIPLES:
        a, p, u = embedder.embed([text, paraphrase, other])
        para.append(float(a @ p))
        unrelated.append(float(a @ u))
        assert a @ p > a @ u + 0.2, (text, float(a @ p), float(a @ u))
    assert min(para) > max(unrelated), (para, unrelated)


def test_both_paths_say_which_texts_fit_the_window(
    onnx_embedder: OnnxEmbedder, torch_embedder: SentenceTransformerEmbedder
) -> None:
    """254 word pieces fit (256 with [CLS] and [SEP]); one more is truncated, so the
    semantic cache must not use that vector."""
    for embedder in (onnx_embedder, torch_embedder):
        assert embedder.fits("") and embedder.fits(SAMPLE_SENTENCES[0])
        assert embedder.fits("word " * 254)
        assert not embedder.fits("word " * 255)
        assert not embedder.fits(SAMPLE_SENTENCES[-1])  # 400 words


def test_racing_exporters_export_once(shared_cache: SharedCache) -> None:
    assert sorted(bool(r["exported"]) for r in shared_cache.racers) == [False, True]
    assert len({r["path"] for r in shared_cache.racers}) == 1
    entries = [p for p in shared_cache.directory.iterdir() if p.is_dir()]
    assert len(entries) == 1, entries  # no temporary directory left behind
    manifest = json.loads((entries[0] / MANIFEST_FILE).read_text())
    assert manifest["self_check_min_cosine"] >= 0.98


def test_the_disk_cache_is_reused(shared_cache: SharedCache) -> None:
    model_file = Path(str(shared_cache.racers[0]["path"]))
    assert model_file.name == MODEL_FILE
    mtime = model_file.stat().st_mtime_ns
    again = OnnxEmbedder(cache_dir=shared_cache.directory)
    assert again.exported is False
    assert again.model_file == model_file
    assert model_file.stat().st_mtime_ns == mtime


def test_fallback_when_onnx_is_forced_off(shared_cache: SharedCache) -> None:
    embedder = load_embedder(cache_dir=shared_cache.directory, prefer_onnx=False)
    assert embedder.name == "minilm-l6-v2/torch"
    assert embedder.embed(["hello"]).shape == (1, EMBEDDING_DIM)


def test_fallback_when_onnxruntime_is_missing(
    shared_cache: SharedCache, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # makes `import onnxruntime` fail
    with caplog.at_level(logging.WARNING, logger="inference.embeddings"):
        embedder = load_embedder(cache_dir=shared_cache.directory)
    assert embedder.name == "minilm-l6-v2/torch"
    assert "falling back to torch" in caplog.text
    assert embedder.embed(["hello"]).shape == (1, EMBEDDING_DIM)
