"""The browser UI end to end: Debian's Chromium, driven by Playwright, against the real stack.

Screenshots go to the test's tmp dir (artifacts) and, under `make screenshots`, to
docs/screenshots/ for the README.
Playwright never downloads a browser here: it launches /usr/bin/chromium.
"""

from __future__ import annotations

import os
import re
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from tests.conftest import nonsense_word
from tests.stack import ROOT

pytestmark = pytest.mark.slow

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update",
]  # fmt: skip
DOCS = ROOT / "docs" / "screenshots"
ANSWER_TIMEOUT_MS = 20_000


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not Path(CHROMIUM).exists():
        pytest.skip("needs Debian's chromium (apt-get install chromium)")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser: Browser, stack) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1100, "height": 860}, base_url=stack.url)
    page = context.new_page()
    crashes: list[str] = []
    page.on("pageerror", lambda exc: crashes.append(str(exc)))
    # The Content-Security-Policy (webapp/security.py) must fit the frontend: Chromium
    # reports every refused script, style, image or request on the console.
    page.on("console", lambda msg: "Content Security Policy" in msg.text
            and crashes.append(msg.text))  # fmt: skip
    yield page
    context.close()
    assert crashes == []  # no uncaught script error and no CSP refusal on any page


def shoot(page: Page, tmp_path: Path, name: str, docs: bool = False) -> None:
    """A full-page screenshot as a test artifact; `docs`: also the README's copy, but only
    under `make screenshots` (FLOCK_UPDATE_SCREENSHOTS=1): a test run leaves the tree clean."""
    path = tmp_path / name
    page.screenshot(path=path, full_page=True)
    if docs and os.environ.get("FLOCK_UPDATE_SCREENSHOTS") == "1":
        DOCS.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, DOCS / name)


def register(page: Page) -> str:
    name = f"ui-{uuid.uuid4().hex[:8]}"
    page.goto("/")
    expect(page).to_have_url(re.compile(r"#/signin$"))
    page.get_by_label("Name").fill(name)
    page.get_by_label("Password").fill("correct horse battery")
    page.get_by_role("button", name="Register").click()
    expect(page.get_by_text(f"Signed in as {name}")).to_be_visible()
    expect(page).to_have_url(re.compile(r"#/chat$"))
    return name


def submit(page: Page, question: str, press_enter: bool = False):
    """Send a question from the chat page; returns its answer's <li> (maybe still waiting)."""
    box = page.get_by_label("Your question")
    box.fill(question)
    if press_enter:
        box.press("Enter")
    else:
        page.get_by_role("button", name="Ask", exact=True).click()
    answer = page.locator("#answers > li").last
    expect(answer.locator(".q-text")).to_have_text(question)
    return answer


def ask(page: Page, question: str, press_enter: bool = False):
    """Ask on the chat page; returns the new answer's <li> once it is answered."""
    answer = submit(page, question, press_enter)
    expect(answer.locator(".latency")).to_contain_text("answered in", timeout=ANSWER_TIMEOUT_MS)
    return answer


def stat(page: Page, name: str) -> int:
    return int(page.locator(f'[data-stat="{name}"]').inner_text().replace(",", ""))


def go(page: Page, link: str) -> None:
    page.get_by_role("navigation", name="Main").get_by_role("link", name=link).click()
    expect(page.get_by_role("heading", level=1)).to_have_text(link if link != "Chat" else "Ask")


def test_ask_hit_paraphrase_dashboard_invalidate(page, standin, tmp_path):
    register(page)
    go(page, "Dashboard")
    page.get_by_label("Window").select_option(label="last 7 days")
    expect(page.locator('[data-stat="requests"]')).not_to_have_text("–")
    before = {k: stat(page, k) for k in ("requests", "llm_calls", "llm_calls_saved")}

    # A topic word of its own: no other test's question can be a hit for these.
    topic = nonsense_word()  # a word: a hex topic ("489e28") can read as a number
    question = f"How do I reset my {topic} router password?"
    # Reworded, same word order: cache/verify/ refuses "same words, other order"
    # (e.g. "...reset the password of my router?") as possibly another question.
    paraphrase = f"What's the way to reset my {topic} router password?"

    go(page, "Chat")
    fresh = ask(page, question, press_enter=True)
    expect(fresh).to_have_attribute("data-status", "miss")
    expect(fresh.locator(".badge")).to_have_text("fresh LLM call")
    expect(fresh.locator(".a-text")).not_to_be_empty()
    assert standin.calls()["chat"] == 1

    exact = ask(page, question)
    expect(exact.locator(".badge")).to_have_text("exact hit")
    expect(exact.locator(".a-text")).to_have_text(fresh.locator(".a-text").inner_text())

    similar = ask(page, paraphrase)
    expect(similar.locator(".badge")).to_have_text(
        re.compile(r"^semantic hit · similarity 0\.\d{3}$")
    )
    expect(similar.locator(".match")).to_contain_text(question)
    assert standin.calls()["chat"] == 1  # both hits came from the cache
    shoot(page, tmp_path, "chat.png", docs=True)

    # The dashboard counts what just happened (the request log lands within a second).
    go(page, "Dashboard")
    expect(page.locator("#chart-outcomes svg")).to_be_visible()

    def counted() -> bool:
        page.get_by_role("button", name="Refresh").click()
        page.wait_for_timeout(300)
        return stat(page, "requests") >= before["requests"] + 3

    assert poll(counted), page.locator("#tiles").inner_text()
    assert stat(page, "llm_calls") == before["llm_calls"] + 1
    assert stat(page, "llm_calls_saved") == before["llm_calls_saved"] + 2
    expect(page.locator("#chart-outcomes svg title")).to_contain_text("fresh LLM call: requests")
    expect(page.locator("#chart-latency svg title")).to_contain_text("exact hit: p50")
    shoot(page, tmp_path, "dashboard.png", docs=True)

    # The cache page finds the entry, with its two hits, and invalidates it.
    go(page, "Cache")
    page.get_by_label("Search questions and answers").fill(topic)
    entries = page.locator("#entries > li")

    def found() -> bool:
        page.get_by_role("button", name="Search").click()
        page.wait_for_timeout(300)
        return entries.count() == 1 and "2 hits" in entries.first.inner_text()

    assert poll(found), page.locator("#entries").inner_text()
    expect(entries.first.locator(".q")).to_have_text(question)
    expect(entries.first).to_contain_text("cached ")
    shoot(page, tmp_path, "cache.png", docs=True)
    entries.first.get_by_role("button", name=re.compile("^Invalidate the cached answer")).click()
    expect(page.locator("#cache-status")).to_contain_text("Invalidated")
    expect(entries).to_have_count(0)

    # Gone from the cache: the same question goes to the LLM again.
    go(page, "Chat")
    again = ask(page, question)
    expect(again.locator(".badge")).to_have_text("fresh LLM call")
    assert standin.calls()["chat"] == 2

    # "Wrong answer" removes it too: the next ask is fresh once more.
    again.get_by_role("button", name="Wrong answer").click()
    expect(again.locator(".feedback")).to_contain_text("out of the cache")
    expect(ask(page, question).locator(".badge")).to_have_text("fresh LLM call")
    assert standin.calls()["chat"] == 3


def test_errors_empty_states_phone_and_keyboard(page, browser, stack, standin, tmp_path):
    # Sign-in errors show the API's code and message.
    page.goto("/")
    page.get_by_label("Name").fill(f"nobody-{uuid.uuid4().hex[:6]}")
    page.get_by_label("Password").fill("wrong password")
    page.get_by_label("Password").press("Enter")  # Enter signs in
    alert = page.get_by_role("alert")
    expect(alert).to_have_text("unauthorized: wrong name or password")
    page.get_by_label("Password").fill("short")
    page.get_by_role("button", name="Register").click()
    expect(alert).to_contain_text("bad_request: 'password' must be a string of at least 8")

    register(page)
    # Two tabs ask the same new question at once: one LLM call, shared by the second.
    standin.configure(latency_s=1.5)
    other = page.context.new_page()
    other.goto("/#/chat")
    question = f"Is the {uuid.uuid4().hex[:6]} asked twice?"
    first, second = submit(page, question), submit(other, question)
    for answer in (first, second):
        expect(answer.locator(".latency")).to_contain_text("answered in", timeout=ANSWER_TIMEOUT_MS)
    badges = {first.locator(".badge").inner_text(), second.locator(".badge").inner_text()}
    assert badges == {"fresh LLM call", "shared with a request in flight"}
    assert standin.calls()["chat"] == 1
    other.close()
    standin.reset()

    # A server that does not stream yet refuses the field: the page asks again plainly.
    refused = []

    def no_streaming(route):
        if (route.request.post_data_json or {}).get("stream"):
            refused.append(route.request.url)
            body = {"error": {"code": "bad_request", "message": "unknown field(s): stream"}}
            route.fulfill(status=400, json=body)
        else:
            route.continue_()

    plain = page.context.new_page()
    plain.route("**/api/v1/chat", no_streaming)
    plain.goto("/#/chat")
    answer = ask(plain, f"Can the {uuid.uuid4().hex[:6]} answer without streaming?")
    expect(answer.locator(".badge")).to_have_text("fresh LLM call")
    expect(answer.locator(".latency")).not_to_contain_text("first words")  # nothing streamed
    assert len(refused) == 1
    assert ask(plain, f"And {uuid.uuid4().hex[:6]}?") and len(refused) == 1  # it remembers
    plain.close()

    # An LLM failure shows as an error on that answer, with the API's code.
    standin.configure(fail_status=400, fail_times=1)
    failed = page.get_by_label("Your question")
    failed.fill(f"Will the {uuid.uuid4().hex[:6]} fail?")
    failed.press("Enter")
    answer = page.locator("#answers > li").last
    expect(answer).to_have_attribute("data-status", "error", timeout=ANSWER_TIMEOUT_MS)
    expect(answer.get_by_role("alert")).to_contain_text("llm_")

    # Empty states.
    go(page, "Cache")
    page.get_by_label("Search questions and answers").fill(f"no-such-{uuid.uuid4().hex}")
    page.get_by_label("Search questions and answers").press("Enter")
    expect(page.locator("#cache-empty")).to_contain_text("Nothing cached matches")

    # Keyboard: the nav is reachable with Tab and focus is visible.
    page.locator(".brand").focus()
    page.keyboard.press("Tab")
    focused = page.evaluate("document.activeElement.textContent.trim()")
    assert focused == "Chat"
    outline = page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
    assert outline != "none"
    page.keyboard.press("Enter")
    expect(page).to_have_url(re.compile(r"#/chat$"))
    expect(page.get_by_label("Your question")).to_be_focused()

    # A phone: one column, nothing wider than the screen, the demo-model note in the footer.
    page.set_viewport_size({"width": 390, "height": 844})
    go(page, "Dashboard")
    expect(page.locator("#chart-outcomes svg")).to_be_visible()
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    expect(page.locator("footer")).to_contain_text("SmolLM2-135M")
    shoot(page, tmp_path, "dashboard-phone.png")


def poll(check, tries: int = 20) -> bool:
    for _ in range(tries):
        if check():
            return True
    return False
