"""Records do not change under refactoring: the demo's settings at small N against committed files.

``tests/golden/`` holds ``records.jsonl`` and ``comparisons.jsonl`` of ``make demo``'s two sweeps
(same checkpoints, attacks, ε and tolerance grids, unroll=auto) on 6 images and 4 clips, written
by the code as it stood before the design reshaping (issue 12). Every record field is derived
from integer counts (n_correct, n_robust, clean accuracy) and the definitions of the cells, so
the files are byte-identical across machines unless a count or a cell definition changes. A
change that alters them on purpose regenerates them with::

    RRJAX_REGENERATE_GOLDEN=1 .venv/bin/python -m pytest tests/test_golden_records.py

and says why in BUILD_NOTES.md ("Golden records").
"""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
GOLDEN = REPO / "tests" / "golden"
FILES = ("records.jsonl", "comparisons.jsonl")

COMMON = ["--tolerance=0:1:21", "--eps=0,0.001,0.002,0.004,0.008,0.016,0.05,0.2",
          "--attacks=fgsm,pgd(steps=10),cw_bounded(steps=10)", "--figures=false", "--progress=false"]
IMAGES = ["--models=checkpoints/meso4,checkpoints/meso_inception4", "--dataset=synthetic_images",
          "--dataset_config=image_size=64", "--dataset_config=train_size=0", "--dataset_config=validation_size=0",
          "--dataset_config=test_size=6", "--num_samples=6"]
CLIPS = ["--models=checkpoints/meso4_video", "--dataset=synthetic_videos", "--dataset_config=image_size=64",
         "--dataset_config=num_frames=8", "--dataset_config=train_size=0", "--dataset_config=validation_size=0",
         "--dataset_config=test_size=4", "--num_samples=4"]


@pytest.mark.slow
def test_demo_records_are_byte_identical_to_golden(tmp_path):
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    out = tmp_path / "demo"
    for job in (IMAGES, CLIPS):
        res = subprocess.run([sys.executable, "experiments/sweep.py", *COMMON, *job, f"--out_dir={out}",
                              f"--data_dir={tmp_path / 'data'}"], cwd=REPO, env=env, capture_output=True,
                             text=True, timeout=900)
        assert res.returncode == 0, res.stderr[-3000:]
    if os.environ.get("RRJAX_REGENERATE_GOLDEN"):
        GOLDEN.mkdir(exist_ok=True)
        for name in FILES:
            shutil.copy(out / name, GOLDEN / name)
    for name in FILES:
        got, want = (out / name).read_bytes(), (GOLDEN / name).read_bytes()
        assert got == want, f"{name} differs from tests/golden/{name}; see this test's docstring"
