"""rrjax.bench.device: the accelerator check's --quick form (CPU, seconds) so that it cannot rot."""

import json
import os
import pathlib
import shutil
import subprocess
import sys

import pytest

from rrjax.bench import device as D

REPO = pathlib.Path(__file__).resolve().parents[2]


def test_device_file_names():
    assert D.device_file_name("NVIDIA H200") == "NVIDIA_H200"
    assert D.device_file_name("TPU v5 lite") == "TPU_v5_lite"
    assert D.device_file_name("cpu") == "cpu"
    assert D.device_file_name("/") == "device"


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_quick_accelerator_check_writes_one_table(tmp_path):
    """``make accelerator-check ACCEL_FLAGS=--quick``, with this interpreter and the venv stamp
    taken as up to date (``-o``), so the Makefile target itself is what runs."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        ["make", "-C", str(REPO), "-o", ".venv/.base-installed", "accelerator-check",
         f"BIN={pathlib.Path(sys.executable).parent}", "ACCEL_FLAGS=--quick", f"ACCEL_OUT={tmp_path / 'acc'}"],
        capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    md = (tmp_path / "acc" / "cpu.md").read_text()
    assert md.startswith("### Accelerator check: cpu (cpu)")
    tables = [ln for ln in md.splitlines() if ln.startswith("| section |")]
    assert len(tables) == 1  # ONE table
    report = json.loads((tmp_path / "acc" / "cpu.json").read_text())
    rows = report["bench"]["rows"]
    assert {(r["dtype"], r["attack"], r["contender"]) for r in rows if r["section"] == "attack"} == {
        (d, a, c) for d in ("float32", "bfloat16") for a in ("fgsm", "pgd") for c in ("rrjax-grid", "rrjax-per-eps")}
    assert all(r["note"].endswith("PASS") for r in rows if r["contender"] == "rrjax-grid")
    assert {r["dtype"] for r in rows if r["section"] == "matmul peak"} == {"float32", "bfloat16"}
    (group,) = report["sweep"]["groups"]  # the shipped Meso4 on 4 synthetic images, FGSM at 2 ε
    assert group["attack"] == "fgsm" and group["n"] == 4 and group["eps"] == pytest.approx([0.0, 0.01]) and group["ra"][0] > 0
    assert "| sweep | meso4 | float32 | fgsm | experiments/sweep.py | 4 | 2 |" in md
