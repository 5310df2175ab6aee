"""GPTCache's own venv (var/gptcache-venv) and its server, for bench.load's baseline.

The venv is created on first use from bench/gptcache-requirements.txt (every version pinned)
and made again when that file changes. GPTCache pip-installs a missing optional dependency at
run time (gptcache.utils.dependency_control.prompt_install runs the `pip` found on PATH): the
server runs with the venv's bin/ first on PATH, so such an install could only ever land in
that venv, and the pinned list holds everything the server imports.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from bench.common import log
from tests.stack import ROOT, free_port

VENV = ROOT / "var" / "gptcache-venv"
REQUIREMENTS = Path(__file__).with_name("gptcache-requirements.txt")
_STAMP = VENV / ".installed"


def python() -> Path:
    return VENV / "bin" / "python"


def ensure() -> Path:
    """The venv's python, after creating the venv or installing what changed in the list."""
    digest = hashlib.sha256(REQUIREMENTS.read_bytes()).hexdigest()
    if _STAMP.exists() and _STAMP.read_text() == digest and python().exists():
        return python()
    log(f"installing GPTCache into {VENV.relative_to(ROOT)} (first use: a few minutes)")
    install_log = ROOT / "var" / "gptcache-venv-install.log"
    steps = [[str(python()), "-m", "pip", "install", "--quiet", "-r", str(REQUIREMENTS)]]
    if not python().exists():
        steps.insert(0, [sys.executable, "-m", "venv", str(VENV)])
    with open(install_log, "wb") as out:
        for step in steps:
            if subprocess.run(step, stdout=out, stderr=subprocess.STDOUT).returncode != 0:
                raise RuntimeError(f"cannot install GPTCache: see {install_log}")
    _STAMP.write_text(digest)
    return python()


@contextmanager
def gptcache_server(
    model_path: str, workers: int, threshold: float, data_dir: Path, logdir: Path,
    onnx_file: Path | None = None, timeout_s: float = 180,
) -> Iterator[tuple[str, int]]:
    """GPTCache's server (bench/gptcache_server.py) on a free port until the block ends:
    yields its URL and the process group id of its processes. Waits for every worker."""
    venv_python = ensure()
    shutil.rmtree(data_dir, ignore_errors=True)
    data_dir.mkdir(parents=True)
    port = free_port()
    log_path = logdir / "gptcache.log"
    env = {**os.environ, "PATH": f"{venv_python.parent}:{os.environ.get('PATH', '')}",
           "HF_HUB_OFFLINE": "1"}
    with open(log_path, "wb") as out:
        proc = subprocess.Popen(
            [str(venv_python), "-m", "bench.gptcache_server", "--port", str(port),
             "--workers", str(workers), "--data-dir", str(data_dir), "--model", model_path,
             "--threshold", str(threshold),
             *(["--onnx-file", str(onnx_file)] if onnx_file is not None else [])],
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )
    try:
        deadline = time.monotonic() + timeout_s
        while len(list(data_dir.glob("ready-*"))) < workers:
            if proc.poll() is not None or time.monotonic() > deadline:
                tail = log_path.read_text(errors="replace")[-3000:]
                raise RuntimeError(f"GPTCache's server did not start:\n{tail}")
            time.sleep(0.2)
        yield f"http://127.0.0.1:{port}", proc.pid
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)  # uvicorn's supervisor stops its workers
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)
