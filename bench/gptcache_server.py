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
  on torch, HF_HUB_OFFLINE=1; GPTCache's default ONNX model would be downloaded from a hub);
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
    embedding = SBERT(os.environ[_ENV + "MODEL"])
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
    Path(args.data_dir).mkdir(parents=True, exist_ok=True)
    import uvicorn

    uvicorn.run("bench.gptcache_server:create_app", factory=True, host=args.host,
                port=args.port, workers=args.workers, log_level="warning")


if __name__ == "__main__":
    main()
