"""A hostile user's sweep folder: every class of fault ends in a recomputation or a clear
refusal, never in a silently wrong row (the reliability issue, class 1 and 2)."""

from __future__ import annotations

import json
import shutil

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rrjax import records as R
from rrjax import sweep as S
from rrjax.models.base import Detector
from tests import sweep_runner


def _rerun(out):
    models, data, attacks, settings = sweep_runner.build()
    S.run_sweep(models, data, attacks, settings, out, progress=False)


def test_an_edited_cell_value_is_recomputed_not_recorded(reference, tmp_path):
    out = tmp_path / "copy"
    shutil.copytree(reference, out)
    marker = sorted((out / "cells").glob("*.json"))[0]
    info = json.loads(marker.read_text())
    info["meta"]["eps"] = 0.5  # a phantom ε ...
    info["meta"]["model"] = "phantom"  # ... of a phantom model
    marker.write_text(json.dumps(info))
    _rerun(out)
    assert (out / "records.jsonl").read_bytes() == (reference / "records.jsonl").read_bytes()


def test_edited_partial_and_clean_files_are_recomputed(reference, tmp_path):
    """Files whose content reaches a record carry their hash: a valid-looking but edited clean
    pass or chunk is recomputed, and a corrupt one no longer crashes the sweep."""
    models, data, attacks, settings = sweep_runner.build()
    out = tmp_path / "run"
    S.run_sweep(models, data, attacks, settings, out, progress=False, stop_after_chunks=4)
    part = sorted((out / "partial").rglob("*.npz"))[0]
    z = dict(np.load(part))
    z["shift"] = np.zeros_like(z["shift"])  # "nobody moved": a well-formed lie
    np.savez(part, **z)
    for clean in (out / "clean").glob("*.npz"):
        clean.write_bytes(b"PK\x03\x04 not a zip")  # BadZipFile on every rerun, before
    S.run_sweep(models, data, attacks, settings, out, progress=False)
    assert (out / "records.jsonl").read_bytes() == (reference / "records.jsonl").read_bytes()


def test_a_second_checkpoint_under_the_same_label_is_refused(reference, tmp_path):
    out = tmp_path / "copy"
    shutil.copytree(reference, out)
    models, data, attacks, settings = sweep_runner.build()
    other = S.ModelEntry("a", models[1].detector, models[1].variables, "ck/other", "f" * 64)
    before = sorted(p.name for p in (out / "cells").iterdir())
    with pytest.raises(ValueError, match="already holds results of model label 'a' from another checkpoint"
                                         ".*--replace_models=a"):
        S.run_sweep([other], data, attacks[:1], settings, out, progress=False)
    assert sorted(p.name for p in (out / "cells").iterdir()) == before  # nothing written
    S.run_sweep([other], data, attacks[:1], settings, out, progress=False, replace_models=["a"])
    rows = R.load_records(out)
    assert {r["checkpoint_sha256"] for r in rows if r["model"] == "a"} == {"f" * 64}
    summary = json.loads((out / "summary.json").read_text())
    assert all(len(set(g["eps"])) == len(g["eps"]) for g in summary["groups"])  # no ε listed twice


class _NanAbove(nn.Module):
    """A linear detector whose logits are NaN for bright inputs (mean pixel > threshold)."""

    threshold: float

    @nn.compact
    def __call__(self, x, train: bool = False):
        m = x.mean(axis=(1, 2, 3))
        s = nn.Dense(1)(x.reshape(len(x), -1) - 0.5)[:, 0]
        s = jnp.where(m > self.threshold, jnp.nan, s)
        return jnp.stack([-s, s], -1)


def _nan_model(threshold):
    det = Detector("nan_above", _NanAbove(threshold), (8, 8, 3))
    return S.ModelEntry("nan", det, det.init(jax.random.key(0)), "", "0" * 64)


def test_nonfinite_outputs_are_left_out_and_said_so(tmp_path):
    _, data, _, _ = sweep_runner.build()
    means = data.x.astype(np.float32).mean(axis=(1, 2, 3)) / 255
    top = np.sort(means)[-4:]
    threshold = float((top[0] + top[1]) / 2)  # the 3 brightest samples give NaN logits
    settings = S.SweepSettings(eps=(0.0, 0.05), tolerance=(0.0, 1.0), batch_size=8)
    S.run_sweep([_nan_model(threshold)], data, S.parse_attacks("fgsm,pgd(steps=2)"), settings, tmp_path,
                progress=False)
    rows = [r for r in R.load_records(tmp_path) if r["eps"] == 0.0]
    assert {r["n"] for r in rows} == {len(data.x) - 3}  # no verdict for them: not in n
    assert all("nonfinite_probabilities" in r["health"] for r in rows)
    assert all(r["ra"] == r["n_correct"] / r["n"] for r in rows)
    md = (tmp_path / "summary.md").read_text()
    assert f"of {len(data.x)} samples had NaN/inf outputs at some ε and were left out" in md and "per ε: 0: 3," in md


def test_a_detector_that_is_nan_everywhere_is_refused(tmp_path):
    _, data, _, _ = sweep_runner.build()
    settings = S.SweepSettings(eps=(0.0, 0.05), tolerance=(0.0, 1.0), batch_size=8)
    with pytest.raises(ValueError, match="returns NaN or inf for every one of the 22 samples"):
        S.run_sweep([_nan_model(-1.0)], data, S.parse_attacks("fgsm"), settings, tmp_path, progress=False)
    assert not list(tmp_path.rglob("*.json"))


def test_a_corrupt_cell_of_another_run_does_not_break_finalise(reference, tmp_path):
    out = tmp_path / "copy"
    shutil.copytree(reference, out)
    stranger = R.cell_id({"another": "run"})
    (out / "cells" / f"{stranger}.json").write_text("{half a marker")
    S.finalise(out)
    assert not (out / "cells" / f"{stranger}.json").exists()
    assert (out / "records.jsonl").read_bytes() == (reference / "records.jsonl").read_bytes()


@pytest.mark.parametrize("make, message", [
    (lambda p: p.write_text("a file"), "is a file"),
    (lambda p: (p.mkdir(), p.chmod(0o500)), "is not writable"),
])
def test_unusable_out_dirs_are_refused_before_work(tmp_path, make, message):
    import os

    out = tmp_path / "out"
    make(out)
    models, data, attacks, settings = sweep_runner.build()
    if os.geteuid() == 0 and message == "is not writable":
        pytest.skip("root writes into read-only folders")
    with pytest.raises(ValueError, match=message):
        S.run_sweep(models, data, attacks, settings, out, progress=False)


@pytest.mark.parametrize("budget, message", [(1e-6, "cannot hold one"), (1e308, r"expected a number <= 1e\+09")])
def test_memory_budgets_that_cannot_work_are_refused_before_work(tmp_path, budget, message):
    models, data, attacks, settings = sweep_runner.build()
    with pytest.raises(ValueError, match=message):
        bad = S.SweepSettings(eps=settings.eps, tolerance=settings.tolerance, memory_budget_mb=budget)
        S.run_sweep(models, data, attacks, bad, tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()


def test_repeated_grid_values_are_refused_at_parse_time():
    with pytest.raises(ValueError, match="tolerance has repeated values"):
        S.SweepSettings(eps=(0.0,), tolerance=(0.1, 0.5, 0.1))
    with pytest.raises(ValueError, match="repeated values"):
        S.parse_attacks("cw_l2(eps=0;0.5;0.5)")
    assert S.parse_attacks("cw_l2(eps=0;0.5;1)")[0].eps == (0.0, 0.5, 1.0)
