"""What makes two requests the same cache entry (pure functions, no services)."""

from __future__ import annotations

import pytest

from cache import CacheKey

USER = [{"role": "user", "content": "What is Redis?"}]


def key(messages=USER, model="m", options=None, scope="shared"):
    return CacheKey.build(model, messages, options, scope)


def test_white_space_and_unicode_form_do_not_split_a_key():
    a = key([{"role": "user", "content": "Qu'est-ce que  Redis ?\n"}])
    b = key([{"role": "user", "content": "Qu'est-ce que Redis ?"}])
    c = key([{"role": "user", "content": "Cafe\u0301?"}])
    d = key([{"role": "user", "content": "Caf\u00e9?"}])
    assert a.exact == b.exact
    assert c.exact == d.exact


@pytest.mark.parametrize(
    "other",
    [
        {"model": "n"},
        {"options": {"temperature": 0.1}},
        {"messages": [{"role": "system", "content": "be terse"}, *USER]},
        {
            "messages": [
                {"role": "user", "content": "hi"},
                {"role": "assistant", "content": "yo"},
                *USER,
            ]
        },
        {"scope": "private:42"},
    ],
)
def test_what_changes_the_answer_changes_the_namespace(other):
    base, changed = key(), key(**other)
    assert changed.namespace != base.namespace
    assert changed.exact != base.exact
    assert changed.prompt == base.prompt


def test_performance_options_and_option_order_do_not_matter():
    a = key(options={"temperature": 0, "seed": 1})
    b = key(options={"seed": 1, "temperature": 0, "num_thread": 8, "num_gpu": 1})
    assert a == b


def test_the_last_message_must_be_the_user_s():
    with pytest.raises(ValueError):
        key([{"role": "assistant", "content": "hello"}])
