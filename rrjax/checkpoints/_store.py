"""On-disk side of detector checkpoints: orbax's atomic commit, the directory swap, verified
restores and the sidecar's own hash (internals of :mod:`rrjax.checkpoints`)."""

from __future__ import annotations

import ctypes
import errno
import hashlib
import json
import os
import pathlib
import shutil
import uuid
from collections.abc import Mapping
from typing import Any

import orbax.checkpoint as ocp

from rrjax._io import fsync_dir
from rrjax.checkpoints._tree import abstract_from_description, compare, content_hash, describe, plain, summarise

ARRAYS = "arrays"  # orbax item: the variables
SIDECAR_ITEM = "sidecar"  # orbax item: the JSON sidecar
SIDECAR = "metadata.json"  # the sidecar's file name inside its item directory
SELF_HASH = "sidecar_sha256"
REMEDY = "re-create it with rrjax.checkpoints.save (or fetch a fresh copy of the directory)"


def sidecar_sha256(sidecar: Mapping[str, Any]) -> str:
    """SHA-256 of the sidecar's canonical JSON (sorted keys, no spaces), its own hash left out."""
    body = {k: v for k, v in sidecar.items() if k != SELF_HASH}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def read_json(file: pathlib.Path, path: pathlib.Path, what: str) -> dict:
    rel = file.relative_to(path).as_posix()
    try:
        with open(file, encoding="utf-8") as f:
            obj = json.load(f)
    except FileNotFoundError:
        raise ValueError(
            f"checkpoint {str(path)!r} is incomplete: the {what} {rel} is missing (a partial copy?); {REMEDY}"
        ) from None
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(
            f"checkpoint {str(path)!r} is corrupt: the {what} {rel} is not valid JSON ({err}); {REMEDY}"
        ) from None
    if not isinstance(obj, dict):
        raise ValueError(f"checkpoint {str(path)!r} is corrupt: the {what} {rel} is not a JSON object; {REMEDY}")
    return obj


def sha256_file(file: pathlib.Path) -> str:
    h = hashlib.sha256()
    with open(file, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def abstract_from_sidecar(meta: dict, path: pathlib.Path) -> dict:
    """The variables' abstract tree (``ShapeDtypeStruct`` leaves) from the sidecar's ``arrays``."""
    try:
        return abstract_from_description(meta["arrays"])
    except (AttributeError, KeyError, TypeError, ValueError) as err:
        raise ValueError(f"checkpoint {str(path)!r} is corrupt: its sidecar's arrays list is malformed ({err}); {REMEDY}") from None


# ----------------------------------------------------------------------------- orbax I/O


def _handler() -> ocp.CompositeCheckpointHandler:
    return ocp.CompositeCheckpointHandler(
        **{ARRAYS: ocp.StandardCheckpointHandler(), SIDECAR_ITEM: ocp.JsonCheckpointHandler(filename=SIDECAR)}
    )


def _libc_renameat2() -> Any:
    try:
        fn = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError, TypeError):  # not Linux/glibc >= 2.28
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    return fn


def exchange(a: pathlib.Path, b: pathlib.Path) -> None:
    """Swaps the directories ``a`` and ``b`` in one atomic step (``renameat2(RENAME_EXCHANGE)``).

    Where that call is missing or the filesystem refuses it, falls back to three renames; a crash
    between them leaves the old checkpoint in a hidden ``.<name>.old-*`` sibling, which the
    "does not exist" error of ``load`` points to.
    """
    renameat2 = _libc_renameat2()
    if renameat2 is not None:
        at_fdcwd, rename_exchange = -100, 2
        if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
            return
        err = ctypes.get_errno()
        if err not in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
            raise OSError(err, os.strerror(err), str(b))
    aside = b.with_name(f".{b.name}.old-{uuid.uuid4().hex[:12]}")
    os.rename(b, aside)
    os.rename(a, b)
    os.rename(aside, a)


def commit(path: pathlib.Path, tree: dict, sidecar: dict) -> None:
    """Writes a checkpoint with one orbax save (temporary directory, renamed on commit). An
    existing ``path`` is never deleted first: the new checkpoint is committed next to it, swapped
    in by :func:`exchange`, and only then is the old one removed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    staged = path.with_name(f".{path.name}.new-{uuid.uuid4().hex[:12]}") if path.exists() else path
    try:
        checkpointer = ocp.Checkpointer(_handler())
        try:
            checkpointer.save(
                staged,
                args=ocp.args.Composite(
                    **{ARRAYS: ocp.args.StandardSave(tree), SIDECAR_ITEM: ocp.args.JsonSave(sidecar)}
                ),
            )
        finally:
            checkpointer.close()
        if staged != path:
            exchange(staged, path)
    finally:
        # orbax's uncommitted temporary directory (after an error), then, when overwriting, the
        # old checkpoint (after the swap) or the unused new one (after an error).
        for tmp in path.parent.glob(f"{staged.name}.orbax-checkpoint-tmp*"):
            shutil.rmtree(tmp, ignore_errors=True)
        if staged != path:
            shutil.rmtree(staged, ignore_errors=True)
    fsync_dir(path.parent)


def _first_line(err: BaseException, limit: int = 300) -> str:
    text = (str(err).splitlines() or [""])[0].split(" [tensorstore_spec=")[0]
    return f"{type(err).__name__}: {text[:limit]}"


def _restore_arrays(path: pathlib.Path, abstract: dict, *, v1: bool) -> Any:
    if v1:
        checkpointer = ocp.StandardCheckpointer()
        try:
            return checkpointer.restore(path / ARRAYS, abstract)
        finally:
            checkpointer.close()
    checkpointer = ocp.Checkpointer(_handler())
    try:
        return checkpointer.restore(path, args=ocp.args.Composite(**{ARRAYS: ocp.args.StandardRestore(abstract)}))[ARRAYS]
    finally:
        checkpointer.close()


def restore_verified(path: pathlib.Path, meta: dict, abstract: dict, *, v1: bool = False) -> dict:
    """Restores the arrays against ``abstract`` (nothing is unpickled) and checks them against the
    sidecar's content hash; ``v1``: the arrays directory of a format-version-1 checkpoint."""
    if not (path / ARRAYS).is_dir():
        raise ValueError(f"checkpoint {str(path)!r} is incomplete: {ARRAYS}/ is missing (a partial copy?); {REMEDY}")
    try:
        restored = plain(_restore_arrays(path, abstract, v1=v1))
    except Exception as err:  # orbax/tensorstore raise many types; all mean "unreadable arrays"
        raise ValueError(
            f"checkpoint {str(path)!r} is corrupt: orbax could not read {ARRAYS}/ ({_first_line(err)}); a file "
            f"under it is missing, truncated or modified; {REMEDY}"
        ) from err
    problems = compare(describe(abstract), describe(restored))
    if problems or content_hash(restored) != meta["content_sha256"]:
        detail = summarise(problems) if problems else (
            "the restored arrays' content hash differs from the sidecar's (the arrays were modified or replaced)"
        )
        raise ValueError(f"checkpoint {str(path)!r} is corrupt: {detail}; {REMEDY}")
    return restored
