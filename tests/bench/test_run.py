"""experiments/bench.py -> rrjax.bench.run end to end: smoke runs (``--quick``) of the whole path.

The benchmark's timings and targets are checked by the benchmark itself (BENCHMARKS.md), never
here: these tests only check that the script runs and that what it compares is the same work.
"""

import json
import os
import pathlib
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]


def _bench(tmp_path, *flags):
    out, md = tmp_path / "bench.json", tmp_path / "bench.md"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, str(REPO / "experiments" / "bench.py"), "--quick", *flags, f"--json_out={out}",
         f"--markdown_out={md}"],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(out.read_text()), md.read_text()


@pytest.mark.slow
def test_quick_run_end_to_end(tmp_path):
    report, text = _bench(tmp_path, "--scale_n=4", "--repeats=0", "--nobreakdown", "--nomemory", "--nolayers")
    main = report["main"]
    assert {(r["attack"], r["contender"]) for r in main} >= {
        (a, c) for a in ("fgsm", "pgd") for c in ("rrjax-grid", "rrjax-per-eps", "torchattacks")
    } | {("cw", "rrjax-grid"), ("cw", "torchattacks")}
    # Same work: every contender reaches torchattacks' RA within one sample, and the check is
    # not vacuous (the attacks do change some predictions).
    assert all(r["equivalent"] for r in main if r["contender"] != "torchattacks")
    assert min(min(r["ra"]) for r in main) < 1.0
    assert [t[0].split(" ")[0] for t in report["targets"]] == ["FGSM", "PGD-2", "rrjax"]
    assert report["flops_per_step"] > 0 and report["peak"]["peak"] > 0
    assert "experiments/bench.py --quick" in text and "| target | measured | result |" in text


@pytest.mark.slow
def test_quick_sections_attack_step_layers_and_memory(tmp_path):
    report, text = _bench(tmp_path, "--attacks=fgsm", "--scale_e=", "--scale_n=", "--eps_max=0.01")
    assert report["eps_max"] == 0.01 and "scale_e" not in report
    steps = {r["what"] for r in report["breakdown"]}
    assert {"step: rrjax", "step: torch", "step: rrjax PGD-2, while loop", "step: rrjax PGD-2, unrolled"} <= steps
    kinds = {k["kind"]: k for k in report["layers"]["kinds"]}
    assert set(kinds) == {"stem conv", "conv", "BN", "activation", "pooling", "dense", "all layers"}
    assert kinds["conv"]["instances"] == 3 and all(k["torch_ms"] > 0 for k in kinds.values())
    (mem,) = report["memory"]  # the smoke run measures the PGD grid's process once
    assert mem["contender"] == "rrjax-grid" and mem["peak_mb"] >= mem["before_mb"] > 0
    assert "meso4's layers alone" in text and "Peak memory" in text


@pytest.mark.slow
def test_quick_xception_against_torchattacks(tmp_path):
    report, text = _bench(tmp_path, "--model=xception", "--image_size=32", "--n=2", "--attacks=fgsm", "--repeats=0", "--eps_max=0.001",
                          "--scale_e=", "--scale_n=", "--nobreakdown", "--nolayers", "--nomemory")
    assert {r["contender"] for r in report["main"]} == {"rrjax-grid", "rrjax-per-eps", "torchattacks"}
    assert all(r["equivalent"] for r in report["main"]) and min(min(r["ra"]) for r in report["main"]) < 1.0
    results = [t[2] for t in report["targets"]]
    assert [t[0].split(" ")[0] for t in report["targets"]] == ["FGSM", "PGD-2", "rrjax", "rrjax"]
    assert results[1:] == ["NOT RUN"] * 3  # PGD and the scaling table were not run: said, not hidden
    assert "xception 32px (PyTorch twin via rrjax.models.to_torch" in text


def test_importing_the_benchmark_needs_no_pytorch():
    code = "import sys, rrjax.bench; assert 'torch' not in sys.modules and 'torchattacks' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=300)


def test_bad_flags_fail_with_one_line(tmp_path):
    proc = subprocess.run([sys.executable, str(REPO / "experiments" / "bench.py"), "--n=0"], capture_output=True,
                          text=True, env={**os.environ, "PYTHONPATH": str(REPO)}, cwd=tmp_path, timeout=300)
    assert proc.returncode == 2 and "bench.py: error: n=0 is too small" in proc.stderr
