"""Export a trained pair-model checkpoint to int8 ONNX (called by `bench.train_pair_model export`).

The recipe is the embedder's (inference/onnx_export.py): the few outlier hidden channels
are split out of every encoder Linear and kept in float, the rest is quantised per channel
to 7-bit int8 weights. The graph takes input_ids, attention_mask and token_type_ids and
returns one logit per pair. A self-check scores 2,000 validation pairs with the float and the
int8 model and refuses the export when they disagree (max |P difference| or a drop in
average precision).
"""

from __future__ import annotations

import json
import shutil
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from bench.train_pair_model import (
    MAX_LENGTH,
    average_precision,
    build_model,
    encode,
    log,
    score,
    validation,
)
from inference.onnx_export import (
    OPSET,
    OUTLIER_CHANNELS,
    _input_abs_max,
    _outlier_matmuls,
    _quiet_root_logger,
    _split_outlier_channels,
)

MAX_AP_DROP = 0.005


def _export_graph(model: Any, out_file: Path) -> None:
    import torch

    class Logit(torch.nn.Module):
        def __init__(self, inner: torch.nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any) -> Any:
            out = self.inner(input_ids=input_ids, attention_mask=attention_mask,
                             token_type_ids=token_type_ids)  # fmt: skip
            return out.logits[:, 0]

    input_ids = torch.tensor([[101, 7592, 102, 2088, 102], [101, 7592, 102, 2088, 0]])
    names = ["input_ids", "attention_mask", "token_type_ids"]
    axes = {n: {0: "batch", 1: "sequence"} for n in names}
    axes["logit"] = {0: "batch"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            Logit(model),
            (input_ids, (input_ids != 0).long(), torch.tensor([[0, 0, 0, 1, 1]] * 2)),
            str(out_file),
            input_names=names,
            output_names=["logit"],
            dynamic_axes=axes,
            opset_version=OPSET,
            dynamo=False,
        )


def _onnx_scores(onnx_file: Path, tokenizer: Any, rows: list[tuple[str, str, float]]) -> np.ndarray:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(onnx_file), options, providers=["CPUExecutionProvider"])
    out = []
    for i in range(0, len(rows), 64):
        part = rows[i : i + 64]
        enc = encode(tokenizer, part, "np")
        feeds = {k: enc[k].astype(np.int64) for k in ("input_ids", "attention_mask",
                                                       "token_type_ids")}  # fmt: skip
        out.append(session.run(["logit"], feeds)[0])
    return np.concatenate(out)


def export(checkpoint: Path, out_dir: Path, layers: int) -> Path:
    import torch
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.shape_inference import quant_pre_process

    started = time.monotonic()
    model_file = f"pair-minilm-l{layers}-int8.onnx"
    tokenizer, model = build_model(layers)
    model.load_state_dict(torch.load(checkpoint, weights_only=True))
    model.eval()
    val = validation()
    labels = np.array([y for _, _, y in val])
    reference = score(model, tokenizer, val)
    model.eval()
    calib = [tokenizer(a, b, truncation=True, max_length=MAX_LENGTH)["input_ids"]
             for a, b, _ in val[:64]]  # fmt: skip
    with torch.no_grad():
        _split_outlier_channels(model.bert, _input_abs_max(model.bert, calib), OUTLIER_CHANNELS)
    work = checkpoint.parent / "export"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    float_file, pre_file = work / "float.onnx", work / "pre.onnx"
    out_file = work / model_file
    _export_graph(model, float_file)
    quant_pre_process(str(float_file), str(pre_file), skip_symbolic_shape=True)
    with _quiet_root_logger():
        quantize_dynamic(str(pre_file), str(out_file), per_channel=True,
                         weight_type=QuantType.QInt8, reduce_range=True,
                         nodes_to_exclude=_outlier_matmuls(pre_file, OUTLIER_CHANNELS))  # fmt: skip
    quantised = _onnx_scores(out_file, tokenizer, val)
    sig = lambda z: 1 / (1 + np.exp(-z))  # noqa: E731
    check = {
        "max_abs_p_diff": round(float(np.abs(sig(quantised) - sig(reference)).max()), 4),
        "p50_abs_p_diff": round(float(np.median(np.abs(sig(quantised) - sig(reference)))), 5),
        "ap_float": round(average_precision(reference, labels), 4),
        "ap_int8": round(average_precision(quantised, labels), 4),
    }
    log(f"self-check: {check}")
    if check["ap_float"] - check["ap_int8"] > MAX_AP_DROP:
        raise SystemExit(f"int8 model loses too much: {check}")
    out_dir.mkdir(parents=True, exist_ok=True)
    for old in out_dir.glob("pair-minilm-l*-int8.onnx"):
        old.unlink()
    shutil.copy(out_file, out_dir / model_file)
    manifest = {
        "file": model_file,
        "layers": layers,
        "max_length": MAX_LENGTH,
        "checkpoint": checkpoint.name,
        "self_check": check,
        "export_seconds": round(time.monotonic() - started, 1),
    }
    (out_dir / "pair-model.json").write_text(json.dumps(manifest, indent=2) + "\n")
    log(f"exported {out_dir / model_file} ({(out_dir / model_file).stat().st_size >> 20} MB)")
    return out_dir / model_file
