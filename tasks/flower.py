"""The Procfile's `flower` process: Celery's Flower dashboard, started only when it is safe.

    python -m tasks.flower

- It refuses to start without FLOWER_BASIC_AUTH (`user:password`, comma-separated for
  several users) or with a password anyone could guess (the one an old .env.sample
  carried, or fewer than 8 characters). The password stays in the environment, where
  Flower reads it itself: never on the command line, where `ps` would show it.
- It listens on FLOWER_ADDRESS (settings.py: 127.0.0.1 unless set) and FLOWER_PORT.
- Read-only mode (`--read_only`, forced on the command line, which wins over any FLOWER_*
  variable): Flower's task API could otherwise send any task by name, e.g. a crafted
  `flock.generate` that writes anything into the cache; pool and queue controls are off too.
- FLOWER_UNAUTHENTICATED_API is dropped from its environment: the API always needs the
  password.

Task arguments (prompts) never reach Flower: every task is sent with a redacted `argsrepr`
(cache.job.describe), which is what workers report in their events.
"""

from __future__ import annotations

import os
import sys

from settings import current

GUESSABLE = {"change-me", "changeme", "admin", "password", "flower", "secret"}
MIN_PASSWORD = 8


def check_basic_auth(value: str | None) -> str | None:
    """Why FLOWER_BASIC_AUTH is not acceptable, or None when it is."""
    if not value or not value.strip():
        return "FLOWER_BASIC_AUTH is not set: give it as user:password (make run makes one)"
    for credential in value.split(","):
        user, sep, password = credential.partition(":")
        if not sep or not user.strip() or not password:
            return "FLOWER_BASIC_AUTH must be user:password (comma-separated for several)"
        if password.lower() in GUESSABLE or len(password) < MIN_PASSWORD:
            return (f"FLOWER_BASIC_AUTH has a guessable password for {user.strip()!r}: use at "
                    f"least {MIN_PASSWORD} random characters")  # fmt: skip
    return None


def main() -> int:
    problem = check_basic_auth(os.environ.get("FLOWER_BASIC_AUTH"))
    if problem:
        print(f"flower: not starting: {problem}", file=sys.stderr)
        return 2
    env = {k: v for k, v in os.environ.items() if k != "FLOWER_UNAUTHENTICATED_API"}
    argv = [sys.executable, "-m", "celery", "-A", "tasks", "flower",
            f"--address={current().flower_address}", "--read_only=True"]  # fmt: skip
    if env.get("FLOWER_PORT"):
        argv.append(f"--port={env['FLOWER_PORT']}")
    os.execve(sys.executable, argv, env)
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main())
