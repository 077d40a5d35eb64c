"""Planning: how many samples a chunk holds and how much of the ε grid runs at once, so that a
per-device memory budget holds whatever the grid size (the grid is never shrunk)."""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
from absl import logging

from rrjax.attacks.base import AttackDef
from rrjax.attacks.registry import get_def
from rrjax.models.base import Detector

__all__ = ["per_sample_grad_bytes", "plan_chunk", "balanced"]


def per_sample_grad_bytes(detector: Detector, variables: Any) -> float:
    """Temporary bytes of one forward+backward of the model per sample (XLA memory analysis)."""
    probe = 2
    x = jax.ShapeDtypeStruct((probe,) + tuple(detector.input_shape), jnp.float32)
    grad = jax.jit(jax.grad(lambda v, xx: jnp.sum(detector.apply(v, xx)), argnums=1))
    try:
        analysis = grad.lower(variables, x).compile().memory_analysis()
        temp = float(analysis.temp_size_in_bytes)
    except Exception as e:  # backends without memory analysis: assume 32 input-sized buffers
        logging.warning("memory analysis unavailable (%s); using a conservative estimate", e)
        temp = 32.0 * probe * 4 * math.prod(detector.input_shape)
    return temp / probe


def plan_chunk(
    attack: str | AttackDef, n_eps: int, per_sample_grad_bytes: float, input_bytes: int, *, n_devices: int,
    batch_size: int, budget_bytes: float | None,
) -> tuple[int, int | None]:
    """Chooses the samples per chunk and the ε vectorisation width under a per-device budget.

    Args:
      attack: the attack's registry entry or name (its ``buffers`` and ``grid_free`` are the
        memory model).
      n_eps: ε values run in one program. per_sample_grad_bytes: :func:`per_sample_grad_bytes`.
      input_bytes: bytes of one float32 sample. n_devices: devices the chunk is sharded over.
      batch_size: samples per chunk before the budget. budget_bytes: per device, or None.

    Returns:
      ``(samples_per_chunk, eps_batch_size)``: the chunk is a multiple of ``n_devices``;
      ``eps_batch_size`` is None (whole grid at once) unless even one sample per device with the
      whole grid would exceed the budget, in which case ε is vectorised that many at a time.

    Raises:
      ValueError: the budget cannot hold one sample (one ε of one sample); raise it.
    """
    attack = get_def(attack) if isinstance(attack, str) else attack
    chunk = max(n_devices, (batch_size // n_devices) * n_devices)
    if budget_bytes is None:
        return chunk, None
    unit = per_sample_grad_bytes + attack.buffers * input_bytes
    grid_width = 1 if attack.grid_free else n_eps
    outputs = n_eps * input_bytes * 2  # x_adv and its probabilities' inputs
    per_sample = grid_width * unit + outputs
    fit = int(budget_bytes // per_sample)  # samples per device
    if fit >= 1:
        return min(chunk, fit * n_devices), None
    if attack.grid_free or not attack.accepts_eps_batch_size:
        raise ValueError(
            f"memory_budget_mb={budget_bytes / 2**20:.1f} cannot hold one sample of {attack.name!r} "
            f"(needs {per_sample / 2**20:.1f} MB per sample); raise the budget"
        )
    width = int((budget_bytes - outputs) // unit)
    if width < 1:
        raise ValueError(
            f"memory_budget_mb={budget_bytes / 2**20:.1f} cannot hold one ε of one sample of {attack.name!r} "
            f"(needs {(unit + outputs) / 2**20:.1f} MB); raise the budget"
        )
    return n_devices, width


def balanced(n: int, chunk: int, multiple: int) -> int:
    """The smallest chunk (a multiple of ``multiple``, at most ``chunk``) that needs as few
    chunks as ``chunk`` does: e.g. 96 samples in chunks of 64 become two chunks of 48, so the
    padded last chunk does not waste a third of the work."""
    if n == 0:
        return chunk
    pieces = -(-n // chunk)
    return min(chunk, -(-(-(-n // pieces)) // multiple) * multiple)
