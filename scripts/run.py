"""`make run`: prepare a local Flock, say where everything is, then start the Procfile (honcho).

Runs inside scripts/services.py, so REDIS_URL and DATABASE_URL already answer. Everything
it creates is kept under var/ and reused by the next run:

    var/secret_key          SECRET_KEY when unset (development only)
    var/flower_basic_auth   FLOWER_BASIC_AUTH when unset
    var/ops_token           OPS_TOKEN when unset: opens /metrics and /readyz's details
    var/first-run.txt       the first admin user's password and API key (mode 600)

Development defaults: ALLOW_REGISTRATION=1 unless set (anyone who reaches the UI may
register; the README tells operators to leave it off).
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import requests
from honcho.environ import parse_procfile

ROOT = Path(__file__).resolve().parent.parent
VAR = ROOT / "var"
FIRST_RUN = VAR / "first-run.txt"
ADMIN = "admin"
# Procfile entries that are one-off steps, not processes to keep running.
ONE_OFF = {"release"}


def main() -> int:
    os.chdir(ROOT)
    VAR.mkdir(exist_ok=True)
    env = os.environ
    # honcho numbers ports from PORT (its own default is 5000): pin the README's 8000.
    env.setdefault("PORT", "8000")
    env.setdefault("FLOWER_PORT", "5555")
    env.setdefault("FLOWER_URL", f"http://127.0.0.1:{env['FLOWER_PORT']}")  # the UI links it
    env.setdefault("LLM_BACKEND", "auto")  # Ollama when it answers, else the embedded model
    env.setdefault("ALLOW_REGISTRATION", "1")  # development: the UI's Register button works
    # The Procfile's commands (gunicorn, celery) come from this virtualenv, activated or not.
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    notes = []
    if not env.get("SECRET_KEY"):  # unset or empty (a copied .env.sample)
        env["SECRET_KEY"] = _kept_secret("secret_key", lambda: secrets.token_urlsafe(48))
        notes.append(
            "SECRET_KEY is a development-only key from var/secret_key: set SECRET_KEY for "
            "anything else"
        )
    flower_auth = "FLOWER_BASIC_AUTH"
    if not env.get(flower_auth):
        env[flower_auth] = _kept_secret(
            "flower_basic_auth", lambda: f"admin:{secrets.token_urlsafe(12)}"
        )
        flower_auth = "var/flower_basic_auth"
    ops_token = "OPS_TOKEN"
    if not env.get(ops_token):
        env[ops_token] = _kept_secret("ops_token", lambda: secrets.token_urlsafe(32))
        ops_token = "var/ops_token"

    if subprocess.run([sys.executable, "-m", "webapp.migrate"]).returncode != 0:
        # services.py only knows the server answers; the database itself may be missing.
        sys.exit("make run: the migrations failed (above). A missing database: createdb it.")
    _first_admin()

    backend = _llm_backend(env["LLM_BACKEND"], env.get("OLLAMA_URL"))
    if backend.startswith("embedded") and not env.get("OLLAMA_MODEL"):
        env["OLLAMA_MODEL"] = "smollm2:135m"  # the only model the embedded backend serves
    host = "http://127.0.0.1"
    print(
        "\nFlock:\n"
        f"  UI and API   {host}:{env['PORT']}/  (API: POST /api/v1/chat, "
        "header 'Authorization: Bearer <API key>')\n"
        f"  Flower       {host}:{env['FLOWER_PORT']}/  (user:password in {flower_auth})\n"
        f"  /metrics     {host}:{env['PORT']}/metrics  (header 'Authorization: Bearer "
        f"<token>', the token in {ops_token})\n"
        f"  Registration {'open' if env['ALLOW_REGISTRATION'] in ('1', 'true') else 'closed'}"
        " (ALLOW_REGISTRATION)\n"
        f"  LLM backend  {backend}\n"
        + "".join(f"  {note}\n" for note in notes)
        + "Stop with Ctrl-C.\n",
        flush=True,
    )

    procfile = parse_procfile((ROOT / "Procfile").read_text())
    processes = [name for name in procfile.processes if name not in ONE_OFF]
    # `-e /dev/null`: the environment is complete (services.py read .env already); honcho
    # would otherwise let .env override the servers services.py chose.
    honcho = [sys.executable, "-m", "honcho", "start", "-f", "Procfile", "-e", os.devnull]
    os.execv(sys.executable, honcho + processes)


def _kept_secret(name: str, make) -> str:
    """A value generated once into var/<name> (mode 600) and read back by later runs."""
    path = VAR / name
    if not path.exists():
        _write_private(path, make() + "\n")
    return path.read_text().strip()


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)


def _first_admin() -> None:
    """Create the admin user on the first run and show its credentials this once."""
    if FIRST_RUN.exists():
        print(f"Admin credentials: {FIRST_RUN.relative_to(ROOT)} (from the first `make run`)")
        return
    password = secrets.token_urlsafe(12)
    cli = [sys.executable, "-m", "flask", "--app", "webapp", "users", "create", ADMIN, "--admin"]
    out = subprocess.run(cli + ["--password", password], capture_output=True, text=True)
    if out.returncode != 0:
        if "is taken" in out.stderr:  # this database was set up by another checkout
            print(f"An {ADMIN!r} user exists already; {FIRST_RUN.relative_to(ROOT)} is not here.")
            return
        sys.exit(f"could not create the admin user:\n{out.stderr}")
    key = out.stdout.strip().splitlines()[-1]
    _write_private(
        FIRST_RUN,
        f"# Flock: the first admin user, created by `make run` on {datetime.now(UTC):%Y-%m-%d}.\n"
        "# Sign in to the UI with user and password; programs send"
        " 'Authorization: Bearer <api_key>'.\n"
        f"user: {ADMIN}\npassword: {password}\napi_key: {key}\n",
    )
    print(
        f"\nCreated the admin user (shown once; kept in {FIRST_RUN.relative_to(ROOT)}, mode 600):\n"
        f"  user      {ADMIN}\n  password  {password}\n  API key   {key}"
    )


def _llm_backend(choice: str, ollama_url: str | None) -> str:
    """What the llm worker will use: tasks/resources.py decides the same way at its start."""
    ollama_url = ollama_url or "http://127.0.0.1:11434"
    if choice == "embedded":
        return "embedded demo model (SmolLM2-135M), LLM_BACKEND=embedded"
    try:
        version = requests.get(f"{ollama_url.rstrip('/')}/api/version", timeout=2)
        version.raise_for_status()
        return f"ollama at {ollama_url} (version {version.json().get('version', '?')})"
    except (requests.RequestException, ValueError):
        if choice == "ollama":
            return f"ollama at {ollama_url}, which does not answer (LLM_BACKEND=ollama)"
        return f"embedded demo model (SmolLM2-135M); no Ollama answers at {ollama_url}"


if __name__ == "__main__":
    sys.exit(main())
