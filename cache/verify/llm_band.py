"""The uncertain band's second opinion: one short yes/no question to the LLM
(tasks/flow.py: _second_opinion; LLM_VERIFY_BAND)."""

from __future__ import annotations

from typing import Any

SAME_QUESTION = (
    "Do these two questions ask for the same thing, so that one answer serves both? "
    "Reply with yes or no only.\n\nQuestion 1: {a}\nQuestion 2: {b}"
)


def same_question(a: str, b: str) -> tuple[list[dict[str, str]], dict[str, Any]]:
    """The messages and options of the uncertain band's yes/no question to the LLM."""
    content = SAME_QUESTION.format(a=a, b=b)
    return [{"role": "user", "content": content}], {"temperature": 0, "num_predict": 3}


def same_answer(
    question: str, first: str, second: str
) -> tuple[list[dict[str, str]], dict[str, Any]]:
    """The audit's judge (tasks.flow.audit): does the served answer say what the fresh one
    says? Long texts are cut: the judge needs the gist, not every word."""
    content = SAME_ANSWER.format(q=question[:2000], a=first[:4000], b=second[:4000])
    return [{"role": "user", "content": content}], {"temperature": 0, "num_predict": 3}


SAME_ANSWER = (
    "Two answers to one question follow. Reply with one word, yes or no: do they give the "
    "same answer (the same facts, figures and advice; the wording may differ)?\n\n"
    "Question: {q}\n\nAnswer A: {a}\n\nAnswer B: {b}"
)


def said_yes(reply: str) -> bool:
    return reply.strip().lower().startswith("yes")
