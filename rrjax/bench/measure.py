"""How the benchmark measures: wall time (warm-up, then the median of repeats), resident
memory, the load average, and the machine's practical peak (the best square matmul)."""

from __future__ import annotations

import os
import resource
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "median", "time_runner", "load", "rss_mb", "maxrss_mb", "peak_rss_during", "matmul_gflops", "machine_peak",
]


def median(values: Sequence[float]) -> float:
    """The median of a non-empty sequence."""
    if not values:
        raise ValueError("median of an empty sequence; expected at least one value")
    v = sorted(values)
    k = len(v) // 2
    return v[k] if len(v) % 2 else 0.5 * (v[k - 1] + v[k])


def time_runner(run: Callable[[], Any], repeats: int,
                warmup: Callable[[], Any] | None = None) -> tuple[Any, float, list[float]]:
    """Warms up, then times ``repeats`` runs; returns ``(output, warm-up seconds, run times)``.

    Without ``warmup`` the first full run is the warm-up (compilation for the grid program) and
    its output is returned. A per-ε loop warms up on its first ε alone (``warmup``: the program
    it compiles serves every ε), then at least one full run is timed and its output returned.
    """
    t0 = time.perf_counter()
    out = (warmup or run)()
    first = time.perf_counter() - t0
    times = []
    for _ in range(repeats if warmup is None else max(repeats, 1)):
        t0 = time.perf_counter()
        result = run()
        times.append(time.perf_counter() - t0)
        if warmup is not None:
            out = result
    return out, first, times


def load() -> float:
    """The 1-minute load average (every table records it: shared cores slow PyTorch most)."""
    return os.getloadavg()[0]


def maxrss_mb() -> float:
    """The process's peak resident memory. /proc's VmHWM belongs to this process's address space
    (reset by exec); getrusage's ru_maxrss is not: a child started by fork+exec inherits the
    parent's high-water mark, so every memory worker reported the parent's 9 GB."""
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 1024.0  # KiB
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def rss_mb() -> float:
    """Resident memory now, in MB (Linux /proc)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_rss_during(fn: Callable[[], Any], interval_s: float = 0.002) -> tuple[float, float]:
    """``(rss before, peak rss while fn runs)`` in MB, sampled from /proc by a thread (XLA and
    PyTorch release the GIL while they compute, so the sampler keeps running)."""
    before = rss_mb()
    peak = [before]
    done = threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], rss_mb())
            time.sleep(interval_s)

    t = threading.Thread(target=sample, daemon=True)
    t.start()
    try:
        fn()
    finally:
        done.set()
        t.join()
    return before, max(peak[0], rss_mb())


def matmul_gflops(size: int, dtype: str = "float32", repeats: int = 5) -> float:
    """The best throughput (GFLOP/s) of a ``size × size`` matmul in JAX on the default device."""
    a = jnp.asarray(np.random.default_rng(0).normal(size=(size, size)), dtype=dtype)
    mm = jax.jit(lambda m: m @ m)
    _, _, times = time_runner(lambda: mm(a).block_until_ready(), repeats)
    return 2 * size**3 / min(times) / 1e9


def _torch_matmul_gflops(size: int, repeats: int = 5) -> float:
    import torch  # optional dependency: only when the PyTorch contender runs

    a = torch.from_numpy(np.random.default_rng(0).normal(size=(size, size)).astype(np.float32))
    _, _, times = time_runner(lambda: a @ a, repeats)
    return 2 * size**3 / min(times) / 1e9


def machine_peak(size: int, *, with_torch: bool) -> dict[str, float]:
    """Measured float32 matmul throughput (GFLOP/s) of JAX (and PyTorch): the practical peak.

    Returns ``{"jax": ..., "torch": ..., "peak": max}`` (``torch`` only ``with_torch``).
    """
    out = {"jax": matmul_gflops(size)}
    if with_torch:
        out["torch"] = _torch_matmul_gflops(size)
    out["peak"] = max(out.values())
    return out
