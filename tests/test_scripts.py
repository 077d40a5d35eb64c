"""The command-line entry points end to end, and one clear line for every class of bad flag."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import jax
import pytest

from rrjax import checkpoints, records
from rrjax.models import get_model

REPO = pathlib.Path(__file__).resolve().parents[1]


def _run(script, *args, timeout=600):
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    return subprocess.run([sys.executable, str(REPO / "experiments" / script), *args], capture_output=True,
                          text=True, cwd=REPO, env=env, timeout=timeout)


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    det = get_model("meso4", image_size=32)
    variables = jax.jit(det.init)(jax.random.key(0))
    return checkpoints.save(tmp_path_factory.mktemp("ck") / "meso4", det, variables, metadata={"note": "random init"})


def test_sweep_script_end_to_end(tiny_checkpoint, tmp_path):
    out = tmp_path / "sweep"
    data = [f"--data_dir={tmp_path / 'data'}", "--dataset=synthetic_images", "--dataset_config=image_size=32",
            "--dataset_config=train_size=0", "--dataset_config=validation_size=0", "--dataset_config=test_size=6",
            "--eps=0:0.1:3", "--tolerance=0:1:5", f"--out_dir={out}", "--progress=false"]
    both = [f"--models=m={tiny_checkpoint},n={tiny_checkpoint}", "--attacks=fgsm,pgd(steps=2)"]
    res = _run("sweep.py", *both, *data)
    assert res.returncode == 0, res.stderr[-3000:]
    rows = records.load_records(out)
    assert len(rows) == 2 * 2 * 3 * 5 and {r["model"] for r in rows} == {"m", "n"} and rows[0]["n"] == 6
    # --unroll=auto on the CPU backend: PGD's short loop is unrolled, and the records say so.
    assert {r["attack_params"].get("unroll") for r in rows if r["attack"] == "pgd"} == {True}
    assert rows[0]["checkpoint_sha256"] == checkpoints.read_metadata(tiny_checkpoint)["content_sha256"]
    assert "records:" in res.stdout and "figures:" in res.stdout
    assert any((out / "figures").glob("rr_ra_*.png"))
    again = _run("sweep.py", *both, *data, "--figures=false")
    assert again.returncode == 0 and records.load_records(out) == rows  # resumed: nothing recomputed differs
    # Another run into the same directory (another sample set): its figures draw its own cells,
    # not an ambiguous mix of both runs' rows.
    other = _run("sweep.py", f"--models=m={tiny_checkpoint}", "--attacks=fgsm", *data, "--num_samples=4",
                 "--figure_formats=png")
    assert other.returncode == 0, other.stderr[-3000:]
    assert {r["n"] for r in records.load_records(out)} == {4, 6} and "figures:" in other.stdout
    report = _run("report.py", f"--sweep={out}", "--linearity_eps=0.05")
    assert report.returncode == 0, report.stderr[-2000:]
    assert "## Linearity of RR in the tolerance" in report.stdout and "| m | synthetic_images | pgd (L∞, 2 steps) | 6 |" in report.stdout
    # Two labels of one checkpoint: identical per-sample shifts, so the R² difference is 0.
    assert "| pgd (L∞, 2 steps) | 0.05 | m (synthetic_images) | n (synthetic_images) |" in report.stdout
    line = next(l for l in report.stdout.splitlines() if l.startswith("| pgd (L∞, 2 steps) | 0.05 | m"))
    assert "| +0.000 [" in line


def test_sweep_script_two_processes_match_one(tiny_checkpoint, tmp_path):
    """--distributed with two local processes (gloo) writes the records a single process writes."""
    import socket

    common = [f"--models=m={tiny_checkpoint}", "--dataset=synthetic_images", f"--data_dir={tmp_path / 'data'}",
              "--dataset_config=image_size=32", "--dataset_config=train_size=0", "--dataset_config=validation_size=0",
              "--dataset_config=test_size=6", "--attacks=pgd(steps=2)", "--eps=0:0.1:3", "--tolerance=0:1:5",
              "--progress=false", "--figures=false"]
    with socket.socket() as sock:
        sock.bind(("localhost", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    procs = [subprocess.Popen([sys.executable, str(REPO / "experiments" / "sweep.py"), *common,
                               f"--out_dir={tmp_path / 'two'}", "--distributed",
                               f"--coordinator_address=localhost:{port}", "--num_processes=2", f"--process_id={i}"],
                              cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for i in range(2)]
    logs = [p.communicate(timeout=600)[0] for p in procs]
    # Both processes started on an empty data dir: process 0 builds it, the other waits.
    assert all(p.returncode == 0 for p in procs), [log[-2000:] for log in logs]
    single = _run("sweep.py", *common, f"--out_dir={tmp_path / 'one'}")
    assert single.returncode == 0, single.stderr[-2000:]
    assert (tmp_path / "two" / "records.jsonl").read_bytes() == (tmp_path / "one" / "records.jsonl").read_bytes()


BAD_SWEEP_FLAGS = [
    (["--eps=0:0.2"], "--eps='0:0.2' is malformed"),
    (["--eps=0.1,-0.1"], "--eps has value -0.1 < 0"),
    (["--tolerance=nan"], "--tolerance contains NaN or inf"),
    (["--attacks=deepfool"], "unknown attack 'deepfool'; valid attacks: apgd, autoattack, cw_bounded, cw_l2, fgsm, pgd, square"),
    (["--attacks=pgd(steps=2"], "is malformed"),
    (["--attacks=pgd(norm=l1)"], "norm='l1' is not valid; expected one of 'linf', 'l2'"),
    (["--attacks=cw_l2(stepz=3)"], "attack 'cw_l2' has no hyperparameter(s) ['stepz']"),
    (["--attacks=cw_bounded(loss=ce)"], "cw_bounded always uses the CW margin loss"),
    (["--models=nowhere/ckpt"], "checkpoint 'nowhere/ckpt' does not exist"),
    (["--dataset=imagenet"], "name='imagenet' is not valid; expected one of"),
    (["--dataset_config=sizes"], "--dataset_config='sizes' is not key=value"),
    (["--num_samples=0"], "--num_samples=0; expected an integer >= 1"),
    (["--figure_formats=png,svgz"], "--figure_formats has ['svgz']"),
    (["--num_samples=100"], "num_samples=100 but synthetic_images/test"),
    (["--tolerance=0,0.5,0.5"], "--tolerance has repeated values [0.5]"),
    (["--attacks=cw_l2(eps=0;1;1)"], "cw_l2 eps has repeated values [1.0]"),
    (["--memory_budget_mb=1e308"], "memory_budget_mb=1e+308 is out of range"),
    (["--memory_budget_mb=0.000001"], "cannot hold one"),
    (["--replace_models=zzz"], "--replace_models names ['zzz']"),
    (["--bogus_flag=1"], "Unknown command line flag 'bogus_flag'"),
    (["--batch_size=many"], "flag --batch_size=many: invalid literal"),
    (["stray_argument"], "unexpected arguments ['stray_argument']"),
]


@pytest.mark.parametrize("flags, message", BAD_SWEEP_FLAGS, ids=[m[:28] for _, m in BAD_SWEEP_FLAGS])
def test_sweep_script_rejects_bad_flags(tiny_checkpoint, tmp_path, flags, message):
    base = [f"--models={tiny_checkpoint}", f"--out_dir={tmp_path}", f"--data_dir={tmp_path / 'd'}",
            "--dataset_config=image_size=32", "--dataset_config=test_size=4", "--dataset_config=train_size=0",
            "--dataset_config=validation_size=0"]
    if any(f.startswith("--dataset_config") for f in flags):
        base = [b for b in base if not b.startswith("--dataset_config")]
    res = _run("sweep.py", *base, *flags)
    assert res.returncode == 2, res.stderr[-2000:]
    last = res.stderr.strip().splitlines()[-1]
    assert last.startswith("sweep.py: error: ") and message in last, last
    assert sum("error" in line.lower() for line in res.stderr.splitlines()) == 1, res.stderr[-2000:]
    assert not (tmp_path / "records.jsonl").exists() and not (tmp_path / "cells").exists()


def test_sweep_script_refuses_an_out_dir_that_is_a_file(tiny_checkpoint, tmp_path):
    (tmp_path / "taken").write_text("my notes")
    res = _run("sweep.py", f"--models={tiny_checkpoint}", f"--out_dir={tmp_path / 'taken'}")
    assert res.returncode == 2 and res.stderr.strip().splitlines()[-1].endswith(
        "is a file; expected a folder for the sweep (another --out_dir)"), res.stderr[-2000:]
    assert (tmp_path / "taken").read_text() == "my notes"


def test_convert_script_explains_a_pickled_module_in_one_line(tmp_path):
    import torch

    from tests.models import torch_refs as R

    torch.save(R.Meso4Ref(32), tmp_path / "whole.pth")  # a pickled nn.Module, as FaceForensics++ ships its Xception
    res = _run("convert_weights.py", "--model=meso4", "--image_size=32", f"--pth={tmp_path / 'whole.pth'}",
               f"--out={tmp_path / 'o'}")
    errors = [ln for ln in res.stderr.splitlines() if "convert_weights.py: error:" in ln]
    assert res.returncode == 2 and len(errors) == 1, res.stderr[-3000:]
    assert errors[0].startswith("convert_weights.py: error: torch.load(weights_only=True) refused")
    assert errors[0].endswith(f"torch.save(m.state_dict(), '{tmp_path / 'whole_state_dict.pth'}'); then convert "
                              f"'{tmp_path / 'whole_state_dict.pth'}'"), errors[0]
    assert not (tmp_path / "o").exists()


def test_convert_and_plot_scripts_reject_missing_paths(tmp_path):
    res = _run("convert_weights.py", "--model=meso4", f"--pth={tmp_path / 'none.pth'}", f"--out={tmp_path / 'o'}")
    assert res.returncode == 2 and "is not a file; expected a PyTorch .pth state dict" in res.stderr
    res = _run("plot.py", f"--records={tmp_path / 'nothing'}")
    assert res.returncode == 2 and "no records at" in res.stderr


@pytest.mark.parametrize("script", ["sweep.py", "train.py", "plot.py", "report.py", "convert_weights.py", "bench.py"])
def test_every_script_turns_a_bad_flag_into_one_line_and_status_2(script):
    res = _run(script, "--no_such_flag=1")
    lines = res.stderr.strip().splitlines()
    assert res.returncode == 2 and len(lines) == 1, res.stderr[-2000:]
    assert lines[0].startswith(f"{script}: error: ") and "no_such_flag" in lines[0]
