"""The one way rrjax writes a file a user or a resumed run may open: atomically.

A file is written under a unique hidden temporary name in its own directory, flushed and
fsynced, then renamed over the final name (``os.replace`` is atomic on POSIX), and the
directory is fsynced so the rename survives a crash. A reader therefore sees either the old
file, or the whole new one, never a truncated one; a killed writer leaves at most a hidden
``.<name>.tmp-*`` file, which nothing reads.
"""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import uuid
from collections.abc import Iterator
from typing import Any

__all__ = ["atomic_write_bytes", "atomic_write_text", "atomic_write_json", "atomic_path", "fsync_dir"]


def fsync_dir(path: str | os.PathLike) -> None:
    """Flushes a directory entry (a rename into it) to disk; a no-op where unsupported."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[pathlib.Path]:
    """Yields a temporary path next to ``path``; on success it is fsynced and renamed to ``path``.

    For writers that want a file name rather than bytes (``Figure.savefig``, ``np.savez``). On
    an exception the temporary file is removed and ``path`` is untouched.

    Example:
      >>> with atomic_path("out/fig.png") as tmp:   # doctest: +SKIP
      ...     fig.savefig(tmp, format="png")
    """
    path = pathlib.Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Writes ``data`` to ``path`` atomically (see the module docstring)."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Writes UTF-8 ``text`` to ``path`` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any, *, indent: int | None = 1, sort_keys: bool = False) -> None:
    """Writes ``obj`` as strict JSON (no NaN/inf) plus a newline to ``path`` atomically."""
    atomic_write_text(path, json.dumps(obj, indent=indent, sort_keys=sort_keys, allow_nan=False) + "\n")
