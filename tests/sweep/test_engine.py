"""The sweep engine: records agree with rrjax.evaluate, resume after SIGKILL, multi-device and
multi-process runs equal the single-device run, budgets change chunking not results."""

from __future__ import annotations

import json
import signal
import socket
import time

import jax
import numpy as np
import pytest

import rrjax
from rrjax import records as R
from rrjax import sweep as S
from rrjax.sweep import engine, plan
from tests import sweep_runner
from tests.sweep.conftest import _runner

def test_records_match_evaluate(reference):
    models, data, attacks, settings = sweep_runner.build()
    rows = R.load_records(reference)
    assert len(rows) == len(models) * len(attacks) * len(settings.eps) * len(settings.tolerance)
    x = data.x.astype(np.float32) / 255
    keys = jax.vmap(lambda i: jax.random.fold_in(jax.random.key(settings.seed), i))(np.asarray(data.index, np.uint32))
    for m in models:
        for a in attacks:
            res = rrjax.evaluate(m.detector.logits_fn(m.variables), x, data.y, attack=a.name, eps=settings.eps,
                                 tolerance=settings.tolerance, key=keys, **a.kwargs)
            mine = sorted((r for r in rows if r["model"] == m.label and r["attack"] == a.name),
                          key=lambda r: (r["eps"], r["tolerance"]))
            np.testing.assert_allclose([r["ra"] for r in mine[:: len(settings.tolerance)]], res.ra)
            np.testing.assert_allclose(np.array([r["rr"] for r in mine]).reshape(res.rr.shape), res.rr)
            assert all(r["threat_norm"] == a.threat_norm for r in mine)
    pgd_row = next(r for r in rows if r["attack"] == "pgd")
    assert pgd_row["attack_params"]["steps"] == 3 and pgd_row["attack_params"]["random_start"] is True



def test_resume_after_sigkill_gives_identical_records(reference, tmp_path):
    out = tmp_path / "killed"
    # Chunks slowed down (the attack itself is unchanged): on a fast machine the tiny sweep could
    # finish between two looks of this watcher.
    proc = _runner(out, "--batch_size", 2, "--chunk_delay", 0.3)
    deadline = time.time() + 240
    while time.time() < deadline:
        parts = list((out / "partial").glob("*/*.npz")) if (out / "partial").exists() else []
        if len(parts) >= 6:
            break
        if proc.poll() is not None:
            pytest.fail("the sweep finished before it could be killed:\n" + proc.stdout.read().decode())
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (out / "records.jsonl").exists() or R.load_records(out) is not None
    # A torn partial file (as a crash mid-write on another filesystem could leave) is ignored.
    torn = next((out / "partial").glob("*/*.npz"))
    torn.write_bytes(torn.read_bytes()[:40])
    resumed = _runner(out, "--batch_size", 2)
    log = resumed.communicate(timeout=400)[0].decode()
    assert resumed.returncode == 0, log
    assert (out / "records.jsonl").read_bytes() == (reference / "records.jsonl").read_bytes()
    assert (out / "records.csv").read_bytes() == (reference / "records.csv").read_bytes()
    assert (out / "comparisons.jsonl").read_bytes() == (reference / "comparisons.jsonl").read_bytes()



def test_eight_devices_equal_one(reference, tmp_path):
    proc = _runner(tmp_path, env={"XLA_FLAGS": "--xla_force_host_platform_device_count=8"})
    log = proc.communicate(timeout=400)[0].decode()
    assert proc.returncode == 0 and "devices 8" in log, log
    assert (tmp_path / "records.jsonl").read_bytes() == (reference / "records.jsonl").read_bytes()



def test_two_processes_equal_one(reference, tmp_path):
    with socket.socket() as s:
        s.bind(("localhost", 0))
        port = s.getsockname()[1]
    procs = [_runner(tmp_path, "--process_id", i, "--num_processes", 2, "--port", port) for i in range(2)]
    logs = [p.communicate(timeout=400)[0].decode() for p in procs]
    assert all(p.returncode == 0 for p in procs), logs
    assert all("processes 2" in log for log in logs), logs
    assert (tmp_path / "records.jsonl").read_bytes() == (reference / "records.jsonl").read_bytes()



def test_new_tolerance_grid_rederives_rows_without_attacking(reference, tmp_path, monkeypatch):
    import shutil

    out = tmp_path / "copy"
    shutil.copytree(reference, out)
    models, data, attacks, settings = sweep_runner.build()

    def no_attack(*args, **kwargs):
        raise AssertionError("no attack should run: every cell is finished")

    monkeypatch.setattr(engine, "attack_chunk", no_attack)
    new = S.SweepSettings(eps=settings.eps, tolerance=(0.0, 0.5), batch_size=4, seed=settings.seed, strict=True)
    S.run_sweep(models, data, attacks, new, out, progress=False)
    rows = R.load_records(out)
    assert sorted({r["tolerance"] for r in rows}) == [0.0, 0.5] and all(r["strict"] for r in rows)
    assert len(rows) == 2 * 3 * 3 * 2



def test_corrupt_cell_is_recomputed(reference, tmp_path, caplog):
    import shutil

    out = tmp_path / "copy"
    shutil.copytree(reference, out)
    victim = sorted((out / "cells").glob("*.npz"))[0]
    victim.write_bytes(victim.read_bytes()[:-7])
    models, data, attacks, settings = sweep_runner.build()
    S.run_sweep(models, data, attacks, settings, out, progress=False)
    assert (out / "records.jsonl").read_bytes() == (reference / "records.jsonl").read_bytes()



def test_memory_budget_changes_chunking_not_results(reference, tmp_path):
    models, data, attacks, settings = sweep_runner.build()
    tight = S.SweepSettings(eps=settings.eps, tolerance=settings.tolerance, seed=settings.seed, batch_size=64,
                            memory_budget_mb=0.05)
    S.run_sweep(models, data, attacks, tight, tmp_path, progress=False)
    assert (tmp_path / "records.jsonl").read_bytes() == (reference / "records.jsonl").read_bytes()



def test_health_flags_fire(tmp_path):
    """A model with no input gradient: the attack cannot move it, and the sweep says so."""
    import flax.linen as nn

    from rrjax.models.base import Detector

    class Blind(nn.Module):  # a detector with a hard threshold: zero input gradient everywhere
        @nn.compact
        def __call__(self, x, train: bool = False):
            s = jax.lax.stop_gradient(x.mean(axis=(1, 2, 3)) - 0.5) * nn.Dense(1)(jnp_ones(x))[:, 0]
            return jax.numpy.stack([-s, s], -1)

    def jnp_ones(x):
        return jax.numpy.ones((x.shape[0], 1))

    det = Detector("blind", Blind(), (8, 8, 3))
    variables = det.init(jax.random.key(0))
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(10, 8, 8, 3), dtype=np.uint8)
    y = ((x.astype(np.float32) / 255).mean(axis=(1, 2, 3)) > 0.5).astype(np.int32)
    data = S.SweepData("toy", "test", x, y, np.arange(10))
    settings = S.SweepSettings(eps=(0.0, 0.1), tolerance=(0.0, 1.0), batch_size=8)
    S.run_sweep([S.ModelEntry("blind", det, variables)], data, S.parse_attacks("fgsm,pgd(steps=2,random_start=false)"), settings,
                tmp_path, progress=False)
    flags = {r["attack"]: set(r["health"].split(";")) for r in R.load_records(tmp_path)}
    assert {"gradient_masking", "no_success_at_max_eps"} <= flags["pgd"]
    assert {"gradient_masking", "no_success_at_max_eps"} <= flags["fgsm"]
    assert "gradient_masking" in (tmp_path / "summary.md").read_text()



def test_seed_is_recorded_and_determines_the_records(reference, tmp_path):
    models, data, _, settings = sweep_runner.build()
    attacks = S.parse_attacks("pgd(steps=3)")
    again = S.SweepSettings(eps=settings.eps, tolerance=settings.tolerance, seed=settings.seed, batch_size=8)
    other = S.SweepSettings(eps=settings.eps, tolerance=settings.tolerance, seed=settings.seed + 1, batch_size=8)
    S.run_sweep(models[:1], data, attacks, again, tmp_path / "same", progress=False)
    S.run_sweep(models[:1], data, attacks, other, tmp_path / "other", progress=False)
    ref = [r for r in R.load_records(reference) if r["model"] == "a" and r["attack"] == "pgd"]
    same, diff = R.load_records(tmp_path / "same"), R.load_records(tmp_path / "other")
    strip = lambda rows: [{k: v for k, v in r.items() if k != "health"} for r in rows]  # noqa: E731
    assert strip(same) == strip(ref)  # bit-identical numbers, other chunking
    assert {r["seed"] for r in same} == {3} and {r["seed"] for r in diff} == {4}
    shifts = lambda out: np.concatenate([R.load_samples(out, c)["shift"] for c in R.finished_cells(out)])  # noqa: E731
    assert not np.array_equal(shifts(tmp_path / "same"), shifts(tmp_path / "other"))  # random starts differ



def test_dataset_source_is_part_of_the_cell(reference, tmp_path):
    """Different pixels under the same dataset name (e.g. another compression) never reuse cells."""
    import dataclasses
    import shutil

    out = tmp_path / "copy"
    shutil.copytree(reference, out)
    models, data, _, settings = sweep_runner.build()
    other = dataclasses.replace(data, source="synthetic_images/other-config")
    before = len(R.finished_cells(out))
    S.run_sweep(models[:1], other, S.parse_attacks("fgsm"), settings, out, progress=False)
    assert len(R.finished_cells(out)) == before + len(settings.eps)



def test_runs_with_other_norms_or_seeds_keep_their_own_labels(tmp_path):
    models, data, _, settings = sweep_runner.build()
    attacks = S.parse_attacks("fgsm")
    for norm, seed in (("linf", 3), ("l1", 3), ("linf", 4)):
        s = S.SweepSettings(eps=(0.0, 0.1), tolerance=(0.0, 0.5), shift_norm=norm, seed=seed)
        S.run_sweep(models[:1], data, attacks, s, tmp_path, progress=False)
    rows = R.load_records(tmp_path)
    assert sorted({(r["shift_norm"], r["seed"]) for r in rows}) == [("l1", 3), ("linf", 3), ("linf", 4)]
    by = {(r["shift_norm"], r["seed"], r["eps"], r["tolerance"]): r for r in rows}
    # l1 shifts are twice the linf ones for two classes: RR(0.5) under l1 <= under linf.
    assert by[("l1", 3, np.float32(0.1).item(), 0.5)]["rr"] <= by[("linf", 3, np.float32(0.1).item(), 0.5)]["rr"]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert len(summary["groups"]) == 3



def test_eps_groups_under_a_tight_budget_give_the_same_records(reference, tmp_path):
    """A budget too small for one sample with the whole ε grid: ε runs in groups (lax.map)."""
    models, data, attacks, settings = sweep_runner.build()
    grad = plan.per_sample_grad_bytes(models[0].detector, models[0].variables)
    input_bytes = 4 * int(np.prod(data.x.shape[1:]))
    unit, outputs = grad + 6 * input_bytes, len(settings.eps) * input_bytes * 2
    budget = outputs + 1.5 * unit
    assert S.plan_chunk("pgd", len(settings.eps), grad, input_bytes, n_devices=1, batch_size=4,
                        budget_bytes=budget) == (1, 1)
    tight = S.SweepSettings(eps=settings.eps, tolerance=settings.tolerance, seed=settings.seed,
                            memory_budget_mb=budget / 2**20)
    S.run_sweep(models, data, attacks, tight, tmp_path, progress=False)
    assert (tmp_path / "records.jsonl").read_bytes() == (reference / "records.jsonl").read_bytes()



@pytest.mark.parametrize("stops", [(1, 9), (13,), (30,)])
def test_stopping_anywhere_then_resuming_gives_the_same_records(reference, tmp_path, stops):
    """Stops inside the first attack, after whole (model, attack) groups finished, and inside
    the second model; one resume starts with a different set of pending ε values."""
    models, data, attacks, settings = sweep_runner.build()
    sub = S.SweepSettings(eps=settings.eps[1:2], tolerance=settings.tolerance, seed=settings.seed, batch_size=4)
    S.run_sweep(models, data, attacks[:1], sub, tmp_path, progress=False)  # one ε of one attack first
    for stop in stops:
        S.run_sweep(models, data, attacks, settings, tmp_path, progress=False, stop_after_chunks=stop)
    S.run_sweep(models, data, attacks, settings, tmp_path, progress=False)
    assert (tmp_path / "records.jsonl").read_bytes() == (reference / "records.jsonl").read_bytes()



def test_an_attack_can_bring_its_own_eps_grid(tmp_path):
    models, data, _, settings = sweep_runner.build()
    attacks = S.parse_attacks("fgsm,cw_l2(steps=10,binary_search_steps=2,eps=0:1:3)")
    assert attacks[1].eps == (0.0, 0.5, 1.0) and "eps" not in attacks[1].kwargs
    S.run_sweep(models[:1], data, attacks, settings, tmp_path, progress=False)
    rows = R.load_records(tmp_path)
    assert sorted({r["eps"] for r in rows if r["attack"] == "cw_l2"}) == [0.0, 0.5, 1.0]
    assert sorted({r["eps"] for r in rows if r["attack"] == "fgsm"}) == sorted(np.float32(e).item() for e in settings.eps)
    assert {r["threat_norm"] for r in rows if r["attack"] == "cw_l2"} == {"l2"}


