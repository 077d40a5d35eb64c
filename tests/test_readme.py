"""The README's Python examples run as written (in a fresh interpreter, as a reader would)."""

from __future__ import annotations

import os
import pathlib
import re
import subprocess
import sys

REPO = pathlib.Path(__file__).resolve().parents[1]
README = REPO / "README.md"


def test_readme_python_blocks_run(tmp_path):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert blocks, "README has no python examples"
    # Later blocks continue from earlier ones, as a reader would; a fresh process keeps the
    # registrations they make away from the other tests.
    script = tmp_path / "readme_blocks.py"
    script.write_text("\n".join(blocks))
    res = subprocess.run([sys.executable, str(script)], cwd=REPO, capture_output=True, text=True, timeout=600,
                         env={**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(REPO)})
    assert res.returncode == 0, res.stderr[-3000:]
