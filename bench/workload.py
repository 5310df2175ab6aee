"""The mixed workload of bench.load: which questions, how often, which ones reworded, and
whether an answer belongs to the question it was served for.

The pool: the `origin` questions of ../shared/data/paraphrase_pairs.json (each has a
rewording, its `similar`) and the questions of ../shared/data/question_pairs_train.jsonl.gz
(none has one). N distinct questions are drawn from it, half from each source (all from the
Quora set past the paraphrase set's 964 distinct origins), and put in a random popularity
order; requests then pick question k with probability proportional to 1 / k^s (Zipf). A share
of all requests asks the rewording instead of the question: it is spread over the requests
whose question has one (every such request is reworded when the share asks for more).

Everything is drawn from one seeded random generator: the same arguments give the same
requests, for every system measured.
"""

from __future__ import annotations

import gzip
import json
import os
import random
from dataclasses import dataclass
from pathlib import Path

from tests.ollama_standin import answer_tokens

# ../shared/data beside the checkout; FLOCK_SHARED_DATA points elsewhere (e.g. from a worktree).
DATA = Path(os.environ.get("FLOCK_SHARED_DATA")
            or Path(__file__).resolve().parent.parent.parent / "shared" / "data")
PARAPHRASES = DATA / "paraphrase_pairs.json"
QUORA = DATA / "question_pairs_train.jsonl.gz"


@dataclass(frozen=True)
class Question:
    text: str
    rewording: str | None  # None for the Quora questions


@dataclass(frozen=True)
class Request:
    question: int  # index into Workload.questions
    prompt: str
    reworded: bool


@dataclass(frozen=True)
class Workload:
    questions: list[Question]
    requests: list[Request]

    @property
    def reworded_share(self) -> float:
        return sum(r.reworded for r in self.requests) / len(self.requests)

    def unique_questions(self) -> int:
        return len({r.question for r in self.requests})

    def unique_prompts(self) -> int:
        return len({r.prompt for r in self.requests})

    def asked_in_both_forms(self) -> int:
        """Questions asked both as written and reworded: a perfect semantic cache makes one
        LLM call for each, an exact-only cache two."""
        forms: dict[int, set[bool]] = {}
        for r in self.requests:
            forms.setdefault(r.question, set()).add(r.reworded)
        return sum(1 for f in forms.values() if len(f) == 2)


def _paraphrase_pool() -> list[Question]:
    seen: set[str] = set()
    pool = []
    for pair in json.loads(PARAPHRASES.read_text()):
        origin, similar = pair["origin"].strip(), pair["similar"].strip()
        # An origin listed twice keeps its first rewording; no text may stand for two questions.
        if origin and similar and origin != similar and not {origin, similar} & seen:
            seen |= {origin, similar}
            pool.append(Question(origin, similar))
    return pool


def _quora_pool(taken: set[str]) -> list[str]:
    seen = set(taken)
    pool = []
    with gzip.open(QUORA, "rt", encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            for text in (row["a"].strip(), row["b"].strip()):
                if text and text not in seen:
                    seen.add(text)
                    pool.append(text)
    return pool


def build(n_questions: int, n_requests: int, zipf_s: float, reworded_share: float,
          seed: int) -> Workload:
    rng = random.Random(seed)
    paraphrased = _paraphrase_pool()
    rng.shuffle(paraphrased)
    chosen = paraphrased[: min(len(paraphrased), (n_questions + 1) // 2)]
    taken = {t for q in paraphrased for t in (q.text, q.rewording) if t is not None}
    quora = _quora_pool(taken)
    need = n_questions - len(chosen)
    if need > len(quora):
        raise ValueError(f"the pool holds only {len(chosen) + len(quora)} questions")
    chosen += [Question(text, None) for text in rng.sample(quora, need)]
    rng.shuffle(chosen)  # popularity rank = position: both sources among the popular ones

    weights = [1 / (rank**zipf_s) for rank in range(1, n_questions + 1)]
    picks = rng.choices(range(n_questions), weights=weights, k=n_requests)
    can_reword = [i for i, q in enumerate(picks) if chosen[q].rewording is not None]
    reword = set(rng.sample(can_reword, min(len(can_reword), round(reworded_share * n_requests))))
    requests = []
    for i, q in enumerate(picks):
        question = chosen[q]
        if i in reword and question.rewording is not None:
            requests.append(Request(q, question.rewording, True))
        else:
            requests.append(Request(q, question.text, False))
    return Workload(chosen, requests)


def ollama_body(model: str, prompt: str) -> dict:
    return {"model": model, "messages": [{"role": "user", "content": prompt}], "stream": False}


def answer_words(prompt: str, tokens: int) -> tuple[str, ...]:
    """The stand-in's answer to `prompt` without its first word (a hash of the whole request,
    which differs between a client's body and Flock's): the echoed prompt and filler. Equal
    for two prompts only when they agree on their first `tokens` - 3 words."""
    words = answer_tokens("chat", ollama_body("any", prompt), tokens)
    return tuple(w.strip() for w in words[1:])


def prompt_tokens(prompt: str) -> int:
    """What the stand-in counts as the prompt's tokens (prompt_eval_count): its words."""
    return max(1, len(prompt.split()))


class Judge:
    """Tells whose answer a served answer is: this very prompt's, its other form's (the
    question or its rewording), or another question's (a wrong answer)."""

    def __init__(self, workload: Workload, tokens: int) -> None:
        self._tokens = tokens
        self._forms: list[tuple[tuple[str, ...], ...]] = [
            tuple(answer_words(t, tokens) for t in (q.text, q.rewording) if t is not None)
            for q in workload.questions
        ]

    def verdict(self, request: Request, answer: str) -> str:
        """'own', 'other_form' or 'wrong'."""
        words = tuple(answer.split()[1:])
        if words == answer_words(request.prompt, self._tokens):
            return "own"
        if words in self._forms[request.question]:
            return "other_form"
        return "wrong"
