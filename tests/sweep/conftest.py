"""The tiny reference sweep shared by the sweep tests, and a subprocess runner."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import pytest

from rrjax import sweep as S
from tests import sweep_runner

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _runner(out, *args, env=None, **popen):
    cmd = [sys.executable, "-m", "tests.sweep_runner", str(out), *map(str, args)]
    full_env = {**os.environ, "JAX_PLATFORMS": "cpu", **(env or {})}
    return subprocess.Popen(cmd, cwd=ROOT, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, **popen)



@pytest.fixture(scope="session")
def reference(tmp_path_factory):
    """The tiny sweep, uninterrupted, in this process (1 device, chunks of 4)."""
    out = tmp_path_factory.mktemp("reference")
    models, data, attacks, settings = sweep_runner.build(batch_size=4)
    S.run_sweep(models, data, attacks, settings, out, progress=False)
    return out


