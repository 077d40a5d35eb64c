"""rrjax.bench.measure: timing protocol, resident memory, matmul peak."""

import mmap
import time

import pytest

from rrjax.bench import measure as M


def test_peak_rss_sees_a_transient_allocation():
    def alloc():
        # A fresh anonymous mapping, every page touched: 64 MiB of new resident memory whatever
        # the allocator keeps cached (np.ones in a long test session reused freed memory).
        # Held while the GIL is free, as XLA and PyTorch hold it while they compute.
        size = 64 * 2**20
        with mmap.mmap(-1, size) as m:
            for i in range(0, size, mmap.PAGESIZE):
                m[i] = 1
            time.sleep(0.1)

    before, peak = M.peak_rss_during(alloc)
    assert peak - before > 48, (before, peak)


def test_median():
    assert M.median([3.0, 1.0, 2.0]) == 2.0
    assert M.median([4.0, 1.0, 2.0, 3.0]) == 2.5
    with pytest.raises(ValueError, match="empty"):
        M.median([])


def test_time_runner_warms_up_then_times_and_returns_the_last_loop_output():
    calls = []
    out, first, times = M.time_runner(lambda: calls.append("run") or len(calls), 3)
    assert calls == ["run"] * 4 and out == 1 and len(times) == 3 and first >= 0  # grid: warm-up output
    calls.clear()
    out, _, times = M.time_runner(lambda: calls.append("run") or len(calls), 0,
                                  warmup=lambda: calls.append("warm") or 0)
    assert calls == ["warm", "run"] and out == 2 and len(times) == 1  # a loop: at least one full timed run


def test_machine_peak_is_a_positive_throughput_of_each_framework():
    p = M.machine_peak(128, with_torch=True)
    assert set(p) == {"jax", "torch", "peak"} and p["peak"] == max(p["jax"], p["torch"]) > 0
    assert set(M.machine_peak(64, with_torch=False)) == {"jax", "peak"}
