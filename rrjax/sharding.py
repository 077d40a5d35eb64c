"""Data parallelism shared by training and the sweep: a 1-D ``"data"`` mesh, sample-sharded
global arrays, replicated weights, and padding that never enters a metric."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from rrjax._validation import check_int

__all__ = ["data_mesh", "shard_rows", "replicate", "pad_batch", "to_host", "is_writer", "everywhere", "agree"]


def data_mesh(devices: Sequence[Any] | None = None) -> Mesh:
    """A 1-D mesh with axis ``"data"`` over ``devices`` (default: every device of every process)."""
    devices = list(jax.devices() if devices is None else devices)
    if not devices:
        raise ValueError("devices is empty; expected at least one device")
    return Mesh(np.asarray(devices), ("data",))


def shard_rows(mesh: Mesh, host: np.ndarray) -> jax.Array:
    """A global array split over ``mesh``'s ``"data"`` axis along axis 0.

    Every process passes the same full host array and contributes the rows of its own devices,
    so the same call works on one device, on several local devices and across hosts.
    """
    sharding = NamedSharding(mesh, P("data", *([None] * (np.ndim(host) - 1))))
    return jax.make_array_from_callback(np.shape(host), sharding, lambda idx: host[idx])


def replicate(mesh: Mesh, tree: Any) -> Any:
    """Every leaf of ``tree`` replicated on all devices of ``mesh`` (weights, optimizer state)."""
    sharding = NamedSharding(mesh, P())
    return jax.tree_util.tree_map(
        lambda a: jax.make_array_from_callback(np.shape(a), sharding, lambda idx, a=np.asarray(a): a[idx]), tree
    )


def to_host(a: jax.Array) -> np.ndarray:
    """A global array as one NumPy array on every process (gathering across hosts if needed)."""
    if a.is_fully_addressable:
        return np.asarray(a)
    from jax.experimental import multihost_utils

    return np.asarray(multihost_utils.process_allgather(a, tiled=True))


def pad_batch(arrays: Mapping[str, np.ndarray], multiple: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Pads every array along axis 0 to a multiple of ``multiple`` by repeating leading rows.

    Args:
      arrays: arrays with a common leading batch size ``B >= 1``.
      multiple: e.g. the device count, or a fixed chunk size.

    Returns:
      ``(padded, mask)``: arrays of ``B' = ceil(B / multiple) * multiple`` rows, and
      ``mask: f32[B']`` with 1 on the ``B`` real rows and 0 on the copies.
    """
    multiple = check_int(multiple, name="multiple", minimum=1)
    sizes = {k: int(np.shape(v)[0]) for k, v in arrays.items()}
    b = next(iter(sizes.values()))
    if b < 1 or any(s != b for s in sizes.values()):
        raise ValueError(f"arrays have batch sizes {sizes}; expected one common size >= 1")
    pad = (-b) % multiple
    mask = np.concatenate([np.ones(b, np.float32), np.zeros(pad, np.float32)])
    if pad == 0:
        return {k: np.asarray(v) for k, v in arrays.items()}, mask
    # Copies of real rows (not zeros) keep the padded inputs in-distribution (e.g. for BatchNorm).
    idx = np.arange(pad) % b
    return {k: np.concatenate([np.asarray(v), np.asarray(v)[idx]]) for k, v in arrays.items()}, mask


def is_writer() -> bool:
    """Whether this process writes shared outputs (process 0 of a multi-host run)."""
    return jax.process_index() == 0


def everywhere(flag: bool) -> bool:
    """True iff ``flag`` holds on every process (a collective: every process must call it)."""
    if jax.process_count() == 1:
        return bool(flag)
    from jax.experimental import multihost_utils

    return bool(np.all(multihost_utils.process_allgather(np.array([flag]))))


def agree(value: np.ndarray) -> np.ndarray:
    """Process 0's view of ``value`` on every process (its disk decides what is finished)."""
    if jax.process_count() == 1:
        return value
    from jax.experimental import multihost_utils

    return np.asarray(multihost_utils.broadcast_one_to_all(value))
