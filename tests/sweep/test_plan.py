"""Memory planning: chunk sizes and ε groups under a per-device budget."""

from __future__ import annotations


import pytest

from rrjax import sweep as S

def test_plan_chunk_respects_the_budget():
    mb = 2**20
    # No budget: the batch size (rounded to the device count).
    assert S.plan_chunk("pgd", 16, 1e6, 10_000, n_devices=8, batch_size=60, budget_bytes=None) == (56, None)
    chunk, width = S.plan_chunk("pgd", 16, 1e6, 10_000, n_devices=2, batch_size=256, budget_bytes=100 * mb)
    per = 16 * (1e6 + 6 * 10_000) + 16 * 10_000 * 2
    assert width is None and chunk == 2 * int(100 * mb // per) and chunk * per / 2 <= 100 * mb
    # Too small for the whole grid with one sample: vectorise ε in groups instead.
    chunk, width = S.plan_chunk("pgd", 64, 1e6, 10_000, n_devices=4, batch_size=64, budget_bytes=20 * mb)
    assert chunk == 4 and 1 <= width < 64
    # FGSM's memory does not grow with the grid.
    assert S.plan_chunk("fgsm", 64, 1e6, 10_000, n_devices=1, batch_size=8, budget_bytes=20 * mb)[1] is None
    with pytest.raises(ValueError, match="raise the budget"):
        S.plan_chunk("pgd", 4, 1e9, 10_000, n_devices=1, batch_size=8, budget_bytes=mb)


