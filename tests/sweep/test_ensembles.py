"""Ensembles in the sweep: members are ordinary cells (shared with standalone runs of the same
configuration), the ensemble's rows are their per-metric worst case, row by row no better than
any member's, with the worst case attributed to members and gradient masking flagged."""

from __future__ import annotations

import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rrjax import attacks
from rrjax import records as R
from rrjax import sweep as S
from rrjax.models.base import Detector
from tests import sweep_runner


def random_sign(logits_fn, x, y, eps, *, key):
    """A gradient-free attack: a random corner of the L∞ ball per sample."""
    keys = attacks.sample_keys(key, x.shape[0])
    signs = jax.vmap(lambda k: jnp.sign(jax.random.uniform(k, x.shape[1:], x.dtype, -1.0, 1.0)))(keys)
    e = jnp.asarray(eps, x.dtype).reshape((-1,) + (1,) * x.ndim)
    return jnp.clip(x[None] + e * signs[None], 0.0, 1.0)


@pytest.fixture
def registered():
    attacks.register("rsign_free", random_sign, gradient_free=True, overwrite=True)
    attacks.register_ensemble("mini_ens", [("fgsm", "fgsm", {}), ("pgd", "pgd", {"steps": 3})], overwrite=True)
    attacks.register_ensemble("masking_ens", [("pgd", "pgd", {"steps": 3}), ("rsign", "rsign_free", {})],
                              overwrite=True)
    yield
    for name in ("rsign_free", "mini_ens", "masking_ens"):
        attacks.ATTACKS.pop(name, None)


def test_ensemble_rows_are_the_worst_case_of_member_rows(registered, tmp_path):
    models, data, _, settings = sweep_runner.build()
    specs = S.parse_attacks("fgsm,mini_ens")
    assert [label for label, _ in specs[1].members] == ["fgsm", "pgd"] and specs[1].members[0][1] == specs[0]
    S.run_sweep(models, data, specs, settings, tmp_path, progress=False)
    rows = R.load_records(tmp_path)
    by = {}
    for r in rows:
        by.setdefault((r["model"], r["attack"], r["eps"], r["tolerance"]), r)
    assert {r["attack"] for r in rows} == {"fgsm", "pgd", "mini_ens"}
    assert len({r["cell"] for r in rows if r["attack"] == "fgsm"}) == 2 * 3  # fgsm computed once, not twice
    for (model, attack, eps, tol), r in by.items():
        if attack != "mini_ens":
            continue
        for member in ("fgsm", "pgd"):
            m = by[(model, member, eps, tol)]
            assert r["n_correct"] <= m["n_correct"] and r["n_robust"] <= m["n_robust"]
    # Per sample: correct only if every member leaves it correct; the shift is the largest.
    cell = next(r["cell"] for r in rows if r["attack"] == "mini_ens" and r["eps"] > 0)
    info = R.read_cell(tmp_path, cell)
    members = {label: R.read_cell(tmp_path, c)["samples"] for label, c in info["meta"]["members"]}
    s = info["samples"]
    np.testing.assert_array_equal(s["correct"], members["fgsm"]["correct"] & members["pgd"]["correct"])
    np.testing.assert_array_equal(s["shift"], np.maximum(members["fgsm"]["shift"], members["pgd"]["shift"]))
    summary = json.loads((tmp_path / "summary.json").read_text())
    ens = [g for g in summary["groups"] if g["attack"] == "mini_ens"]
    assert ens and ens[0]["member_shares"]["labels"] == ["fgsm", "pgd"]
    assert "Worst case by member" in (tmp_path / "summary.md").read_text()


class _Blind(nn.Module):
    """A detector with a hard threshold: its input gradient is zero everywhere."""

    @nn.compact
    def __call__(self, x, train: bool = False):
        s = jax.lax.stop_gradient(x.mean(axis=(1, 2, 3)) - 0.5) * 20.0 + 0.0 * nn.Dense(1)(x.reshape(len(x), -1))[:, 0]
        return jnp.stack([-s, s], -1)


def test_gradient_masking_is_suspected_when_the_gradient_free_member_wins(registered, tmp_path):
    det = Detector("blind", _Blind(), (8, 8, 3))
    rng = np.random.default_rng(0)
    x = rng.integers(100, 156, size=(40, 8, 8, 3), dtype=np.uint8)  # mean pixel near 0.5: easy to flip
    y = ((x.astype(np.float32) / 255).mean(axis=(1, 2, 3)) > 0.5).astype(np.int32)
    data = S.SweepData("toy", "test", x, y, np.arange(40))
    settings = S.SweepSettings(eps=(0.0, 0.05), tolerance=(0.0, 1.0), batch_size=8)
    S.run_sweep([S.ModelEntry("blind", det, det.init(jax.random.key(0)))], data, S.parse_attacks("masking_ens"),
                settings, tmp_path, progress=False)
    flags = {r["attack"]: r["health"] for r in R.load_records(tmp_path)}
    assert "gradient_masking_suspected" in flags["masking_ens"]
    assert "gradient_masking_suspected" not in flags["pgd"]


def test_apgd_convergence_is_stored_and_an_unconverged_run_is_flagged(tmp_path):
    """APGD's per-sample 'best loss still rising at the end' reaches the cell files; a run of
    two steps on samples it cannot break is flagged, a converged one is not."""
    models, data, _, settings = sweep_runner.build()
    short = S.SweepSettings(eps=(0.001,), tolerance=settings.tolerance, batch_size=8, seed=settings.seed)
    S.run_sweep(models[:1], data, S.parse_attacks("apgd(steps=2),apgd(steps=40)"), short, tmp_path, progress=False)
    rows = R.load_records(tmp_path)
    by_steps = {r["attack_params"]["steps"]: r for r in rows}
    info = R.read_cell(tmp_path, by_steps[2]["cell"])
    assert info["samples"]["still_improving"].dtype == bool
    assert "attack_not_converged" in by_steps[2]["health"]
    assert "attack_not_converged" not in by_steps[40]["health"]
