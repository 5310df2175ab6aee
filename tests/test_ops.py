"""Operations: /readyz per dependency, /metrics, /api/v1/config, and Flower's HTTP API
over the running workers. Real processes throughout. Details are for the operator's
token (OPS_TOKEN); Flower starts only with a password, read-only, and sees no prompt.

Web processes with a broken setting are extra ones of this module (their own Stack
object): the session's `stack` and its web process are never touched.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import OPS_TOKEN, nonsense_word, ops, post_chat
from tests.stack import ROOT, Proc, Stack, free_port


@pytest.fixture(scope="module")
def logdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("ops-logs")


@contextmanager
def extra_web(stack_env: dict, logdir: Path, workers: int = 1, **env: str) -> Iterator[str]:
    """A web process of its own with `env` on top of the stack's; yields its URL."""
    web = Stack(env=stack_env, logdir=logdir)
    web.start_web(workers=workers, extra_env=env)
    try:
        yield web.url
    finally:
        # SIGKILL rather than a graceful stop (4 s each): a web process keeps nothing.
        for proc in web.procs.values():
            proc.kill()
            proc.popen.wait(10)


def closed_url(start: str, path: str = "") -> str:
    return f"{start}127.0.0.1:{free_port()}{path}"  # nothing listens there


def wait_for(predicate, timeout: float = 20.0, every: float = 0.2):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(every)


def scrape(url: str) -> dict[tuple[str, tuple], float]:
    """/metrics as {(sample name, sorted labels): value}."""
    resp = requests.get(f"{url}/metrics", headers=ops(), timeout=10)
    assert resp.status_code == 200
    assert resp.headers["Content-Type"].startswith("text/plain; version=")
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(resp.text)
        for s in family.samples
    }


def sample(metrics: dict, name: str, **labels: str) -> float | None:
    return metrics.get((name, tuple(sorted(labels.items()))))


# --- /readyz ------------------------------------------------------------------------------


def test_readyz_is_ready_when_every_dependency_answers(stack):
    resp = requests.get(f"{stack.url}/readyz", headers=ops(), timeout=10)
    body = resp.json()
    assert resp.status_code == 200, body
    assert body["status"] == "ready"
    assert set(body["checks"]) == {
        "redis", "postgres", "embedder_worker", "llm_worker", "llm_backend",
    }  # fmt: skip
    assert all(check["ok"] for check in body["checks"].values())
    assert any(n.startswith("embedder@") for n in body["checks"]["embedder_worker"]["detail"])
    assert any(n.startswith("llm@") for n in body["checks"]["llm_worker"]["detail"])
    assert body["checks"]["llm_backend"]["detail"].startswith("version ")


# Settings pointed at closed ports -> the checks that must fail, and only those. Two
# dependencies per web process: each case still shows the others reported up.
BROKEN = {
    "redis+llm": (
        {"REDIS_URL": ("redis://", "/0"), "OLLAMA_URL": ("http://", "")},
        {"redis", "llm_backend"},
    ),
    "postgres+broker": (
        {
            "DATABASE_URL": ("postgresql://postgres@", "/flock"),
            "CELERY_BROKER_URL": ("redis://", "/0"),
        },
        {"postgres", "embedder_worker", "llm_worker"},
    ),
}


@pytest.mark.parametrize("case", list(BROKEN))
def test_readyz_reports_the_dependency_that_is_down(stack, stack_env, logdir, case):
    settings, down = BROKEN[case]
    env = {name: closed_url(start, path) for name, (start, path) in settings.items()}
    env["LLM_BACKEND"] = "ollama"  # with `auto` (the default) a dead Ollama is no failure
    with extra_web(stack_env, logdir, **env) as web:
        anonymous = requests.get(f"{web}/readyz", timeout=15)
        started = time.monotonic()
        resp = requests.get(f"{web}/readyz", headers=ops(), timeout=15)
        took = time.monotonic() - started
        scraped = requests.get(f"{web}/metrics", headers=ops(), timeout=15)
    body = resp.json()
    assert resp.status_code == 503, body
    assert body["status"] == "not_ready"
    failed = {name for name, check in body["checks"].items() if not check["ok"]}
    assert failed == down, body
    assert all(body["checks"][name]["detail"] for name in down)  # says why
    assert took < 6  # every check has a timeout: a dead dependency does not hang the probe
    # Without the token: the status and nothing else (no check names, hosts or errors).
    assert anonymous.status_code == 503
    assert anonymous.json() == {"status": "not_ready"}
    # /metrics still answers; a gauge it cannot read is left out, not made up
    assert scraped.status_code == 200
    gauges = {"redis+llm": "flock_inflight_leases", "postgres+broker": "flock_queue_depth"}
    assert ("# TYPE " + gauges[case]) not in scraped.text
    assert "flock_requests_total" in scraped.text


# --- /api/v1/config -------------------------------------------------------------------------


def test_config_tells_the_ui_where_flower_is(stack, stack_env, logdir):
    flower = "http://flower.example:5555"
    with extra_web(stack_env, logdir, FLOWER_URL=flower, LLM_BACKEND="embedded") as web:
        config = requests.get(f"{web}/api/v1/config", timeout=10).json()
        ready = requests.get(f"{web}/readyz", headers=ops(), timeout=10).json()
    assert config == {"flower_url": flower, "llm_backend": "embedded", "allow_registration": True}
    # the embedded model lives in the llm worker: no Ollama to ask
    assert ready["checks"]["llm_backend"] == {
        "ok": True,
        "detail": "embedded model in the llm worker",
    }
    assert set(requests.get(f"{stack.url}/api/v1/config", timeout=10).json()) == {
        "flower_url", "llm_backend", "allow_registration",
    }  # fmt: skip


@pytest.mark.parametrize("header", [None, "Bearer wrong-token", f"Basic {OPS_TOKEN}"])
def test_without_the_ops_token_metrics_and_readyz_say_nothing_internal(stack, header):
    headers = {"Authorization": header} if header else {}
    ready = requests.get(f"{stack.url}/readyz", headers=headers, timeout=10)
    assert ready.status_code == 200
    assert ready.json() == {"status": "ready"}
    scraped = requests.get(f"{stack.url}/metrics", headers=headers, timeout=10)
    assert scraped.status_code == 401
    assert scraped.json()["error"]["code"] == "unauthorized"
    assert "flock_" not in scraped.text


def test_without_an_ops_token_set_nobody_gets_the_details(stack_env, logdir):
    with extra_web(stack_env, logdir, OPS_TOKEN="") as web:
        for headers in ({}, {"Authorization": "Bearer "}, ops()):
            assert requests.get(f"{web}/metrics", headers=headers, timeout=10).status_code == 401
            assert set(requests.get(f"{web}/readyz", headers=headers, timeout=10).json()) == {
                "status"
            }


# --- /metrics -------------------------------------------------------------------------------

NAMES = (
    "flock_requests_total", "flock_request_latency_seconds_count", "flock_llm_calls_total",
    "flock_tokens_saved_total", "flock_inflight_leases", "flock_queue_depth",
)  # fmt: skip


def test_gauges_show_leases_in_flight_and_queued_tasks(stack, standin):
    """Twelve different questions while the LLM hangs: the llm worker runs 8 at once, so
    every question holds a lease and the rest wait in the llm queue; then all drains."""
    metrics = scrape(stack.url)
    assert {name for name, _ in metrics} >= set(NAMES)

    standin.configure(hang=True)
    # Different namespaces (seed): no two questions can be semantic matches of each other.
    bodies = [
        {"prompt": f"What is a {nonsense_word()}?", "options": {"seed": i + 1000}}
        for i in range(12)
    ]
    with ThreadPoolExecutor(len(bodies)) as pool:
        futures = [pool.submit(post_chat, stack.url, b, 30) for b in bodies]
        try:
            assert wait_for(lambda: _busy(stack.url), timeout=15), scrape(stack.url)
        finally:
            standin.reset()  # the held calls are answered now
        statuses = [f.result().status_code for f in futures]
    assert statuses == [200] * len(bodies)
    # Leases released, queues empty: nothing of this test runs on into the next one.
    assert wait_for(lambda: _idle(stack.url), timeout=20), scrape(stack.url)


def _busy(url: str) -> bool:
    # 8 running calls hold leases; queued ones may lapse and be re-taken meanwhile.
    m = scrape(url)
    return (
        sample(m, "flock_inflight_leases") >= 8 and sample(m, "flock_queue_depth", queue="llm") >= 1
    )


def _idle(url: str) -> bool:
    m = scrape(url)
    return (
        sample(m, "flock_inflight_leases") == 0
        and sample(m, "flock_queue_depth", queue="llm") == 0
        and sample(m, "flock_queue_depth", queue="embed") == 0
    )


def test_observe_answer_counts_by_outcome():
    from webapp import metrics

    def value(name, **labels):
        return metrics.REGISTRY.get_sample_value(name, labels) or 0.0

    before = {o: value("flock_requests_total", outcome=o) for o in metrics.OUTCOMES}
    calls, saved = value("flock_llm_calls_total"), value("flock_tokens_saved_total")
    metrics.observe_answer("miss", 0.8, 0)
    metrics.observe_answer("exact", 0.002, 30)
    metrics.observe_answer("semantic", 0.05, 12)
    assert value("flock_requests_total", outcome="miss") == before["miss"] + 1
    assert value("flock_requests_total", outcome="exact") == before["exact"] + 1
    assert value("flock_llm_calls_total") == calls + 1
    assert value("flock_tokens_saved_total") == saved + 42
    assert value("flock_request_latency_seconds_bucket", outcome="exact", le="0.0025") >= 1


def test_metrics_count_answers_across_web_processes(stack, stack_env, logdir, tmp_path):
    """Two gunicorn workers in multiprocess mode: a scrape of either shows all answers."""
    multiproc = tmp_path / "prometheus"
    multiproc.mkdir()
    with extra_web(stack_env, logdir, workers=2, PROMETHEUS_MULTIPROC_DIR=str(multiproc)) as web:
        before = scrape(web)
        body = {"prompt": f"Where does the {nonsense_word()} live?"}
        first = post_chat(web, body).json()
        for _ in range(3):
            assert post_chat(web, body).json()["cache"]["status"] == "exact"
        after = scrape(web)

    def delta(name, **labels):
        return (sample(after, name, **labels) or 0) - (sample(before, name, **labels) or 0)

    assert first["cache"]["status"] == "miss"
    assert delta("flock_requests_total", outcome="miss") == 1
    assert delta("flock_requests_total", outcome="exact") == 3
    assert delta("flock_request_latency_seconds_count", outcome="exact") == 3
    assert delta("flock_llm_calls_total") == 1
    usage = first["usage"]
    assert delta("flock_tokens_saved_total") == 3 * (
        usage["prompt_tokens"] + usage["completion_tokens"]
    )


# --- Flower ---------------------------------------------------------------------------------

FLOWER_AUTH = ("user", "pw-for-the-tests")


def _flower_env(stack_env: dict, **extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLOWER_")}
    return {**env, **stack_env, **extra}


@pytest.fixture(scope="module")
def flower(stack, stack_env, logdir) -> Iterator[str]:
    """The Procfile's flower process (python -m tasks.flower)."""
    port = free_port()
    log = logdir / "flower.log"
    env = _flower_env(stack_env, FLOWER_BASIC_AUTH=":".join(FLOWER_AUTH), FLOWER_PORT=str(port),
                      FLOWER_UNAUTHENTICATED_API="true")  # fmt: skip
    with open(log, "wb") as out:
        popen = subprocess.Popen(
            [sys.executable, "-m", "tasks.flower"], cwd=ROOT, env=env, stdout=out,
            stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    proc = Proc("flower", popen, log)
    url = f"http://127.0.0.1:{port}"
    try:
        up = wait_for(lambda: _answers(f"{url}/healthcheck") or not proc.alive(), timeout=30)
        assert up and proc.alive(), proc.tail()
        yield url
    finally:
        proc.kill()  # it keeps nothing, and takes 10 s to stop gracefully
        popen.wait(10)


def _answers(url: str) -> bool:
    try:
        return requests.get(url, timeout=1).status_code == 200
    except requests.RequestException:
        return False


def test_the_procfile_starts_flower_through_its_guard():
    from honcho.environ import parse_procfile

    procfile = parse_procfile((ROOT / "Procfile").read_text())
    assert procfile.processes["flower"] == "python -m tasks.flower"


@pytest.mark.parametrize("auth", [None, "", "admin:change-me", "admin:short", "no-password"])
def test_flower_without_a_real_password_refuses_to_start(stack_env, auth):
    extra = {"FLOWER_PORT": str(free_port())}
    if auth is not None:
        extra["FLOWER_BASIC_AUTH"] = auth
    out = subprocess.run(
        [sys.executable, "-m", "tasks.flower"], cwd=ROOT, env=_flower_env(stack_env, **extra),
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 2, out.stdout + out.stderr
    assert "not starting" in out.stderr and "FLOWER_BASIC_AUTH" in out.stderr


def test_flower_listens_on_localhost_unless_told_otherwise(flower):
    assert flower.startswith("http://127.0.0.1:")
    from settings import Settings

    assert Settings().flower_address == "127.0.0.1"


def test_flower_lists_the_workers_and_the_tasks_a_request_caused(stack, flower):
    # FLOWER_UNAUTHENTICATED_API was set for the process: the guard dropped it.
    assert requests.get(f"{flower}/api/workers", timeout=10).status_code == 401

    def workers():
        resp = requests.get(
            f"{flower}/api/workers", params={"refresh": "1"}, auth=FLOWER_AUTH, timeout=10
        )
        names = set(resp.json()) if resp.ok else set()
        roles = {n.partition("@")[0] for n in names}
        return names if {"embedder", "llm"} <= roles else None

    assert wait_for(workers, timeout=20)

    # A question nobody asked: one answer task (embed queue) and one generate task (llm).
    prompt = f"Why do {nonsense_word()}s hum at {uuid.uuid4().hex[:6]}?"
    assert post_chat(stack.url, {"prompt": prompt}).json()["cache"]["status"] == "miss"
    key = _exact_key(prompt)

    def tasks():
        resp = requests.get(f"{flower}/api/tasks", auth=FLOWER_AUTH, timeout=10)
        mine = [t for t in resp.json().values() if f"key={key[:16]}" in str(t.get("args"))]
        done = {t["name"]: t for t in mine if t.get("state") == "SUCCESS"}
        return done if {"flock.answer", "flock.generate"} <= set(done) else None

    done = wait_for(tasks, timeout=20)
    listing = requests.get(f"{flower}/api/tasks", auth=FLOWER_AUTH, timeout=10).text
    assert done, listing
    assert done["flock.answer"]["worker"].startswith("embedder@")
    assert done["flock.generate"]["worker"].startswith("llm@")
    # Flower sees ids and modes, never the prompt.
    assert prompt not in listing and "messages" not in listing
    for task in done.values():
        detail = requests.get(f"{flower}/api/task/info/{task['uuid']}", auth=FLOWER_AUTH,
                              timeout=10)  # fmt: skip
        assert detail.ok and prompt not in detail.text


def test_flower_cannot_send_tasks(stack, flower):
    """Read-only: its task API would otherwise run a crafted flock.generate."""
    for path in ("send-task", "async-apply", "apply"):
        resp = requests.post(
            f"{flower}/api/task/{path}/flock.generate", json={"args": [{}]}, auth=FLOWER_AUTH,
            timeout=10,
        )  # fmt: skip
        assert resp.status_code == 403, (path, resp.text)
    worker = requests.post(f"{flower}/api/worker/pool/grow/llm@x", auth=FLOWER_AUTH, timeout=10)
    assert worker.status_code == 403


def test_inspecting_the_workers_shows_no_prompt(stack, standin, stack_env):
    """Celery's own `inspect active` (what Flower's worker pages show) gives each running
    task's real arguments unless asked for `safe`; tasks/control.py redacts them always."""
    from celery import Celery

    standin.configure(hang=True)
    prompt = f"Is the {nonsense_word()} ready to {uuid.uuid4().hex[:6]}?"
    client = Celery(broker=stack_env["CELERY_BROKER_URL"])
    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(post_chat, stack.url, {"prompt": prompt}, 30)
        try:
            def running():
                replies = client.control.inspect(timeout=1.0).active() or {}
                found = [t for tasks in replies.values() for t in tasks
                         if t["name"] == "flock.generate"]  # fmt: skip
                return found or None

            active = wait_for(running, timeout=15)
            assert active, "no generate task seen running"
            reserved = client.control.inspect(timeout=1.0).reserved() or {}
        finally:
            standin.reset()
        assert pending.result().status_code == 200
    shown = str(active) + str(reserved)
    assert prompt not in shown and "messages" not in shown
    assert f"key={_exact_key(prompt)[:16]}" in shown


def _exact_key(prompt: str) -> str:
    from cache import CacheKey

    return CacheKey.build("llama3.2:1b", [{"role": "user", "content": prompt}], {}, "shared").exact


def test_redis_gone_under_the_exact_hit_fast_path_is_a_json_503(stack_env, monkeypatch):
    """webapp.fastpath remembered the caller's key, then Redis went away: the request must
    get the view's JSON 503, not a bare 500 from below Flask."""
    for name, value in {**stack_env, "REDIS_URL": closed_url("redis://", "/0")}.items():
        monkeypatch.setenv(name, value)
    from webapp import auth, create_app
    from webapp.passwords import key_hash

    app = create_app()
    key = "flk_remembered_before_redis_went_away"
    user = auth.User(id=1, name="someone", role="user", key_id=1)
    auth._recent_keys[key_hash(key)] = (user, time.monotonic() + 10)
    headers = {"Authorization": f"Bearer {key}"}
    resp = app.test_client().post("/api/v1/chat", json={"prompt": "Anyone?"}, headers=headers)
    assert resp.status_code == 503
    assert resp.get_json()["error"]["code"] == "redis_unavailable"
