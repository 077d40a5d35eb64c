"""Detector checkpoints: orbax arrays plus a JSON sidecar, written atomically, verified on load.

One directory per detector::

    <path>/
      metadata.json   the sidecar: model name and config, per-leaf shapes and dtypes, the content
                      hash, library versions, and whatever the caller adds (dataset and its config,
                      the training command, clean metrics, ...)
      arrays/         the variables pytree (``params`` and e.g. ``batch_stats``), written by orbax's
                      StandardCheckpointer; no optimizer state
      COMPLETE        the completeness marker, written last: the content hash and the size and
                      SHA-256 of every other file

``save`` builds all of this in a hidden temporary directory next to ``path`` and renames it into
place, so a directory at ``path`` is either a whole checkpoint or absent (an interrupted save
leaves only a ``.<name>.tmp-*`` directory, which ``load`` rejects for lack of a marker).

``load`` trusts nothing it reads: it checks the marker, every file's size and hash, that the
model and its config match the detector, that the stored shapes and dtypes match the ones the
detector's ``init`` produces (``jax.eval_shape``, no computation), restores against that abstract
target (orbax reads raw arrays; nothing is unpickled) and finally recomputes the content hash of
the restored arrays. Each failure is a ``ValueError`` that says what is wrong and what to do.

The content hash (``content_hash``) is SHA-256 over a canonical serialisation of the variables:
the tag ``rrjax-arrays-v1``, then for every leaf in the order of its ``/``-joined key path, a
length-prefixed JSON header ``{"dtype", "path", "shape"}`` followed by the length-prefixed
little-endian C-order bytes. It depends only on the numbers, not on orbax's file layout, so it
identifies the weights across re-saves and orbax versions.
"""

from __future__ import annotations

import datetime
import hashlib
import importlib.metadata
import json
import os
import pathlib
import platform
import shutil
import uuid
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from rrjax.models.base import Detector

__all__ = ["save", "load", "read_metadata", "content_hash", "FORMAT", "FORMAT_VERSION"]

FORMAT = "rrjax-detector-checkpoint"
FORMAT_VERSION = 1
SIDECAR = "metadata.json"
ARRAYS = "arrays"
MARKER = "COMPLETE"
_HASH_TAG = b"rrjax-arrays-v1\n"
# Keys the sidecar owns; callers' metadata may not shadow them.
RESERVED_KEYS = frozenset(
    {"format", "format_version", "model", "config", "input_shape", "param_count", "arrays",
     "content_sha256", "versions", "created_utc"}
)
_VERSIONED = ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "numpy", "scipy")
_REMEDY = "re-create it with rrjax.checkpoints.save (or fetch a fresh copy of the directory)"


# ----------------------------------------------------------------------------- pytree helpers


def _key_str(key: Any) -> str:
    for attr in ("key", "name", "idx"):
        if hasattr(key, attr):
            return str(getattr(key, attr))
    return str(key)


def _plain(tree: Any) -> Any:
    """Nested mappings -> nested dicts with host NumPy leaves (FrozenDicts and device arrays too)."""
    if isinstance(tree, Mapping):
        return {str(k): _plain(v) for k, v in tree.items()}
    if isinstance(tree, jax.ShapeDtypeStruct):
        return tree
    return np.asarray(jax.device_get(tree))


def _leaves(tree: Any) -> list[tuple[str, Any]]:
    flat, _ = jax.tree_util.tree_flatten_with_path(tree)
    items = [("/".join(_key_str(k) for k in path), leaf) for path, leaf in flat]
    return sorted(items, key=lambda kv: kv[0])


def _describe(tree: Any) -> list[dict[str, Any]]:
    return [
        {"path": p, "shape": [int(d) for d in leaf.shape], "dtype": np.dtype(leaf.dtype).name}
        for p, leaf in _leaves(tree)
    ]


def _compare(expected: list[dict], got: list[dict]) -> list[str]:
    """Human-readable differences between two leaf descriptions (empty when they agree)."""
    want = {d["path"]: d for d in expected}
    have = {d["path"]: d for d in got}
    problems = [f"missing {p}" for p in sorted(want.keys() - have.keys())]
    problems += [f"unexpected {p}" for p in sorted(have.keys() - want.keys())]
    for p in sorted(want.keys() & have.keys()):
        w, h = want[p], have[p]
        if list(w["shape"]) != list(h["shape"]) or w["dtype"] != h["dtype"]:
            problems.append(
                f"{p}: expected {w['dtype']}{list(w['shape'])}, found {h['dtype']}{list(h['shape'])}"
            )
    return problems


def _summarise(problems: list[str], limit: int = 8) -> str:
    more = f"; ... and {len(problems) - limit} more" if len(problems) > limit else ""
    return "; ".join(problems[:limit]) + more


def content_hash(variables: Any) -> str:
    """SHA-256 (hex) of the variables' canonical serialisation (see the module docstring).

    Args:
      variables: a pytree of arrays (nested dicts, as Flax variables are).

    Returns:
      64 hex digits; equal for equal key paths, dtypes, shapes and bytes.
    """
    h = hashlib.sha256(_HASH_TAG)
    for path, leaf in _leaves(_plain(variables)):
        arr = np.ascontiguousarray(leaf)
        if arr.dtype.byteorder == ">":
            arr = arr.astype(arr.dtype.newbyteorder("<"))
        header = json.dumps(
            {"path": path, "dtype": arr.dtype.name, "shape": list(arr.shape)}, sort_keys=True
        ).encode()
        h.update(len(header).to_bytes(8, "little"))
        h.update(header)
        h.update(arr.nbytes.to_bytes(8, "little"))
        h.update(arr.tobytes(order="C"))
    return h.hexdigest()


def _abstract_variables(detector: Detector) -> Any:
    # Shapes and dtypes only: nothing is computed, so this is cheap even for large detectors.
    return _plain(jax.eval_shape(detector.init, jax.random.PRNGKey(0)))


def variable_mismatches(detector: Detector, variables: Any) -> list[str]:
    """Differences (missing/extra leaves, shapes, dtypes) between ``variables`` and what
    ``detector.init`` produces; empty when they match. Computes nothing (abstract shapes)."""
    return _compare(_describe(_abstract_variables(detector)), _describe(_plain(variables)))


def summarise_mismatches(problems: list[str]) -> str:
    """A one-line summary of :func:`variable_mismatches` output for error messages."""
    return _summarise(problems)


# ----------------------------------------------------------------------------- JSON + files


def _json_config(detector: Detector) -> dict[str, Any]:
    config = dict(detector.config)
    try:
        return json.loads(json.dumps(config, allow_nan=False))
    except (TypeError, ValueError) as err:
        raise ValueError(
            f"detector.config={config!r} is not JSON-serialisable ({err}); the checkpoint could "
            "not rebuild the detector with get_model(name, **config)"
        ) from None


def _tuplify(value: Any) -> Any:
    # JSON turns tuples into lists; Detector configs are hashable, so lists go back to tuples.
    if isinstance(value, list):
        return tuple(_tuplify(v) for v in value)
    if isinstance(value, dict):
        return {k: _tuplify(v) for k, v in value.items()}
    return value


def _versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in _VERSIONED:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    from rrjax import __version__

    out["rrjax"] = __version__
    return out


def _write_json(path: pathlib.Path, obj: Any) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2, sort_keys=True, allow_nan=False)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())


def _sha256_file(path: pathlib.Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
        os.fsync(f.fileno())  # the bytes we hash are the bytes on disk before the marker exists
    return h.hexdigest()


def _manifest(root: pathlib.Path) -> dict[str, dict[str, Any]]:
    files = {}
    for f in sorted(root.rglob("*")):
        if f.is_file() and f.name != MARKER:
            files[f.relative_to(root).as_posix()] = {"size": f.stat().st_size, "sha256": _sha256_file(f)}
    return files


def _fsync_dir(path: pathlib.Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _check_user_metadata(metadata: Any) -> dict[str, Any]:
    if metadata is None:
        return {}
    if not isinstance(metadata, Mapping) or not all(isinstance(k, str) for k in metadata):
        raise ValueError(f"metadata must be a dict with string keys, got {type(metadata).__name__}")
    clash = sorted(RESERVED_KEYS & metadata.keys())
    if clash:
        raise ValueError(
            f"metadata uses reserved key(s) {clash}; these are written by save itself "
            f"(reserved: {sorted(RESERVED_KEYS)})"
        )
    try:
        return json.loads(json.dumps(dict(metadata), allow_nan=False))
    except (TypeError, ValueError) as err:
        raise ValueError(
            f"metadata is not JSON-serialisable ({err}); use plain dicts, lists, strings, numbers "
            "and None (None for undefined metrics, not NaN)"
        ) from None


# ----------------------------------------------------------------------------- public API


def save(
    path: str | os.PathLike,
    detector: Detector,
    variables: Any,
    *,
    metadata: Mapping[str, Any] | None = None,
    overwrite: bool = False,
) -> pathlib.Path:
    """Writes ``variables`` of ``detector`` to the checkpoint directory ``path``, atomically.

    Args:
      path: directory to create (its parent is created if needed).
      detector: the ``Detector`` the variables belong to; its name and config go to the sidecar
        so ``load(path)`` can rebuild it from the registry.
      variables: the detector's variables (``params`` and e.g. ``batch_stats``), exactly the
        leaves, shapes and dtypes ``detector.init`` produces (so float32 for the shipped models).
        Optimizer state does not belong here; training state has its own checkpoints.
      metadata: extra JSON-serialisable fields for the sidecar. Conventional keys: ``dataset``,
        ``dataset_config``, ``command`` (the exact training command), ``metrics`` (clean metrics),
        ``training`` (hyperparameters). Keys in ``RESERVED_KEYS`` are written by ``save``.
      overwrite: replace an existing checkpoint at ``path`` (the old one stays intact until the
        new one is complete). Directories that are not rrjax checkpoints are never replaced.

    Returns:
      ``path`` as a ``pathlib.Path``.

    Raises:
      ValueError: ``path`` exists (without ``overwrite``) or is not a checkpoint, the variables
        do not match the detector, or the metadata is not JSON-serialisable.
    """
    if not isinstance(detector, Detector):
        raise ValueError(f"detector must be an rrjax.models.Detector, got {type(detector).__name__}")
    if not isinstance(overwrite, bool):
        raise ValueError(f"overwrite must be True or False, got {overwrite!r}")
    path = pathlib.Path(path).absolute()
    user_meta = _check_user_metadata(metadata)
    config = _json_config(detector)
    if not isinstance(variables, Mapping) or "params" not in variables:
        raise ValueError(
            f"variables must be a dict of collections with 'params' (as detector.init returns), "
            f"got {type(variables).__name__}"
        )
    tree = _plain(variables)
    problems = variable_mismatches(detector, tree)
    if problems:
        raise ValueError(
            f"variables do not match detector {detector.name!r} (input {tuple(detector.input_shape)}): "
            f"{_summarise(problems)}. Save the variables this detector's init/training produced."
        )
    if path.exists():
        if not overwrite:
            raise ValueError(f"path={str(path)!r} already exists; pass overwrite=True to replace it")
        if not path.is_dir() or (any(path.iterdir()) and not (path / SIDECAR).is_file()):
            raise ValueError(
                f"path={str(path)!r} exists and is not an rrjax checkpoint; refusing to replace it "
                "even with overwrite=True (choose another path)"
            )
    path.parent.mkdir(parents=True, exist_ok=True)

    digest = content_hash(tree)
    sidecar = {
        **user_meta,
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "model": detector.name,
        "config": config,
        "input_shape": [int(d) for d in detector.input_shape],
        "param_count": int(sum(np.size(v) for _, v in _leaves(tree.get("params", {})))),
        "arrays": _describe(tree),
        "content_sha256": digest,
        "versions": _versions(),
        "created_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    tmp = path.parent / f".{path.name}.tmp-{uuid.uuid4().hex[:12]}"
    tmp.mkdir()
    try:
        checkpointer = ocp.StandardCheckpointer()
        checkpointer.save(tmp / ARRAYS, tree)
        checkpointer.wait_until_finished()
        checkpointer.close()
        _write_json(tmp / SIDECAR, sidecar)
        marker = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "content_sha256": digest,
            "files": _manifest(tmp),
        }
        _write_json(tmp / MARKER, marker)
        _fsync_dir(tmp)
        if path.exists():
            old = path.parent / f".{path.name}.old-{uuid.uuid4().hex[:12]}"
            os.rename(path, old)
            os.rename(tmp, path)
            shutil.rmtree(old)
        else:
            os.rename(tmp, path)
        _fsync_dir(path.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def _open(path: str | os.PathLike) -> tuple[pathlib.Path, dict, dict]:
    """Checks the directory, marker and sidecar; returns ``(path, marker, sidecar)``."""
    path = pathlib.Path(path).absolute()
    if not path.exists():
        raise ValueError(f"checkpoint path={str(path)!r} does not exist")
    if not path.is_dir():
        raise ValueError(f"checkpoint path={str(path)!r} is not a directory; an rrjax checkpoint is a directory")
    if not (path / MARKER).is_file():
        raise ValueError(
            f"checkpoint {str(path)!r} is incomplete: it has no {MARKER} marker, so it was not fully "
            f"written (an interrupted save, or a partial copy); {_REMEDY}"
        )
    marker = _read_json(path, MARKER, "completeness marker")
    files = marker.get("files")
    if (
        marker.get("format") != FORMAT
        or not isinstance(files, dict)
        or not isinstance(marker.get("content_sha256"), str)
    ):
        raise ValueError(f"checkpoint {str(path)!r} is corrupt: its {MARKER} marker is not an rrjax marker; {_REMEDY}")
    if marker.get("format_version") != FORMAT_VERSION:
        raise ValueError(
            f"checkpoint {str(path)!r} has format_version {marker.get('format_version')!r}; this rrjax "
            f"reads version {FORMAT_VERSION}. Use the rrjax version that wrote it or re-save it."
        )
    _verify_files(path, files, only=(SIDECAR,))
    sidecar = _read_json(path, SIDECAR, "sidecar")
    required = ("model", "config", "arrays", "content_sha256")
    missing = [k for k in required if k not in sidecar]
    if missing or sidecar.get("content_sha256") != marker["content_sha256"]:
        raise ValueError(
            f"checkpoint {str(path)!r} is corrupt: the sidecar lacks {missing} or disagrees with "
            f"the marker; {_REMEDY}"
        )
    return path, marker, sidecar


def _read_json(path: pathlib.Path, name: str, what: str) -> dict:
    try:
        with open(path / name, encoding="utf-8") as f:
            obj = json.load(f)
    except FileNotFoundError:
        raise ValueError(f"checkpoint {str(path)!r} is corrupt: the {what} {name} is missing; {_REMEDY}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(
            f"checkpoint {str(path)!r} is corrupt: the {what} {name} is not valid JSON ({err}); {_REMEDY}"
        ) from None
    if not isinstance(obj, dict):
        raise ValueError(f"checkpoint {str(path)!r} is corrupt: the {what} {name} is not a JSON object; {_REMEDY}")
    return obj


def _verify_files(path: pathlib.Path, files: dict, *, only: tuple[str, ...] | None = None) -> None:
    problems = []
    for rel, info in sorted(files.items()):
        if only is not None and rel not in only:
            continue
        rel_path = pathlib.PurePosixPath(rel)
        if rel_path.is_absolute() or ".." in rel_path.parts or not isinstance(info, dict):
            problems.append(f"the marker lists an invalid entry {rel!r}")
            continue
        f = path / rel_path
        if not f.is_file():
            problems.append(f"{rel} is missing")
            continue
        size = f.stat().st_size
        if size != info.get("size"):
            kind = "truncated" if isinstance(info.get("size"), int) and size < info["size"] else "resized"
            problems.append(f"{rel} is {kind} ({size} bytes, expected {info.get('size')})")
        elif _sha256_file(f) != info.get("sha256"):
            problems.append(f"{rel} was modified (SHA-256 mismatch)")
    if only is not None:
        problems += [f"{name} is not listed in the {MARKER} marker" for name in only if name not in files]
    else:
        arrays = path / ARRAYS
        listed = set(files)
        extra = sorted(
            f.relative_to(path).as_posix() for f in arrays.rglob("*") if f.is_file()
        ) if arrays.is_dir() else []
        problems += [f"unexpected file {rel}" for rel in extra if rel not in listed]
    if problems:
        raise ValueError(
            f"checkpoint {str(path)!r} is corrupt: {_summarise(problems)}. The files changed after "
            f"the checkpoint was written; {_REMEDY}"
        )


def read_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The sidecar of a complete checkpoint (after checking its marker and the sidecar's hash).

    Args:
      path: checkpoint directory written by ``save``.

    Returns:
      The sidecar dict: ``model``, ``config``, ``input_shape``, ``arrays``, ``content_sha256``,
      ``versions``, ``created_utc`` and the caller's fields (``dataset``, ``command``,
      ``metrics``, ...).

    Raises:
      ValueError: the directory is missing, partial (no marker) or its sidecar is corrupt.
    """
    return _open(path)[2]


def _rebuild(meta: dict) -> Detector:
    from rrjax import models  # lazy: the registry imports every model family

    get_model = getattr(models, "get_model", None)
    if get_model is None:
        raise ValueError(
            "rrjax.models has no get_model registry in this installation; pass detector=... "
            "(the detector the checkpoint was saved with) to load"
        )
    config = _tuplify(meta["config"])
    if not isinstance(config, dict):
        raise ValueError(f"the checkpoint's config {meta['config']!r} is not a JSON object; {_REMEDY}")
    return get_model(meta["model"], **config)


def _check_matches(detector: Detector, meta: dict, path: pathlib.Path) -> None:
    if not isinstance(detector, Detector):
        raise ValueError(f"detector must be an rrjax.models.Detector or None, got {type(detector).__name__}")
    saved = f"{meta['model']!r} with config {meta['config']}"
    if detector.name != meta["model"]:
        raise ValueError(
            f"checkpoint {str(path)!r} holds model {saved}, but detector is {detector.name!r}; pass "
            "detector=None to rebuild the saved model, or the detector it was saved with"
        )
    config = _json_config(detector)
    if config != meta["config"]:
        keys = sorted(
            k for k in config.keys() | meta["config"].keys() if config.get(k) != meta["config"].get(k)
        )
        raise ValueError(
            f"checkpoint {str(path)!r} holds model {saved}, but detector has config {config} "
            f"(differs in {keys}); pass detector=None to rebuild the saved model"
        )


def load(
    path: str | os.PathLike, *, detector: Detector | None = None
) -> tuple[Detector, dict, dict[str, Any]]:
    """Loads and verifies a checkpoint written by ``save``.

    Args:
      path: checkpoint directory.
      detector: the detector to load into. ``None`` rebuilds it from the sidecar with
        ``rrjax.models.get_model(meta["model"], **meta["config"])``. When given, its name and
        config must equal the saved ones.

    Returns:
      ``(detector, variables, metadata)``: ``variables`` is a dict of collections of
      ``jax.Array`` bit-identical to what was saved, ``metadata`` the sidecar.

    Raises:
      ValueError: missing, partial, corrupt (a file missing, truncated or modified; the restored
        arrays' hash differs), or mismatched (another model or config, other shapes or dtypes
        than the detector's) checkpoint; the message says which and what to do.
    """
    path, marker, meta = _open(path)
    _verify_files(path, marker["files"])
    if detector is None:
        detector = _rebuild(meta)
    _check_matches(detector, meta, path)
    abstract = _abstract_variables(detector)
    problems = _compare(_describe(abstract), meta["arrays"])
    if problems:
        raise ValueError(
            f"checkpoint {str(path)!r} does not fit detector {detector.name!r} (input "
            f"{tuple(detector.input_shape)}): {_summarise(problems)}. It was saved from another "
            "version of this model; load it with the rrjax version that wrote it, or retrain."
        )
    checkpointer = ocp.StandardCheckpointer()
    try:
        restored = checkpointer.restore(path / ARRAYS, abstract)
    except Exception as err:  # orbax/tensorstore raise many types; all mean "unreadable arrays"
        raise ValueError(
            f"checkpoint {str(path)!r} is corrupt: orbax could not read {ARRAYS}/ "
            f"({type(err).__name__}: {err}); {_REMEDY}"
        ) from err
    finally:
        checkpointer.close()
    restored = _plain(restored)
    problems = _compare(_describe(abstract), _describe(restored))
    if problems or content_hash(restored) != meta["content_sha256"]:
        detail = _summarise(problems) if problems else "the restored arrays' content hash differs from the sidecar's"
        raise ValueError(f"checkpoint {str(path)!r} is corrupt: {detail}; {_REMEDY}")
    variables = jax.tree_util.tree_map(jnp.asarray, restored)
    return detector, variables, meta
