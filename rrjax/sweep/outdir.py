"""The sweep directory before any work: it must be a writable folder, and a model label in it
stands for one checkpoint (a second checkpoint under the same label would be merged with the
first into one curve, one summary, one set of health flags)."""

from __future__ import annotations

import json
import os
import pathlib
import shutil
from collections.abc import Sequence

from absl import logging

from rrjax import records as R
from rrjax.sweep.spec import ModelEntry

__all__ = ["check_out_dir", "labels_in", "replace_models"]


def _writable(out: pathlib.Path) -> None:
    if out.exists() and not out.is_dir():
        raise ValueError(f"out_dir={str(out)!r} is a file; expected a folder for the sweep (another --out_dir)")
    probe = out
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise ValueError(f"out_dir={str(out)!r} cannot be created: {str(probe)!r} is a file")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise ValueError(f"out_dir={str(out)!r} is not writable ({str(probe)!r} is read-only for this user); "
                         "choose another --out_dir or fix its permissions")


def labels_in(out_dir: str | os.PathLike) -> dict[str, dict[str, str]]:
    """label -> {checkpoint_sha256: checkpoint path} of the finished cells in a sweep folder."""
    out = pathlib.Path(out_dir)
    found: dict[str, dict[str, str]] = {}
    for cell in R.finished_cells(out):
        try:
            meta = json.loads((out / "cells" / f"{cell}.json").read_text())["meta"]
            found.setdefault(meta["model"], {})[meta["checkpoint_sha256"]] = meta.get("checkpoint", "")
        except (OSError, ValueError, KeyError, TypeError):
            continue  # a corrupt cell is the sweep's to recompute, not a binding
    return found


def check_out_dir(out_dir: str | os.PathLike, models: Sequence[ModelEntry], *,
                  replace: Sequence[str] = ()) -> None:
    """Refuses, before anything is written, a sweep folder the run could not use honestly.

    Raises:
      ValueError: ``out_dir`` is a file, cannot be created or is read-only; or a model label
        already stands for another checkpoint in it (unless the label is in ``replace``).
    """
    out = pathlib.Path(out_dir)
    _writable(out)
    if not out.is_dir():
        return
    bound = labels_in(out)
    for m in models:
        others = {sha: path for sha, path in bound.get(m.label, {}).items() if sha != m.checkpoint_sha256}
        if others and m.label not in replace:
            sha, path = next(iter(others.items()))
            raise ValueError(
                f"out_dir={str(out)!r} already holds results of model label {m.label!r} from another checkpoint "
                f"({path or '?'}, sha256 {sha[:12]}…; this run's is {m.checkpoint or '?'}, "
                f"sha256 {m.checkpoint_sha256[:12]}…). A label stands for one checkpoint in a folder: give this one "
                f"another label (--models=<label>=<path>), use another --out_dir, or pass "
                f"--replace_models={m.label} to delete the old results of {m.label!r} first")


def replace_models(out_dir: str | os.PathLike, labels: Sequence[str]) -> int:
    """Deletes every finished cell (and the tables' rows) of the given model labels; returns how
    many cells were removed. Used for ``--replace_models``: the old checkpoint's results go."""
    out = pathlib.Path(out_dir)
    removed = 0
    for cell in R.finished_cells(out):
        try:
            label = json.loads((out / "cells" / f"{cell}.json").read_text())["meta"]["model"]
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if label in labels:
            for suffix in (".json", ".npz"):
                (out / "cells" / f"{cell}{suffix}").unlink(missing_ok=True)
            shutil.rmtree(out / "partial" / cell, ignore_errors=True)
            removed += 1
    if removed:
        logging.info("removed %d cells of %s from %s", removed, sorted(labels), out)
        R.rebuild_tables(out)
    return removed
