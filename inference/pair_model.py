"""The pair model: a MiniLM cross-encoder that reads two prompts together.

    model = PairModel()                      # the int8 ONNX file shipped in inference/models
    p = model.score("How do I reset my router?", "How can I reset my router?")  # 0..1
    model.score(a, b) is None                # the pair does not fit the model's window

P(same question) for one pair, from one forward pass over "[CLS] a [SEP] b [SEP]". Trained
by `bench/train_pair_model.py` (see inference/models/PAIR_MODEL.md, the model card). One
pass per pair, never batched: dynamic quantisation takes one activation range per batch,
so a batch would make a pair's score depend on its neighbours.

A pair longer than the window is not scored (None), never truncated: a truncated pair of
two long prompts that differ only in their last sentence would look identical.

Heavy libraries (onnxruntime, tokenizers) are imported in the constructor.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

MODEL_DIR = Path(__file__).resolve().parent / "models"
MANIFEST = MODEL_DIR / "pair-model.json"


class PairModelError(Exception):
    """The pair model could not be loaded."""


class PairModel:
    def __init__(
        self,
        model_dir: str | Path = MODEL_DIR,
        tokenizer_file: str | Path | None = None,
        intra_op_num_threads: int = 1,
    ) -> None:
        try:
            import onnxruntime  # noqa: F401  (here for the clear error below)
            from tokenizers import Tokenizer
        except ImportError as exc:
            raise PairModelError(f"onnxruntime/tokenizers not available: {exc}") from exc
        model_dir = Path(model_dir)
        try:
            manifest = json.loads((model_dir / "pair-model.json").read_text())
            self.max_length = int(manifest["max_length"])
            self.window = int(manifest.get("window", 2 * self.max_length))
            self.name = str(manifest.get("name", manifest["file"]))
            self.manifest = manifest
            model_file = model_dir / manifest["file"]
        except (OSError, ValueError, KeyError) as exc:
            raise PairModelError(f"bad pair model manifest in {model_dir}: {exc}") from exc
        from inference.embeddings import cpu_session, default_model_path

        if tokenizer_file is None:
            tokenizer_file = default_model_path() / "tokenizer.json"
        try:
            self._session = cpu_session(model_file, intra_op_num_threads)
            self._tokenizer = Tokenizer.from_file(str(tokenizer_file))
        except Exception as exc:  # onnxruntime raises its own exception types
            raise PairModelError(f"cannot load {model_file}: {exc}") from exc
        self._tokenizer.no_padding()
        self._tokenizer.no_truncation()

    def calibration(self) -> tuple[list[float], list[float]]:
        """The error curve measured on held-out pairs (`python -m bench.accuracy
        --calibrate` writes it into the manifest): score thresholds, ascending, and the
        share of wrong pairs among those accepted at each. The prior of cache/audit.py."""
        try:
            curve = self.manifest["calibration"]
            return [float(x) for x in curve["thresholds"]], [float(x) for x in curve["error"]]
        except (KeyError, TypeError, ValueError) as exc:
            raise PairModelError(f"the pair model's manifest has no calibration: {exc}") from exc

    def fits(self, a: str, b: str) -> bool:
        return len(self._tokenizer.encode(a, b)) <= self.window

    def logit(self, a: str, b: str) -> float | None:
        encoding = self._tokenizer.encode(a, b)
        if len(encoding.ids) > self.window:
            return None
        input_ids = np.array([encoding.ids], dtype=np.int64)
        feeds = {
            "input_ids": input_ids,
            "attention_mask": np.ones_like(input_ids),
            "token_type_ids": np.array([encoding.type_ids], dtype=np.int64),
        }
        return float(self._session.run(["logit"], feeds)[0][0])

    def score(self, a: str, b: str) -> float | None:
        """P(same question), or None when the pair does not fit the window. One order only
        (the query first): the model was trained on both orders, and a second pass would
        double the cost for a point of accuracy."""
        z = self.logit(a, b)
        return None if z is None else 1.0 / (1.0 + math.exp(-max(min(z, 40.0), -40.0)))
