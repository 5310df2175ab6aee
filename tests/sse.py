"""A small Server-Sent Events reader for tests: (event, data, arrival time) tuples."""

from __future__ import annotations

import json
import time

import requests


def stream_chat(url: str, body: dict, headers: dict, timeout: float = 60) -> list[tuple]:
    events = []
    with requests.post(
        f"{url}/api/v1/chat", json={**body, "stream": True}, headers=headers, stream=True,
        timeout=timeout,
    ) as resp:  # fmt: skip
        assert resp.status_code == 200, resp.text
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        event, data = None, []
        for line in resp.iter_lines(decode_unicode=True):
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: "):
                data.append(line[6:])
            elif line == "" and event is not None:
                events.append((event, json.loads("\n".join(data)), time.monotonic()))
                event, data = None, []
    return events


def text_of(events: list[tuple]) -> str:
    parts: list[str] = []
    for event, data, _ in events:
        if event == "reset":
            parts.clear()
        elif event == "delta":
            parts.append(data["content"])
    return "".join(parts)
