"""Helpers for command-line entry points: flag-value parsing, provenance, and :func:`run`, which
gives every script the same failure contract (one line ``<script>: error: ...`` on stderr,
exit status 2, for bad flags and for every expected failure). Scripts own their flags; the
library never defines or reads one."""

from __future__ import annotations

import json
import pathlib
import shlex
import sys
from collections.abc import Callable, Sequence
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


# Failures a user can act on: a bad value, a missing or unreadable file, a full or read-only
# disk. Anything else is a bug and keeps its traceback.
EXPECTED_ERRORS = (ValueError, OSError)


def _flags_or_fail(argv: Sequence[str]) -> list[str]:
    from absl import flags

    try:
        return flags.FLAGS(list(argv))
    except flags.Error as e:
        fail(f"{e} (run with --helpfull for every flag)")


def run(main: Callable[[list[str]], Any]) -> None:
    """``absl.app.run(main)`` with one-line errors: a bad flag (absl's own parse error), a stray
    positional argument, or a ``ValueError``/``OSError`` raised by ``main`` ends the script with
    ``<script>: error: <message>`` and exit status 2, never a traceback."""
    from absl import app

    def guarded(argv: list[str]) -> Any:
        if len(argv) > 1:
            fail(f"unexpected arguments {argv[1:]}; all options are --flags")
        try:
            return main(argv)
        except EXPECTED_ERRORS as e:
            fail(str(e) if isinstance(e, ValueError) else f"{type(e).__name__}: {e}")

    app.run(guarded, flags_parser=_flags_or_fail)
