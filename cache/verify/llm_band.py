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


def said_yes(reply: str) -> bool:
    return reply.strip().lower().startswith("yes")
