"""rrjax.bench.contenders: the equivalence check, the work each contender does, and the runners.

The benchmark's timings and targets are checked by the benchmark itself (BENCHMARKS.md), never
here: these tests check that what it compares is the same work.
"""

import dataclasses

import jax
import numpy as np
import pytest

from rrjax import attacks
from rrjax.bench import contenders as C
from rrjax.bench.config import BenchConfig
from rrjax.bench.workload import Workload, logit_offset, shifted_apply
from tests.conftest import tiny_detector


def test_ra_match_allows_exactly_one_sample():
    n = 64
    assert C.ra_match([1.0, 0.5, 0.0], [1.0, 0.5, 0.0], n) == (True, 0)
    assert C.ra_match([1.0, 33 / 64], [1.0, 32 / 64], n) == (True, 1)
    assert C.ra_match([1.0, 34 / 64], [1.0, 32 / 64], n) == (False, 2)
    assert C.ra_match([0.0, 1.0], [1.0, 1.0], n) == (False, 64)
    with pytest.raises(ValueError, match="different lengths"):
        C.ra_match([1.0], [1.0, 1.0], n)


def test_executed_steps_count_the_work_each_contender_does():
    # FGSM: one gradient per sample serves the whole grid; a loop takes one per (sample, ε).
    assert C.executed_steps("fgsm", "rrjax-grid", 64, 16, 1) == 64
    assert C.executed_steps("fgsm", "torchattacks", 64, 16, 1) == 64 * 16
    assert C.executed_steps("pgd", "rrjax-grid", 64, 16, 10) == 64 * 16 * 10
    # CW's optimisation does not depend on ε, unless the library is called once per ε.
    assert C.executed_steps("cw", "torchattacks", 64, 16, 10) == 640
    assert C.executed_steps("cw", "rrjax-per-eps", 64, 16, 10) == 64 * 16 * 10


def test_executed_work_uses_the_steps_torchattacks_cw_ran():
    cfg = BenchConfig(n=4, eps_count=2, cw_steps=10)
    row = dict(attack="cw", contender="torchattacks", median_s=2.0, cw_steps_run=5)
    assert C.executed_work(row, cfg, flops_per_step=1e9) == (20, 10.0)  # 4 samples x 5 steps, 20 GFLOP / 2 s
    row = dict(attack="pgd", contender="rrjax-grid", median_s=4.0)
    assert C.executed_work(row, dataclasses.replace(cfg, pgd_steps=3), 1e9) == (24, 6.0)


def test_rrjax_hparams_are_the_registry_configuration_matching_torchattacks():
    cfg = BenchConfig(pgd_steps=10, cw_steps=7, cw_c=3.0, cw_lr=0.01, unroll=True)
    pgd = C.rrjax_hparams("pgd", cfg, eps_batch_size=4)
    assert pgd == attacks.resolve_hparams("pgd", steps=10, rel_step_size=0.25, random_start=False, unroll=True,
                                          eps_batch_size=4)
    assert pgd["rel_step_size"] == pytest.approx(2.5 / 10) and pgd["unroll"] is True
    cw = C.rrjax_hparams("cw", cfg)
    assert (cw["steps"], cw["binary_search_steps"], cw["initial_const"], cw["learning_rate"], cw["abort_early"]) == (
        7, 1, 3.0, 0.01, False)
    assert "unroll" not in C.rrjax_hparams("pgd", dataclasses.replace(cfg, unroll=False))  # the default is not recorded


def _tiny_workload(n=6, seed=0):
    det, variables = tiny_detector((8, 8, 3), seed=seed)
    x = np.random.default_rng(seed).uniform(size=(n, 8, 8, 3)).astype(np.float32)
    clean = np.asarray(det.apply(variables, x))
    offset = logit_offset(clean)
    fn = jax.tree_util.Partial(lambda v, xa: shifted_apply(det, offset, v, xa), variables)
    return Workload("tiny", {}, det, variables, fn, None, x, clean.argmax(-1).astype(np.int32), offset, 1.0,
                    jax.jit(det.apply))


@pytest.mark.parametrize("attack", ["fgsm", "pgd", "cw"])
def test_the_grid_program_and_the_per_eps_loop_compute_the_same_examples(attack):
    """rrjax-grid and rrjax-per-eps must be the same attack (equal to float rounding)."""
    w = _tiny_workload()
    cfg = BenchConfig(n=6, pgd_steps=3, cw_steps=4, cw_c=10.0, cw_lr=0.05, unroll=False, scale_e_n=6, scale_n=(6,))
    eps = C.attack_eps(attack, 3, cfg, eps_max=0.1)
    grid = C.outputs_numpy("rrjax-grid", C.make_runner("rrjax-grid", attack, w, eps, 6, cfg)())
    loop = C.outputs_numpy("rrjax-per-eps", C.make_runner("rrjax-per-eps", attack, w, eps, 6, cfg)())
    assert grid.shape == loop.shape == (3, 6, 8, 8, 3)
    np.testing.assert_allclose(grid, loop, atol=1e-5)
    norm = (lambda d: np.abs(d).reshape(6, -1).max(1)) if attack != "cw" else (lambda d: np.linalg.norm(d.reshape(6, -1), axis=1))
    for e, xe in zip(eps, grid):
        assert norm(xe - w.x).max() <= e + 1e-5  # each contender stays in its budget
    ra = C.robust_accuracy(w, grid, 6)
    assert len(ra) == 3 and all(0 <= r <= 1 for r in ra)


def test_runner_rejects_unknown_contenders_and_torch_without_a_twin():
    w = _tiny_workload()
    cfg = BenchConfig(n=6, scale_e_n=6, scale_n=(6,))
    with pytest.raises(ValueError, match="contender='jax'"):
        C.make_runner("jax", "fgsm", w, [0.1], 6, cfg)
    with pytest.raises(ValueError, match="no PyTorch twin"):
        C.make_runner("torchattacks", "fgsm", w, [0.1], 6, cfg)


def test_auto_eps_max_is_the_first_search_budget_where_fgsm_halves_ra():
    w = _tiny_workload()
    cfg = BenchConfig(n=6, scale_e_n=6, scale_n=(6,))
    eps_max, ra = C.auto_eps_max(w, cfg)
    assert len(ra) == len(C.AUTO_EPS_SEARCH)
    hits = [e for e, r in zip(C.AUTO_EPS_SEARCH, ra) if r <= 0.5]
    assert eps_max == pytest.approx(hits[0] if hits else C.AUTO_EPS_SEARCH[-1], rel=1e-3)
    # The RA it reports is FGSM's at that budget (recomputed independently).
    x_adv = attacks.fgsm(w.logits_fn, w.x, w.y, np.asarray(C.AUTO_EPS_SEARCH, np.float32), key=jax.random.key(0))
    want = [float(np.mean(np.asarray(w.detector.apply(w.variables, xe)).argmax(-1) == w.y)) for xe in x_adv]
    np.testing.assert_allclose(ra, want)
