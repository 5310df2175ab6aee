"""Export all-MiniLM-L6-v2 to an int8 ONNX model, once, into an on-disk cache.

Recipe (bump RECIPE_VERSION whenever any of it changes; it is part of the cache key):

1. Load the BERT encoder with transformers (eager attention, so the graph traces cleanly).
2. Calibrate: run CALIBRATION_TEXTS and record, for every Linear layer, the largest |activation|
   seen on each input channel.
3. Split outlier channels: MiniLM has a handful of hidden channels whose activations are ~40x
   larger than the rest. Dynamic quantisation picks one uint8 range per tensor, so those few
   channels would eat the whole range and short inputs ("ok", "Thanks!") drift to cosine ~0.97
   against the float model. Each Linear becomes `linear(x * keep) + x[..., outliers] @ W_out`:
   the big matmul sees no outliers and is quantised, the tiny k-column matmul stays float.
4. Export the traced encoder to ONNX (output `last_hidden_state`, dynamic batch and length).
5. `quantize_dynamic(per_channel=True)` with int8 weights in *reduced range* (7 bits). On AVX2
   CPUs without VNNI (our EPYC machines) onnxruntime's u8*s8 kernel uses VPMADDUBSW, whose
   int16 pair sums saturate once activations use the full uint8 range — which step 3 makes
   them do; 7-bit weights keep every pair sum in range. (uint8 weights avoid it too, through
   a u8*u8 kernel that measured 1.4x slower here: 7.3 against 5.3 ms p50 per sentence of the
   shared paraphrase set, at min cosine 0.997 against 0.993 to the float model.)
6. Self-check the int8 model against the float encoder on the calibration texts and refuse
   to cache it below SELF_CHECK_MIN_COSINE.

The result lands in `cache_dir/<key>/model.onnx` (+ `manifest.json`). The directory is built
under a temporary name and renamed into place, and an flock serialises exporters, so two
processes starting at once neither corrupt the cache nor both do the work.

Heavy imports (torch, transformers, onnx, onnxruntime) happen inside the functions.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

RECIPE_VERSION = "minilm-int8-split4-s7pc-v2"
OUTLIER_CHANNELS = 4
OPSET = 17
SELF_CHECK_MIN_COSINE = 0.98
MODEL_FILE = "model.onnx"
MANIFEST_FILE = "manifest.json"

# Only used to find the outlier channels, which are a property of the model rather than of
# the text, so a couple of dozen varied sentences suffice. Kept apart from the test sample.
CALIBRATION_TEXTS = [
    "The meeting has been moved to Thursday afternoon.",
    "How many calories are in a banana?",
    "Please write a short poem about the sea.",
    "Der Zug hat zehn Minuten Verspätung.",
    "yes",
    "What does HTTP 404 mean?",
    "import numpy as np; x = np.zeros((3, 4))",
    "Ich möchte ein Bier bestellen.",
    "La vie est belle.",
    "What is 17 times 23?",
    "Summarise the causes of the First World War.",
    "Why do cats purr?",
    "Thank you so much!!",
    "???",
    "C'est quoi un LLM ?",
    "Tell me a joke about programmers.",
    "Best pizza in Naples",
    "The mitochondria is the powerhouse of the cell.",
    "東京は日本の首都です。",
    "Dit is een Nederlandse zin.",
    "Can you help me debug this stack trace?",
    "A long time ago in a galaxy far, far away, a small band of rebels fought an empire. " * 8,
]

_INPUT_NAMES = ["input_ids", "attention_mask", "token_type_ids"]
_WEIGHT_FILES = ("config.json", "model.safetensors", "pytorch_model.bin")
_VERSIONED = ("torch", "transformers", "onnx", "onnxruntime")


class ExportError(Exception):
    """The ONNX model could not be built (or failed its self-check)."""


def cache_key(model_path: Path) -> str:
    """Hash of the weights, the recipe and the exporting libraries' versions."""
    digest = hashlib.sha256(RECIPE_VERSION.encode())
    for name in _WEIGHT_FILES:
        file = model_path / name
        if file.is_file():
            digest.update(name.encode())
            with file.open("rb") as fh:
                digest.update(hashlib.file_digest(fh, "sha256").digest())
    for dist in _VERSIONED:
        digest.update(f"{dist}=={_version(dist)}".encode())
    return digest.hexdigest()[:20]


def ensure_quantized_model(model_path: Path, cache_dir: Path) -> tuple[Path, bool]:
    """Return (path of the cached int8 model, whether this call had to export it)."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    key = cache_key(model_path)
    final_dir = cache_dir / key
    model_file = final_dir / MODEL_FILE
    if model_file.is_file():  # fast path: no lock needed to read a completed export
        return model_file, False
    with _exclusive_lock(cache_dir / f"{key}.lock"):
        if model_file.is_file():  # another process finished it while we waited
            return model_file, False
        for stale in cache_dir.glob(f".{key}.*"):  # left by an exporter that died mid-way
            shutil.rmtree(stale, ignore_errors=True)
        _export_into(model_path, final_dir)
    return model_file, True


def _export_into(model_path: Path, final_dir: Path) -> None:
    tmp_dir = Path(tempfile.mkdtemp(prefix=f".{final_dir.name}.", dir=final_dir.parent))
    try:
        started = time.monotonic()
        min_cosine = export_quantized(model_path, tmp_dir / MODEL_FILE)
        manifest = {
            "recipe": RECIPE_VERSION,
            "model_path": str(model_path),
            "versions": {dist: _version(dist) for dist in _VERSIONED},
            "self_check_min_cosine": round(min_cosine, 5),
            "export_seconds": round(time.monotonic() - started, 1),
        }
        (tmp_dir / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2))
        tmp_dir.chmod(0o755)  # mkdtemp makes it owner-only; other users' workers read it too
        os.rename(tmp_dir, final_dir)  # atomic: the directory appears complete or not at all
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)  # no-op after a successful rename
    logger.info("exported int8 ONNX embedder to %s: %s", final_dir, manifest)


def export_quantized(model_path: Path, out_file: Path) -> float:
    """Build the int8 model at `out_file`; return the self-check's minimum cosine."""
    try:
        import torch
        from onnxruntime.quantization import QuantType, quantize_dynamic
        from onnxruntime.quantization.shape_inference import quant_pre_process
        from transformers import AutoModel
    except ImportError as exc:
        raise ExportError(f"exporting needs torch, transformers and onnxruntime: {exc}") from exc

    try:
        model = AutoModel.from_pretrained(
            str(model_path), attn_implementation="eager", local_files_only=True
        ).eval()
    except Exception as exc:  # any loading failure means "no export"
        raise ExportError(f"cannot load {model_path} with transformers: {exc}") from exc

    encodings = _calibration_encodings(model_path)
    with torch.no_grad():  # not inference_mode: its tensors cannot be traced later
        reference = [_pool(_run_torch(model, ids)) for ids in encodings]
        _split_outlier_channels(model, _input_abs_max(model, encodings), OUTLIER_CHANNELS)

    float_file = out_file.with_name("float.onnx")
    pre_file = out_file.with_name("preprocessed.onnx")
    try:
        _export_onnx(model, float_file)
        # The pre-processing onnxruntime's quantiser asks for; symbolic shape inference
        # cannot follow transformers' mask construction, plain ONNX shape inference suffices.
        quant_pre_process(str(float_file), str(pre_file), skip_symbolic_shape=True)
        with _quiet_root_logger():
            quantize_dynamic(
                str(pre_file),
                str(out_file),
                per_channel=True,
                weight_type=QuantType.QInt8,
                reduce_range=True,
                nodes_to_exclude=_outlier_matmuls(pre_file, OUTLIER_CHANNELS),
            )
    except Exception as exc:  # exporter/quantiser failures vary by version
        raise ExportError(f"ONNX export or quantisation failed: {exc}") from exc
    finally:
        float_file.unlink(missing_ok=True)
        pre_file.unlink(missing_ok=True)

    min_cosine = _self_check(out_file, encodings, reference)
    if min_cosine < SELF_CHECK_MIN_COSINE:
        raise ExportError(
            f"int8 model drifts from the float model: min cosine {min_cosine:.4f} "
            f"< {SELF_CHECK_MIN_COSINE}"
        )
    return min_cosine


@contextmanager
def _exclusive_lock(path: Path) -> Iterator[None]:
    with path.open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)  # released by the kernel if this process dies
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


@contextmanager
def _quiet_root_logger() -> Iterator[None]:
    """Drop INFO records logged straight on the root logger, as onnxruntime's quantiser does
    (a line per node: ~150 lines in a worker log at INFO). Named loggers are unaffected."""
    root = logging.getLogger()
    root.addFilter(_warnings_and_up)
    try:
        yield
    finally:
        root.removeFilter(_warnings_and_up)


def _warnings_and_up(record: logging.LogRecord) -> bool:
    return record.levelno >= logging.WARNING


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "none"


def _calibration_encodings(model_path: Path) -> list[list[int]]:
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(model_path / "tokenizer.json"))
    tokenizer.no_padding()
    tokenizer.enable_truncation(max_length=256)
    return [enc.ids for enc in tokenizer.encode_batch(CALIBRATION_TEXTS)]


def _run_torch(model: Any, ids: list[int]) -> np.ndarray:
    import torch

    input_ids = torch.tensor([ids])
    out = model(input_ids=input_ids, attention_mask=torch.ones_like(input_ids))
    return out.last_hidden_state[0].numpy()


def _pool(hidden: np.ndarray) -> np.ndarray:
    vec = hidden.mean(axis=0)
    return vec / np.linalg.norm(vec)


def _input_abs_max(model: Any, encodings: list[list[int]]) -> dict[str, Any]:
    """Per input channel max |x| of every Linear in the encoder, over the calibration set."""
    import torch

    amax: dict[str, torch.Tensor] = {}
    hooks = []
    for name, module in model.encoder.named_modules():
        if isinstance(module, torch.nn.Linear):

            def record(_m: Any, inputs: tuple[Any, ...], _out: Any, name: str = name) -> None:
                x = inputs[0].detach().abs().reshape(-1, inputs[0].shape[-1]).amax(dim=0)
                amax[name] = torch.maximum(amax[name], x) if name in amax else x

            hooks.append(module.register_forward_hook(record))
    try:
        for ids in encodings:
            _run_torch(model, ids)
    finally:
        for hook in hooks:
            hook.remove()
    return amax


def _split_outlier_channels(model: Any, amax: dict[str, Any], k: int) -> None:
    """Replace each encoder Linear by a quantisable main path plus a float outlier path."""
    import torch

    # Defined here rather than at module level so importing this module does not import torch.
    class OutlierSplitLinear(torch.nn.Module):
        keep: torch.Tensor
        outliers: torch.Tensor
        weight: torch.Tensor
        bias: torch.Tensor
        outlier_weight: torch.Tensor

        def __init__(self, linear: torch.nn.Linear, outliers: torch.Tensor) -> None:
            super().__init__()
            keep = torch.ones(linear.in_features)
            keep[outliers] = 0.0
            self.register_buffer("keep", keep)
            self.register_buffer("outliers", outliers)
            self.register_buffer("weight", linear.weight.detach() * keep)
            self.register_buffer("bias", linear.bias.detach().clone())
            self.register_buffer("outlier_weight", linear.weight.detach()[:, outliers].T.clone())

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            main = torch.nn.functional.linear(x * self.keep, self.weight, self.bias)
            return main + torch.index_select(x, -1, self.outliers) @ self.outlier_weight

    for name, module in list(model.encoder.named_modules()):
        if isinstance(module, torch.nn.Linear):
            parent_name, _, attr = name.rpartition(".")
            outliers = torch.sort(amax[name].topk(k).indices).values
            setattr(
                model.encoder.get_submodule(parent_name), attr, OutlierSplitLinear(module, outliers)
            )


def _export_onnx(model: Any, out_file: Path) -> None:
    import torch

    class LastHiddenState(torch.nn.Module):
        """Positional inputs and a plain tensor output, which the TorchScript exporter needs."""

        def __init__(self, bert: torch.nn.Module) -> None:
            super().__init__()
            self.bert = bert

        def forward(
            self,
            input_ids: torch.Tensor,
            attention_mask: torch.Tensor,
            token_type_ids: torch.Tensor,
        ) -> torch.Tensor:
            out = self.bert(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            )
            return out.last_hidden_state

    # Trace with a padded row so the attention-mask path is part of the graph.
    input_ids = torch.tensor([[101, 7592, 2088, 102], [101, 7592, 102, 0]])
    attention_mask = (input_ids != 0).long()
    axes = {name: {0: "batch", 1: "sequence"} for name in [*_INPUT_NAMES, "last_hidden_state"]}
    with warnings.catch_warnings():
        # TracerWarnings about Python-side shape checks in transformers' mask helpers: the
        # exported graph is checked against the float model in _self_check.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            LastHiddenState(model),
            (input_ids, attention_mask, torch.zeros_like(input_ids)),
            str(out_file),
            input_names=_INPUT_NAMES,
            output_names=["last_hidden_state"],
            dynamic_axes=axes,
            opset_version=OPSET,
            dynamo=False,  # the dynamo exporter needs onnxscript, which we do not ship
        )


def _outlier_matmuls(onnx_file: Path, k: int) -> list[str]:
    """Names of the small float MatMuls of the outlier path, which must stay unquantised."""
    import onnx

    graph = onnx.load(str(onnx_file), load_external_data=False).graph
    small = {init.name for init in graph.initializer if len(init.dims) == 2 and init.dims[0] == k}
    return [node.name for node in graph.node if node.op_type == "MatMul" and node.input[1] in small]


def _self_check(onnx_file: Path, encodings: list[list[int]], reference: list[np.ndarray]) -> float:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(onnx_file), options, providers=["CPUExecutionProvider"])
    cosines = []
    for ids, ref in zip(encodings, reference, strict=True):
        input_ids = np.array([ids], dtype=np.int64)
        feeds = {
            "input_ids": input_ids,
            "attention_mask": np.ones_like(input_ids),
            "token_type_ids": np.zeros_like(input_ids),
        }
        hidden = session.run(["last_hidden_state"], feeds)[0][0]
        cosines.append(float(_pool(hidden) @ ref))
    return min(cosines)
