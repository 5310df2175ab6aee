"""GPTCache's own HTTP server (gptcache_server.server: FastAPI, POST /get and /put) under
uvicorn with several worker processes, for bench.load. Runs in var/gptcache-venv, never in
the project's venv: it imports only the standard library and what that venv holds.

    var/gptcache-venv/bin/python -m bench.gptcache_server --port 8001 --workers 2 \
        --data-dir var/gptcache-data --model <MiniLM directory> --threshold 0.9

The `gptcache_server` command itself serves one process (uvicorn.run(app) in its main()) and
sets its cache up from the command line or a YAML file; several workers need uvicorn's own
supervisor and an app factory, so this module does what that main() does, once per worker:
init_similar_cache (gptcache.adapter.api, the function the server's main() calls) with

- embedding: gptcache.embedding.SBERT on the MiniLM directory given (sentence-transformers
  on torch, HF_HUB_OFFLINE=1; GPTCache's default ONNX model would be downloaded from a hub),
  or with --onnx-file Flock's int8 ONNX export of the same model (_OnnxMiniLM);
- data manager: sqlite + faiss (manager_factory("sqlite,faiss"), GPTCache's default for
  init_similar_cache), with max_size raised so nothing is evicted during a bench;
- similarity: SearchDistanceEvaluation (its default) and Config(similarity_threshold).

GPTCache keeps the faiss index in process memory: each worker has its own data directory
(data-dir/worker-<pid>), so N workers are N independent caches behind one port (sharing the
sqlite file would not share the index either). Each worker writes data-dir/ready-<pid> once
its model is loaded and warm.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

_ENV = "BENCH_GPTCACHE_"


class _OnnxMiniLM:
    """Flock's int8 ONNX export of MiniLM as a GPTCache embedding: what
    inference.embeddings.OnnxEmbedder does (tokenizer.json truncated to 256, one unpadded
    pass, mean pooling, unit length), without importing Flock's code into this venv."""

    dimension = 384

    def __init__(self, onnx_file: str, model_dir: str) -> None:
        import onnxruntime as ort
        from tokenizers import Tokenizer

        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        self._session = ort.InferenceSession(onnx_file, options,
                                             providers=["CPUExecutionProvider"])
        self._tokenizer = Tokenizer.from_file(str(Path(model_dir) / "tokenizer.json"))
        self._tokenizer.no_padding()
        self._tokenizer.enable_truncation(max_length=256)

    def to_embeddings(self, data: str, **_: Any) -> Any:
        import numpy as np

        ids = np.array([self._tokenizer.encode(data).ids], dtype=np.int64)
        feeds = {"input_ids": ids, "attention_mask": np.ones_like(ids),
                 "token_type_ids": np.zeros_like(ids)}
        vector = self._session.run(["last_hidden_state"], feeds)[0][0].mean(axis=0)
        return (vector / max(float(np.linalg.norm(vector)), 1e-12)).astype("float32")


def create_app() -> Any:
    """The app of one uvicorn worker: GPTCache's server app, its global cache set up."""
    import torch
    from gptcache import Config
    from gptcache.adapter.api import init_similar_cache
    from gptcache.embedding import SBERT
    from gptcache.manager import manager_factory
    from gptcache.similarity_evaluation.distance import SearchDistanceEvaluation
    from gptcache_server import server

    torch.set_num_threads(int(os.environ[_ENV + "TORCH_THREADS"]))
    root = Path(os.environ[_ENV + "DATA_DIR"])
    onnx_file = os.environ.get(_ENV + "ONNX_FILE")
    embedding: Any = (_OnnxMiniLM(onnx_file, os.environ[_ENV + "MODEL"]) if onnx_file
                      else SBERT(os.environ[_ENV + "MODEL"]))
    data_manager = manager_factory(
        "sqlite,faiss",
        data_dir=str(root / f"worker-{os.getpid()}"),
        max_size=10_000_000,
        vector_params={"dimension": embedding.dimension},
    )
    init_similar_cache(
        embedding=embedding,
        data_manager=data_manager,
        evaluation=SearchDistanceEvaluation(),
        config=Config(similarity_threshold=float(os.environ[_ENV + "THRESHOLD"])),
    )
    embedding.to_embeddings("warm-up")  # torch's first pass is slow
    (root / f"ready-{os.getpid()}").touch()
    return server.app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--model", required=True, help="a sentence-transformers directory")
    parser.add_argument("--threshold", type=float, required=True,
                        help="GPTCache's similarity_threshold (0..1)")
    parser.add_argument("--onnx-file", default=None,
                        help="embed with this int8 ONNX export of the model instead of SBERT")
    parser.add_argument("--torch-threads", type=int, default=1)
    args = parser.parse_args()
    os.environ.update({
        _ENV + "DATA_DIR": str(Path(args.data_dir).resolve()),
        _ENV + "MODEL": args.model,
        _ENV + "THRESHOLD": str(args.threshold),
        _ENV + "TORCH_THREADS": str(args.torch_threads),
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
    })
    if args.onnx_file:
        os.environ[_ENV + "ONNX_FILE"] = str(Path(args.onnx_file).resolve())
    Path(args.data_dir).mkdir(parents=True, exist_ok=True)
    import uvicorn

    uvicorn.run("bench.gptcache_server:create_app", factory=True, host=args.host,
                port=args.port, workers=args.workers, log_level="warning")


if __name__ == "__main__":
    main()
