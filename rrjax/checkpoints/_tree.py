"""The canonical description and content hash of a variables pytree (checkpoint internals).

A leaf is named by its ``/``-joined key path; ``describe`` lists ``{path, shape, dtype}`` in path
order, ``compare`` says how two descriptions differ, and ``content_hash`` is SHA-256 over the
tag ``rrjax-arrays-v1``, then for every leaf in path order a length-prefixed JSON header
``{"dtype", "path", "shape"}`` and the length-prefixed little-endian C-order bytes. The hash
depends only on the numbers, never on orbax's file layout: sweep records and cell ids carry it,
so it must not change.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from rrjax.models.base import Detector

_HASH_TAG = b"rrjax-arrays-v1\n"


def _key_str(key: Any) -> str:
    for attr in ("key", "name", "idx"):
        if hasattr(key, attr):
            return str(getattr(key, attr))
    return str(key)


def plain(tree: Any) -> Any:
    """Nested mappings -> nested dicts with host NumPy leaves (FrozenDicts and device arrays too)."""
    if isinstance(tree, Mapping):
        return {str(k): plain(v) for k, v in tree.items()}
    if isinstance(tree, jax.ShapeDtypeStruct):
        return tree
    return np.asarray(jax.device_get(tree))


def leaves(tree: Any) -> list[tuple[str, Any]]:
    flat, _ = jax.tree_util.tree_flatten_with_path(tree)
    items = [("/".join(_key_str(k) for k in path), leaf) for path, leaf in flat]
    return sorted(items, key=lambda kv: kv[0])


def describe(tree: Any) -> list[dict[str, Any]]:
    return [
        {"path": p, "shape": [int(d) for d in leaf.shape], "dtype": np.dtype(leaf.dtype).name}
        for p, leaf in leaves(tree)
    ]


def compare(expected: list[dict], got: list[dict]) -> list[str]:
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


def summarise(problems: list[str], limit: int = 8) -> str:
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
    for path, leaf in leaves(plain(variables)):
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


def abstract_variables(detector: Detector) -> Any:
    # Shapes and dtypes only: nothing is computed, so this is cheap even for large detectors.
    return plain(jax.eval_shape(detector.init, jax.random.PRNGKey(0)))


def abstract_from_description(arrays: Any) -> dict:
    """The abstract tree (``ShapeDtypeStruct`` leaves) that a ``describe`` list stands for.

    Raises:
      KeyError, TypeError, ValueError, AttributeError: ``arrays`` is not such a list.
    """
    tree: dict = {}
    for leaf in arrays:
        *parents, name = leaf["path"].split("/")
        node = tree
        for key in parents:
            node = node.setdefault(key, {})
        node[name] = jax.ShapeDtypeStruct(tuple(int(d) for d in leaf["shape"]), jnp.dtype(leaf["dtype"]))
    return tree
