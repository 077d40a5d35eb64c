"""Detector checkpoints: orbax arrays plus a JSON sidecar, committed atomically by orbax, verified on load.

One directory per detector, written by one orbax ``Checkpointer(CompositeCheckpointHandler)``
save of two items::

    <path>/
      arrays/                 the variables pytree (``params`` and e.g. ``batch_stats``), orbax
                              StandardSave (OCDBT + zstd); no optimizer state
      sidecar/metadata.json   the sidecar (orbax JsonSave): model name and config, per-leaf shapes
                              and dtypes, the content hash, library versions, whatever the caller
                              adds (dataset, training command, clean metrics, ...), and its own
                              hash ``sidecar_sha256``
      _CHECKPOINT_METADATA, commit_success.txt   orbax's step metadata and commit record

orbax writes both items into ``<path>.orbax-checkpoint-tmp`` and renames it to ``<path>`` on
commit, so a directory at ``path`` is a whole checkpoint or absent. ``overwrite=True`` never uses
orbax's ``force`` (which deletes the old checkpoint before writing the new one): the new one is
committed to a hidden sibling and swapped with the old one by ``renameat2(RENAME_EXCHANGE)``, so
``path`` holds the old checkpoint until the instant it holds the new one.

:func:`verify` trusts nothing it reads (see its docstring); :func:`load` runs the same checks and
also that the checkpoint fits the detector. Each failure is a ``ValueError`` that says what is
wrong and what to do. :func:`content_hash` hashes the numbers only (``rrjax.checkpoints._tree``),
so it identifies the weights across re-saves, format versions and orbax versions.

Format version 1 (``metadata.json`` + ``arrays/`` + a ``COMPLETE`` file manifest, written by rrjax
before this layout) is no longer read; ``load`` names the command that converts it in place,
keeping its metadata and content hash: ``python -m rrjax.checkpoints upgrade PATH``.
"""

from __future__ import annotations

import datetime
import importlib.metadata
import json
import os
import pathlib
import platform
import shlex
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from rrjax.checkpoints._store import (
    ARRAYS,
    REMEDY,
    SELF_HASH,
    SIDECAR,
    SIDECAR_ITEM,
    abstract_from_sidecar,
    commit,
    read_json,
    restore_verified,
    sha256_file,
    sidecar_sha256,
)
from rrjax.checkpoints._tree import (
    abstract_variables,
    compare,
    content_hash,
    describe,
    leaves,
    plain,
    summarise,
)
from rrjax.models.base import Detector

__all__ = [
    "save", "load", "verify", "read_metadata", "content_hash", "upgrade", "variable_mismatches",
    "summarise_mismatches", "FORMAT", "FORMAT_VERSION", "ARRAYS", "SIDECAR_ITEM", "SIDECAR",
]

FORMAT = "rrjax-detector-checkpoint"
FORMAT_VERSION = 2
_V1_MARKER = "COMPLETE"
# Keys the sidecar owns; callers' metadata may not shadow them.
RESERVED_KEYS = frozenset(
    {"format", "format_version", "model", "config", "input_shape", "param_count", "arrays",
     "content_sha256", "versions", "created_utc", SELF_HASH, "upgraded"}
)
_VERSIONED = ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "numpy", "scipy")


def variable_mismatches(detector: Detector, variables: Any) -> list[str]:
    """Differences (missing/extra leaves, shapes, dtypes) between ``variables`` and what
    ``detector.init`` produces; empty when they match. Computes nothing (abstract shapes)."""
    return compare(describe(abstract_variables(detector)), describe(plain(variables)))


def summarise_mismatches(problems: list[str]) -> str:
    """A one-line summary of :func:`variable_mismatches` output for error messages."""
    return summarise(problems)


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


def _utc_now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


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


def _check_target(path: pathlib.Path, overwrite: bool) -> None:
    if not path.exists():
        return
    if not overwrite:
        raise ValueError(f"path={str(path)!r} already exists; pass overwrite=True to replace it")
    is_checkpoint = path.is_dir() and (
        not any(path.iterdir())
        or (path / SIDECAR_ITEM / SIDECAR).is_file()
        or (path / _V1_MARKER).is_file()
        or (path / SIDECAR).is_file()
    )
    if not is_checkpoint:
        raise ValueError(
            f"path={str(path)!r} exists and is not an rrjax checkpoint; refusing to replace it "
            "even with overwrite=True (choose another path)"
        )


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
      overwrite: replace an existing checkpoint at ``path``; ``path`` holds the old checkpoint
        until the new one is committed and swapped in. Directories that are not rrjax
        checkpoints are never replaced.

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
    tree = plain(variables)
    problems = variable_mismatches(detector, tree)
    if problems:
        raise ValueError(
            f"variables do not match detector {detector.name!r} (input {tuple(detector.input_shape)}): "
            f"{summarise(problems)}. Save the variables this detector's init/training produced."
        )
    _check_target(path, overwrite)
    sidecar = {
        **user_meta,
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "model": detector.name,
        "config": config,
        "input_shape": [int(d) for d in detector.input_shape],
        "param_count": int(sum(np.size(v) for _, v in leaves(tree.get("params", {})))),
        "arrays": describe(tree),
        "content_sha256": content_hash(tree),
        "versions": _versions(),
        "created_utc": _utc_now(),
    }
    commit(path, tree, {**sidecar, SELF_HASH: sidecar_sha256(sidecar)})
    return path


def _read_sidecar(path: str | os.PathLike) -> tuple[pathlib.Path, dict]:
    """Checks the directory and the sidecar (format, version, its own hash); ``(path, sidecar)``."""
    path = pathlib.Path(path).absolute()
    if not path.exists():
        old = sorted(path.parent.glob(f".{path.name}.old-*")) if path.parent.is_dir() else []
        hint = f"; an interrupted overwrite left the previous checkpoint at {str(old[-1])!r}" if old else ""
        raise ValueError(f"checkpoint path={str(path)!r} does not exist{hint}")
    if not path.is_dir():
        raise ValueError(f"checkpoint path={str(path)!r} is not a directory; an rrjax checkpoint is a directory")
    if (path / _V1_MARKER).is_file():
        raise ValueError(
            f"checkpoint {str(path)!r} is in rrjax's checkpoint format version 1, which this rrjax no "
            f"longer reads; convert it once, keeping its metadata and weights: python -m rrjax.checkpoints upgrade "
            f"{shlex.quote(str(path))}"
        )
    sidecar = read_json(path / SIDECAR_ITEM / SIDECAR, path, "sidecar")
    if sidecar.get("format") != FORMAT or sidecar.get("format_version") != FORMAT_VERSION:
        raise ValueError(
            f"checkpoint {str(path)!r} has format {sidecar.get('format')!r} version "
            f"{sidecar.get('format_version')!r}; this rrjax reads {FORMAT!r} version {FORMAT_VERSION}. Use the "
            "rrjax version that wrote it, or re-save it."
        )
    if sidecar.get(SELF_HASH) != sidecar_sha256(sidecar):
        raise ValueError(
            f"checkpoint {str(path)!r} is corrupt: its sidecar {SIDECAR_ITEM}/{SIDECAR} was edited after the "
            f"checkpoint was written (its {SELF_HASH} does not match its content); {REMEDY}"
        )
    missing = [k for k in ("model", "config", "arrays", "content_sha256") if k not in sidecar]
    if missing:
        raise ValueError(f"checkpoint {str(path)!r} is corrupt: its sidecar lacks {missing}; {REMEDY}")
    return path, sidecar


def read_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The sidecar of a checkpoint, after checking its format and its own hash (cheap: the
    arrays are not read; :func:`verify` checks them too).

    Args:
      path: checkpoint directory written by ``save``.

    Returns:
      The sidecar dict: ``model``, ``config``, ``input_shape``, ``arrays``, ``content_sha256``,
      ``versions``, ``created_utc`` and the caller's fields (``dataset``, ``command``,
      ``metrics``, ...).

    Raises:
      ValueError: the directory is missing, in an old format, or its sidecar is missing or edited.
    """
    return _read_sidecar(path)[1]


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
        raise ValueError(f"the checkpoint's config {meta['config']!r} is not a JSON object; {REMEDY}")
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


def _fitting_target(detector: Detector, meta: dict, path: pathlib.Path) -> dict:
    """``jax.eval_shape`` of ``detector.init``, after checking the checkpoint was saved from it."""
    _check_matches(detector, meta, path)
    abstract = abstract_variables(detector)
    problems = compare(describe(abstract), meta["arrays"])
    if problems:
        raise ValueError(
            f"checkpoint {str(path)!r} does not fit detector {detector.name!r} (input "
            f"{tuple(detector.input_shape)}): {summarise(problems)}. It was saved from another "
            "version of this model; load it with the rrjax version that wrote it, or retrain."
        )
    return abstract


def _verified(path: str | os.PathLike, detector: Detector | None) -> tuple[dict, dict]:
    path, meta = _read_sidecar(path)
    abstract = abstract_from_sidecar(meta, path) if detector is None else _fitting_target(detector, meta, path)
    return meta, restore_verified(path, meta, abstract)


def verify(path: str | os.PathLike, *, detector: Detector | None = None) -> dict[str, Any]:
    """Checks a checkpoint completely and returns its sidecar.

    Checks, in order: the directory exists and is in the current format (a version-1 checkpoint
    names the upgrade command); the sidecar parses and matches its own ``sidecar_sha256`` (a
    hand edit shows); with ``detector``, the model name, config and every leaf's shape and dtype
    fit it; orbax restores every array against the abstract target (the sidecar's leaf list,
    or ``jax.eval_shape(detector.init)``; nothing is unpickled), which fails for a missing,
    truncated or garbled file; the restored numbers have the sidecar's ``content_sha256``
    (which fails for modified or swapped-in arrays).

    Args:
      path: checkpoint directory.
      detector: also check that the checkpoint fits this detector.

    Returns:
      The sidecar, as :func:`read_metadata` returns it.

    Raises:
      ValueError: the first check that fails, saying what is wrong and what to do.
    """
    return _verified(path, detector)[0]


def load(
    path: str | os.PathLike, *, detector: Detector | None = None
) -> tuple[Detector, dict, dict[str, Any]]:
    """Loads a checkpoint after :func:`verify`'s checks (one restore serves both).

    Args:
      path: checkpoint directory.
      detector: the detector to load into. ``None`` rebuilds it from the sidecar with
        ``rrjax.models.get_model(meta["model"], **meta["config"])``. When given, its name and
        config must equal the saved ones.

    Returns:
      ``(detector, variables, metadata)``: ``variables`` is a dict of collections of
      ``jax.Array`` bit-identical to what was saved, ``metadata`` the sidecar.

    Raises:
      ValueError: missing, old-format, partial or corrupt (a file missing, truncated or
        modified; an edited sidecar; the restored arrays' hash differs), or mismatched (another
        model or config, other shapes or dtypes than the detector's) checkpoint; the message
        says which and what to do.
    """
    if detector is None:
        detector = _rebuild(read_metadata(path))
    meta, restored = _verified(path, detector)
    return detector, jax.tree_util.tree_map(jnp.asarray, restored), meta


def upgrade(path: str | os.PathLike) -> pathlib.Path:
    """Converts a format-version-1 checkpoint (``COMPLETE`` marker) in place to the current format.

    The version-1 sidecar must match the marker's SHA-256 and the restored arrays its content
    hash; the new sidecar keeps every field (``created_utc``, ``versions`` and ``content_sha256``
    included) and adds ``upgraded`` (from version, time, library versions). The old directory
    is swapped out only after the new checkpoint is committed.

    Returns:
      ``path`` as a ``pathlib.Path``.

    Raises:
      ValueError: ``path`` is not a version-1 checkpoint, or it is corrupt.
    """
    path = pathlib.Path(path).absolute()
    if not (path / _V1_MARKER).is_file():
        raise ValueError(f"{str(path)!r} is not a version-1 rrjax checkpoint (it has no {_V1_MARKER} marker)")
    marker = read_json(path / _V1_MARKER, path, "version-1 marker")
    meta = read_json(path / SIDECAR, path, "version-1 sidecar")
    listed = marker.get("files", {}).get(SIDECAR, {}) if isinstance(marker.get("files"), dict) else {}
    if sha256_file(path / SIDECAR) != listed.get("sha256") or "content_sha256" not in meta:
        raise ValueError(f"checkpoint {str(path)!r} is corrupt: {SIDECAR} does not match its {_V1_MARKER} marker; {REMEDY}")
    arrays = restore_verified(path, meta, abstract_from_sidecar(meta, path), v1=True)
    upgraded = {"from_format_version": meta.get("format_version", 1), "utc": _utc_now(), "versions": _versions()}
    sidecar = {**meta, "format_version": FORMAT_VERSION, "upgraded": upgraded}
    commit(path, arrays, {**sidecar, SELF_HASH: sidecar_sha256(sidecar)})
    return path
