"""Helpers for command-line entry points (flag-value parsing, provenance). No absl here:
scripts own their flags and call these with plain values."""

from __future__ import annotations

import json
import pathlib
import shlex
import sys
from collections.abc import Sequence
from typing import Any, NoReturn


def parse_key_values(items: Sequence[str], *, flag: str) -> dict[str, Any]:
    """``["a=1", "b=\"x\"", "c=foo"]`` -> ``{"a": 1, "b": "x", "c": "foo"}`` (JSON values, else strings)."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key.isidentifier():
            raise ValueError(f"--{flag}={item!r} is not key=value with a Python identifier as key")
        if key in out:
            raise ValueError(f"--{flag} sets {key!r} twice")
        out[key] = parse_value(raw)
    return out


def parse_value(raw: str) -> Any:
    """A flag value: JSON (``3``, ``0.5``, ``true``, ``[1, 2]``), then case-insensitive
    ``True``/``False``/``None``, else the bare string (``compression=c23``)."""
    text = raw.strip()
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        pass
    low = text.lower()
    if low in ("true", "false"):
        return low == "true"
    if low == "none":
        return None
    return text


def script_command() -> str:
    """The command line that reproduces this run, with the script path relative to the repo."""
    argv = list(sys.argv)
    script = pathlib.Path(argv[0])
    repo = pathlib.Path(__file__).resolve().parents[1]
    if script.is_absolute() and script.resolve().is_relative_to(repo):
        argv[0] = str(script.resolve().relative_to(repo))
    return "PYTHONPATH=. python " + shlex.join(argv)


def fail(message: str) -> NoReturn:
    """Ends a script with one line ``<script>: error: <message>`` on stderr and exit status 2."""
    script = pathlib.Path(sys.argv[0]).name if sys.argv and sys.argv[0] else "rrjax"
    print(f"{script}: error: {message}", file=sys.stderr, flush=True)
    raise SystemExit(2)
