"""What a request must be before any view reads it: the limits every surface shares.

- A JSON body (the app's JSON provider, so every `request.get_json` and webapp.fastpath)
  is refused with a 400 (`invalid_json`, naming where) when it holds what no view can
  store or hash: a lone surrogate such as "\\ud800" (not Unicode: it cannot be encoded as
  UTF-8, which every key and log row is), a NUL character (PostgreSQL text cannot hold
  one: it would jam the request log), nesting deeper than MAX_DEPTH (instead of Python's
  RecursionError), or NaN/Infinity (not JSON).
- The URL: a NUL in the path or the query string is a 400 too.
- A body over MAX_BODY_BYTES is refused with a 413 in the surface's error shape (Flask
  raises it as soon as a view reads the body), a chunked one too (`ChunkedBody`).
  gunicorn reads and drops what a view left unread before it reads the next request, so a
  client still sending a big body gets to read the 413 rather than a reset connection
  (tests/test_validation.py sends 5 MB to every surface).
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Callable, Iterable
from typing import Any

from flask import Flask, request
from flask.json.provider import DefaultJSONProvider

from webapp.errors import BadRequest

MAX_DEPTH = 64
_SURROGATE = re.compile("[\ud800-\udfff]")


def _not_json(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value")  # get_json's callers say "invalid JSON"


_DECODER = json.JSONDecoder(parse_constant=_not_json)


class JSONProvider(DefaultJSONProvider):
    """Flask's JSON, with `loads` refusing what Flock cannot hash or store."""

    sort_keys = False  # answers keep their fields in the order the code gives them

    def loads(self, s: str | bytes, **kwargs: Any) -> Any:
        if isinstance(s, bytes | bytearray):  # as json.loads decodes bytes
            s = s.decode(json.detect_encoding(s), "surrogatepass")
        try:
            # The session cookie's serializer passes an object_hook; a body, nothing: then
            # a decoder made once (json.loads would make one per call, given parse_constant).
            value = (
                json.loads(s, parse_constant=_not_json, **kwargs) if kwargs else _DECODER.decode(s)
            )
        except RecursionError:
            raise _invalid(f"the JSON is nested deeper than {MAX_DEPTH} levels") from None
        if _suspect(s):
            check(value)
        return value


def _suspect(s: str) -> bool:
    """Whether the value of the JSON text `s` may fail `check`, by a few scans at C speed
    (the walk costs about twice the parse). A NUL or a lone surrogate in the value is
    either a \\u escape in the text or a non-ASCII character of it (bytes are decoded with
    "surrogatepass", UTF-16 and UTF-32 detected, as json.loads does); nesting needs brackets."""
    return not s.isascii() or "\\u" in s or s.count("[") + s.count("{") > MAX_DEPTH


def _invalid(message: str) -> BadRequest:
    return BadRequest(message, code="invalid_json")


def check(value: Any) -> None:
    """Raise a BadRequest if a parsed JSON value nests deeper than MAX_DEPTH or holds a
    string (key or value) with a NUL character or a lone surrogate."""
    pending: list[tuple[Any, int, tuple[Any, ...]]] = [(value, 1, ())]
    while pending:
        item, depth, where = pending.pop()
        if isinstance(item, str):
            _check_text(item, where)
        elif isinstance(item, dict | list):
            if depth > MAX_DEPTH:
                raise _invalid(f"the JSON is nested deeper than {MAX_DEPTH} levels")
            pairs = item.items() if isinstance(item, dict) else enumerate(item)
            for key, child in pairs:
                if isinstance(key, str):
                    _check_text(key, (*where, key), key=True)
                pending.append((child, depth + 1, (*where, key)))


def _check_text(text: str, where: tuple[Any, ...], key: bool = False) -> None:
    problem = ""
    if "\x00" in text:
        problem = "a NUL character (U+0000)"
    elif not text.isascii() and (found := _SURROGATE.search(text)):
        problem = f"a lone surrogate (U+{ord(found.group()):04X}), which is not Unicode text"
    if problem:
        place = f"a key at {_path(where)}" if key else _path(where)
        raise _invalid(f"{place} contains {problem}")


def _path(where: tuple[Any, ...]) -> str:
    """messages[0].content, as the API's messages name a place in the body."""
    out = ""
    for key in where:
        if isinstance(key, int):
            out += f"[{key}]"
            continue
        if not key.isprintable():  # never echo a NUL or a lone surrogate back
            key = key.encode("unicode_escape").decode("ascii")
        key = key if len(key) <= 64 else key[:61] + "..."
        out += f".{key}" if out else key
    return out or "the body"


def _check_url() -> None:
    if "\x00" in request.path or "\x00" in request.query_string.decode("latin-1"):
        raise BadRequest("the URL contains a NUL character (%00)")
    for name, value in request.args.items(multi=True):
        if "\x00" in name or "\x00" in value:
            raise BadRequest("the query string contains a NUL character (%00)")


class ChunkedBody:
    """WSGI middleware (outermost): a body sent in chunks, without a Content-Length, is read
    here up to MAX_BODY_BYTES + 1 bytes and handed on with its length. Werkzeug would cut
    it at the limit without a word (a 400 for invalid JSON at best); with a length over the
    limit, it is the same 413 as a body that declared its size."""

    def __init__(self, app: Callable[..., Iterable[bytes]], limit: int) -> None:
        self.next = app
        self.limit = limit

    def __call__(
        self, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        if "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower():
            stream, data = environ["wsgi.input"], bytearray()
            while len(data) <= self.limit and (chunk := stream.read(self.limit + 1 - len(data))):
                data += chunk
            environ["wsgi.input"] = io.BytesIO(bytes(data))
            environ["CONTENT_LENGTH"] = str(len(data))
            del environ["HTTP_TRANSFER_ENCODING"]
        return self.next(environ, start_response)


def init_app(app: Flask) -> None:
    """After webapp.fastpath, so that chunked bodies reach it with their length too."""
    app.json = JSONProvider(app)
    app.before_request(_check_url)
    limit = app.config["MAX_CONTENT_LENGTH"]
    app.wsgi_app = ChunkedBody(app.wsgi_app, limit)  # type: ignore[method-assign]
