"""The semantic index at 10k, 100k and 1M entries: HNSW (cache/semantic.py) against today's
exact numpy search, side by side in the same run. Floors at the largest size of the first
distribution: lookup p50 <= 2 ms with recall@1 >= 0.99 (paraphrase queries), embedder RSS
<= 1.5 GB, a new embedder serving within 60 s; exit status 1 when one is missed.

Vectors: synthetic, of two distributions fitted to MiniLM's vectors of real questions
(../shared/data/question_pairs_train.jsonl.gz), L2-normalised (see `Synthetic`). Queries:
paraphrase-like ones (a stored vector moved to cosine 0.91 along the distribution's own
variation: a semantic hit) and fresh ones (drawn from the distribution: nothing near, a
miss whatever is returned; their recall is reported, not held to a floor). Real sentences
at small scale: 10,000 questions of that file, asked with 2,000 duplicates' wordings, HNSW
forced (INDEX_ANN_MIN_ENTRIES=0) against exact.

Each size runs in a process of its own (its RSS is the index's); the cold start is a new
process that loads the snapshot and catches up 1,000 changes from the log. A size's index
is built once (1 thread: ~10-15 min at 1M here) and kept in var/bench-index/ with the fit;
later runs load it (`--rebuild` builds anew; the summary gives the build's time and date).
Uses Redis database 13 (FLOCK_BENCH_REDIS_DB) under key prefixes of its own.

    nice -n 10 env OMP_NUM_THREADS=1 python -m bench.index [--sizes 10000,100000,1000000]
"""

from __future__ import annotations

import argparse
import ctypes
import gzip
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import redis

from bench.common import CACHE_URL, log, machine
from bench.common import percentile as _percentile
from cache.keyspace import Keyspace
from cache.semantic import ANN_CONNECTIVITY, ANN_EF_ADD, DIM, SemanticIndex, _Ann, _Exact

ROOT = Path(__file__).resolve().parent.parent
QUESTIONS = [
    base / "shared" / "data" / "question_pairs_train.jsonl.gz"
    for base in (ROOT.parent, ROOT.parent.parent)
]
CHUNK = 50_000
KINDS = ("clustered", "gaussian")  # the floors hold at the largest size of the first
BUILT = ROOT / "var" / "bench-index"  # the fit and the indexes built from it, reused
FLOORS = {"p50_ms": 2.0, "recall_at_1": 0.99, "embedder_rss_gb": 1.5, "cold_start_s": 60.0}


def percentile(values: list[float], p: float) -> float:
    return float(_percentile(sorted(values), p) or 0.0)


def rss() -> int:
    """Resident bytes, after giving freed heap back (glibc keeps it otherwise)."""
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


class Synthetic:
    """Deterministic vectors of a distribution fitted to MiniLM's vectors of real questions,
    chunk by chunk. `gaussian`: the mean and covariance only (moment-matched: no
    neighbourhoods, the worst case for a graph index); `clustered`: a mixture of Gaussians
    at k-means centres of the real vectors, with the covariance of their residuals scaled
    by 0.8 (neighbourhoods nearer real ones: see `nearest_neighbour` in the summary)."""

    def __init__(self, fit: Path, kind: str) -> None:
        data = np.load(fit)
        self.kind = kind
        self.mu, self.a = data["mu"], data["a"]
        self.centres, self.weights, self.residual = data["centres"], data["weights"], data["r"]

    def chunk(self, seed: int, n: int) -> np.ndarray:
        rng = np.random.default_rng(seed)
        z = rng.standard_normal((n, DIM))
        if self.kind == "gaussian":
            return _unit(self.mu + z @ self.a)
        picked = rng.choice(len(self.centres), n, p=self.weights)
        return _unit(self.centres[picked] + 0.8 * (z @ self.residual))

    def paraphrase(self, vectors: np.ndarray, seed: int) -> np.ndarray:
        """Each vector moved to cosine 0.91 along a direction of the distribution's own
        variation (the residuals' for `clustered`): a rewording stays among sentences, it
        does not step off them (an off-distribution query is a harder case than a cache's)."""
        z = np.random.default_rng(seed).standard_normal((len(vectors), DIM))
        step = z @ (self.a if self.kind == "gaussian" else self.residual)
        step -= (step * vectors).sum(1, keepdims=True) * vectors  # orthogonal to the vector
        step /= np.linalg.norm(step, axis=1, keepdims=True)
        return _unit(vectors + 0.455 * step)  # cos = 1 / sqrt(1 + 0.455^2) = 0.91

    def all(self, n: int) -> Iterator[np.ndarray]:
        for start in range(0, n, CHUNK):
            yield self.chunk(start, min(CHUNK, n - start))


def _fit(vectors: np.ndarray, path: Path) -> None:
    x = vectors.astype(np.float64)
    mu = x.mean(0)
    w, v = np.linalg.eigh(np.cov(x - mu, rowvar=False))
    a = (v * np.sqrt(np.clip(w, 0, None))).T
    if path.exists():  # an earlier fit's Gaussian: the indexes kept were built from it
        mu, a = np.load(path)["mu"], np.load(path)["a"]
    k = len(x) // 20
    centres = x[np.random.default_rng(0).choice(len(x), k, replace=False)].copy()
    for _ in range(10):  # k-means (cosine)
        assigned = (x @ centres.T).argmax(1)
        for j in range(k):
            members = x[assigned == j]
            if len(members):
                centres[j] = members.mean(0)
    wr, vr = np.linalg.eigh(np.cov(x - centres[assigned], rowvar=False))
    weights = np.bincount(assigned, minlength=k) / len(x)
    np.savez(path, mu=mu, a=a, centres=centres,
             weights=weights, r=(vr * np.sqrt(np.clip(wr, 0, None))).T)  # fmt: skip


def _nearest(x: np.ndarray) -> list[float]:
    """Percentiles 10, 50, 90 of each vector's similarity to its nearest other one."""
    s = x @ x.T
    np.fill_diagonal(s, -2)
    return [round(float(v), 3) for v in np.percentile(s.max(1), [10, 50, 90])]


def _key(i: int) -> str:
    return f"{i:064x}"


def _prompt(i: int) -> str:
    return f"How do I get synthetic question number {i} answered quickly and well?"


def measure_size(
    n: int, kind: str, fit: Path, built: Path, ef: int, threads: int, reuse: bool
) -> dict:
    """Build an index of n entries (or load the one an earlier run built and saved in
    `built`); lookups, recall, RSS; the exact baseline; a snapshot for the cold start."""
    gen = Synthetic(fit, kind)
    client = redis.Redis.from_url(CACHE_URL)
    ns = "bench"

    def source() -> Iterator[tuple[str, str, str, np.ndarray]]:
        i = 0
        for block in gen.all(n):
            for v in block:
                yield ns, _key(i), _prompt(i), v
                i += 1

    import usearch.index  # noqa: F401  (its import is no part of the index's size)

    client.ping()
    record = built / "built.json"
    earlier = json.loads(record.read_text()) if reuse and record.exists() else None
    if earlier:  # the log of that build's life: its epoch, no changes since
        keys = Keyspace(earlier["prefix"])
        client.delete(keys.semlog)
        client.set(keys.semlog_epoch, earlier["epoch"])
    else:
        keys = Keyspace(f"flock:bench-index:{uuid.uuid4().hex[:8]}:")
    base = rss()
    index = SemanticIndex(client, keys, source, ann_ef=ef, build_threads=threads,
                          snapshot_dir=built / "snapshot" if earlier else None,
                          snapshot_interval_s=1e9)  # fmt: skip
    started = time.perf_counter()
    index.sync()
    seconds = time.perf_counter() - started
    index_bytes = rss() - base
    structure = type(index._spaces[ns]).__name__
    loaded = index.stats()["loaded_from"]
    if loaded == "source":
        shutil.rmtree(built, ignore_errors=True)
        built.mkdir(parents=True)
        index.save_snapshot(built / "snapshot")
        epoch = client.get(keys.semlog_epoch)
        earlier = {"build_s": round(seconds, 1), "built_at": time.strftime("%Y-%m-%d %H:%M"),
                   "threads": threads, "prefix": keys.prefix,
                   "epoch": epoch.decode()}  # fmt: skip
        record.write_text(json.dumps(earlier))
    log(f"{kind} {n}: {structure} from the {loaded} in {seconds:.1f}s, "
        f"{index_bytes / n:.0f} B/entry")  # fmt: skip

    # Queries and their exact answers (the f32 vectors are regenerated: not the index's RSS).
    matrix = np.vstack(list(gen.all(n)))
    rng = np.random.default_rng(7)
    stored = matrix[np.sort(rng.choice(n, 300, replace=False))]
    queries = np.vstack([gen.paraphrase(stored, 10**9 + 1), gen.chunk(10**9 + 2, 200)])
    best = np.full(len(queries), -2.0)
    truth = np.zeros(len(queries), dtype=np.int64)
    for start in range(0, n, CHUNK):
        scores = matrix[start : start + CHUNK] @ queries.T
        top = scores.max(0)
        better = top > best
        truth[better] = scores.argmax(0)[better] + start
        best[better] = top[better]

    def timed(search) -> tuple[list[float], list[str]]:
        lat, got = [], []
        for q in queries:
            t0 = time.perf_counter()
            found = search(q)
            lat.append((time.perf_counter() - t0) * 1000)
            got.append(found[0].key if found else "")
        return lat, got

    timed(lambda q: index.search(ns, q, k=3))  # warm
    lat, got = timed(lambda q: index.search(ns, q, k=3))
    ok = np.array([g == _key(t) for g, t in zip(got, truth, strict=True)])
    space = index._spaces[ns]
    lat_inner, _ = timed(lambda q: space.search(q, 3))
    sweep = {}
    if isinstance(space, _Ann):
        for trial in (64, 128, 256, 512):
            space.index.expansion_search = trial  # type: ignore[misc]
            lat_ef, got_ef = timed(lambda q: space.search(q, 3))
            hit = [g == _key(t) for g, t in zip(got_ef[:300], truth[:300], strict=True)]
            sweep[trial] = {"p50_ms": round(percentile(lat_ef, 50), 3),
                            "recall_at_1": round(float(np.mean(hit)), 4)}  # fmt: skip
        space.index.expansion_search = ef  # type: ignore[misc]

    # Today's exact numpy search over the same vectors (float32, as before this change).
    exact = _Exact()
    exact.matrix, exact.keys = matrix, [_key(i) for i in range(n)]
    exact.prompts = exact.keys
    sample = queries[:: max(1, len(queries) // (100 if n >= 500_000 else 500))]
    lat_exact = []
    for q in sample:
        t0 = time.perf_counter()
        exact.search(q, 3)
        lat_exact.append((time.perf_counter() - t0) * 1000)
    del exact, matrix

    scratch = Path(tempfile.mkdtemp(prefix="flock-bench-index-"))
    started = time.perf_counter()
    index.save_snapshot(scratch)  # what a running embedder pays every INDEX_SNAPSHOT_INTERVAL_S
    save_s = time.perf_counter() - started
    shutil.rmtree(scratch)
    for i in range(1000):  # changes after the snapshot, for the cold start to catch up
        index.add(ns, _key(n + i), _prompt(n + i), queries[i % len(queries)])
    p50, p50_exact = percentile(lat, 50), percentile(lat_exact, 50)
    return {
        "distribution": kind,
        "entries": n,
        "index": structure,
        "build_s": earlier["build_s"],
        "built_at": earlier["built_at"],
        "build_threads": earlier["threads"],
        "loaded_from": loaded,
        "load_s": round(seconds, 1),
        "index_bytes_per_entry": round(index_bytes / n),
        "index_rss_mb": round(index_bytes / 2**20),
        "lookup_ms": {"p50": round(p50, 3), "p99": round(percentile(lat, 99), 3)},
        "lookup_index_only_ms": {
            "p50": round(percentile(lat_inner, 50), 3),
            "p99": round(percentile(lat_inner, 99), 3),
        },  # fmt: skip
        "recall_at_1": {
            "paraphrase": round(float(ok[:300].mean()), 4),
            "fresh": round(float(ok[300:].mean()), 4),
        },  # fmt: skip
        "paraphrase_top_similarity_p50": round(float(np.median(best[:300])), 3),
        "exact_numpy_ms": {
            "p50": round(p50_exact, 3),
            "p99": round(percentile(lat_exact, 99), 3),
        },  # fmt: skip
        "speedup_p50": round(p50_exact / p50, 1),
        "snapshot_save_s": round(save_s, 1),
        "ef_sweep_index_only": sweep,
        "prefix": keys.prefix,
    }


def cold_start(prefix: str, snapshot: Path, ef: int) -> dict:
    """A new embedder: load the snapshot, catch up with the log, answer one search."""
    import usearch.index  # noqa: F401

    client = redis.Redis.from_url(CACHE_URL)
    client.ping()
    base = rss()
    started = time.perf_counter()
    index = SemanticIndex(client, Keyspace(prefix), lambda: (), ann_ef=ef,
                          snapshot_dir=snapshot, snapshot_interval_s=1e9)  # fmt: skip
    found = index.search("bench", np.ones(DIM, dtype=np.float32) / DIM**0.5, k=3)
    seconds = time.perf_counter() - started
    return {
        "cold_start_s": round(seconds, 2),
        "loaded_from": index.stats()["loaded_from"],
        "entries": index.stats()["entries"],
        "found": len(found),
        "rss_mb": round((rss() - base) / 2**20),
    }


def _questions() -> tuple[list[str], list[str], list[str]]:
    """Distinct questions, and (asked, its duplicate) pairs from the labelled file."""
    path = next((p for p in QUESTIONS if p.exists()), None)
    if path is None:
        raise SystemExit(f"question_pairs_train.jsonl.gz not found in {QUESTIONS}")
    seen: dict[str, None] = {}
    asked: dict[str, str] = {}  # a duplicate's wording -> the stored question; never stored
    with gzip.open(path, "rt") as f:
        for line in f:
            row = json.loads(line)
            a, b = row["a"], row["b"]
            if a in asked or b in asked:
                continue
            if row["duplicate"] and a not in seen and b not in seen and len(asked) < 2000:
                asked[b] = a
                seen.setdefault(a)
            else:
                seen.setdefault(a)
                seen.setdefault(b)
            if len(seen) >= 10_000:
                break
    return list(seen), list(asked), list(asked.values())


def real_sentences(ef: int, rebuild: bool) -> tuple[dict, Path, int]:
    """MiniLM on real questions: the fit for the synthetic vectors, and HNSW against exact
    on them (the duplicates' wordings asked)."""
    from inference.embeddings import load_embedder
    from settings import current

    model = load_embedder(cache_dir=ROOT / current().embed_cache_dir)
    model.embed(["warm up"])
    model_rss = rss()  # this whole process: Python, numpy, onnxruntime and MiniLM
    stored, asked, expected = _questions()
    started = time.perf_counter()
    out: dict = {}
    client = redis.Redis.from_url(CACHE_URL)
    vectors = model.embed(stored)
    asked_vectors = model.embed(asked)
    log(f"embedded {len(stored) + len(asked)} real questions in "
        f"{time.perf_counter() - started:.0f}s")  # fmt: skip
    fit = BUILT / "fit.npz"  # kept: the indexes built from it are kept too
    if rebuild or not fit.exists() or "centres" not in np.load(fit):
        BUILT.mkdir(parents=True, exist_ok=True)
        if rebuild:
            fit.unlink(missing_ok=True)
        _fit(vectors, fit)
    sample = vectors[:5000]
    out["nearest_neighbour"] = {
        "real": _nearest(sample),
        **{kind: _nearest(Synthetic(fit, kind).chunk(5, len(sample))) for kind in KINDS},
    }

    rows = [
        ("real", f"{i:064x}", s, vec)
        for i, (s, vec) in enumerate(zip(stored, vectors, strict=True))
    ]
    picks = {}
    for name, threshold in (("hnsw", 0), ("exact", 10**9)):
        keys = Keyspace(f"flock:bench-index:{uuid.uuid4().hex[:8]}:")
        index = SemanticIndex(client, keys, lambda: rows, ann_min_entries=threshold, ann_ef=ef)
        index.sync()
        lat = []
        picks[name] = []
        for q in asked_vectors:
            t0 = time.perf_counter()
            picks[name].append(index.search("real", q, k=3)[0])
            lat.append((time.perf_counter() - t0) * 1000)
        out[f"{name}_p50_ms"] = round(percentile(lat, 50), 3)
    by_key = {key: vec for _, key, _, vec in rows}
    same = near = 0
    for q, a, e in zip(asked_vectors, picks["hnsw"], picks["exact"], strict=True):
        same += a.key == e.key
        near += a.key == e.key or e.similarity - float(by_key[a.key] @ q) < 0.005
    index_of = {s: i for i, s in enumerate(stored)}
    found = sum(
        e.key == f"{index_of[x]:064x}" for e, x in zip(picks["exact"], expected, strict=True)
    )
    out.update({
        "stored": len(stored),
        "asked": len(asked),
        "recall_at_1": round(same / len(asked), 4),
        "recall_at_1_within_0.005": round(near / len(asked), 4),
        "exact_finds_the_duplicate": round(found / len(asked), 4),
    })  # fmt: skip
    return out, fit, model_rss


def _child(args: list[str]) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "bench.index", *args],
        cwd=ROOT, env=env, capture_output=True, text=True,
    )  # fmt: skip
    sys.stderr.write(proc.stderr)
    if proc.returncode != 0:
        raise SystemExit(f"bench.index {' '.join(args)} failed ({proc.returncode})")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--ef", type=int, default=None, help="INDEX_ANN_EF (default: settings)")
    parser.add_argument("--threads", type=int, default=1, help="threads building the HNSW")
    parser.add_argument("--rebuild", action="store_true",
                        help=f"build every size anew (default: load what an earlier run built"
                             f" and saved in {BUILT.relative_to(ROOT)})")  # fmt: skip
    parser.add_argument("--kinds", default=",".join(KINDS), help="synthetic distributions")
    parser.add_argument("--size", type=int, help=argparse.SUPPRESS)  # a child: one size
    parser.add_argument("--kind", help=argparse.SUPPRESS)
    parser.add_argument("--cold", help=argparse.SUPPRESS)  # a child: a cold start
    parser.add_argument("--fit", help=argparse.SUPPRESS)
    parser.add_argument("--built", help=argparse.SUPPRESS)
    args = parser.parse_args()
    from settings import current

    ef = args.ef or current().index_ann_ef
    if args.size:
        result = measure_size(
            args.size, args.kind, Path(args.fit), Path(args.built), ef, args.threads,
            not args.rebuild,
        )  # fmt: skip
        print(json.dumps(result))
        return
    if args.cold:
        print(json.dumps(cold_start(args.cold, Path(args.built) / "snapshot", ef)))
        return

    started = time.perf_counter()
    real, fit, model_rss = real_sentences(ef, args.rebuild)
    log(f"real sentences: {real}")
    sizes = []
    runs = [(k, int(n)) for k in args.kinds.split(",") for n in args.sizes.split(",")]
    for kind, n in runs:
        built = BUILT / f"{kind}-{n}-m{ANN_CONNECTIVITY}-add{ANN_EF_ADD}"
        one = _child(["--size", str(n), "--kind", kind, "--fit", str(fit), "--built", str(built),
                      "--ef", str(ef), "--threads", str(args.threads)]
                     + (["--rebuild"] if args.rebuild else []))  # fmt: skip
        one["cold_start"] = _child(["--cold", one.pop("prefix"), "--built", str(built),
                                    "--ef", str(ef)])  # fmt: skip
        one["embedder_rss_gb"] = round((model_rss + one["index_rss_mb"] * 2**20) / 2**30, 2)
        log(json.dumps(one))
        sizes.append(one)
    client = redis.Redis.from_url(CACHE_URL)
    for key in client.scan_iter("flock:bench-index:*", count=1000):
        client.delete(key)
    top = max((s for s in sizes if s["distribution"] == sizes[0]["distribution"]),
              key=lambda s: s["entries"])  # fmt: skip
    checks = {
        "p50_ms": top["lookup_ms"]["p50"] <= FLOORS["p50_ms"],
        "recall_at_1": top["recall_at_1"]["paraphrase"] >= FLOORS["recall_at_1"],
        "embedder_rss_gb": top["embedder_rss_gb"] <= FLOORS["embedder_rss_gb"],
        "cold_start_s": top["cold_start"]["cold_start_s"] <= FLOORS["cold_start_s"],
    }
    summary = {
        "bench": "index",
        "machine": machine(),
        "ef": ef,
        "build_threads": args.threads,
        "embedder_without_index_rss_mb": round(model_rss / 2**20),
        "real_sentences": real,
        "sizes": sizes,
        "floors": FLOORS,
        "floors_at": {"distribution": top["distribution"], "entries": top["entries"]},
        "passed": checks,
        "seconds": round(time.perf_counter() - started),
    }
    print(json.dumps(summary))
    if not all(checks.values()):
        sys.exit(1)


if __name__ == "__main__":
    main()
