"""Records on disk: atomic cells, deterministic tables, corruption detected with a remedy."""

from __future__ import annotations

import json

import numpy as np
import pytest

from rrjax import records as R


def _row(cell, model, eps, tol, **kw):
    row = dict(model=model, checkpoint="ck", checkpoint_sha256="abc", dataset="d", split="test", attack="pgd",
               attack_params={"steps": 10}, threat_norm="linf", eps=eps, tolerance=tol, n=4, n_correct=2, ra=0.5,
               ra_lo=0.1, ra_hi=0.9, n_robust=3, rr=0.75, rr_lo=0.3, rr_hi=0.95, clean_accuracy=1.0,
               shift_norm="linf", strict=False, ci_method="wilson", seed=0, health="", cell=cell)
    row.update(kw)
    return row


def _samples(n=4):
    return {"index": np.arange(n), "y": np.zeros(n, np.int32), "correct": np.ones(n, bool), "shift": np.zeros(n),
            "p_fake_clean": np.zeros(n), "p_fake_adv": np.zeros(n), "same_label": np.ones(n, bool)}


def test_roundtrip_and_order_independence(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    cells = [("c1", "m2", 0.1), ("c2", "m1", 0.2), ("c3", "m1", 0.1)]
    for out, order in ((a, cells), (b, cells[::-1])):
        for cell, model, eps in order:
            R.write_cell(out, cell, {"model": model}, _samples(), [_row(cell, model, eps, t) for t in (0.0, 0.5)])
            R.rebuild_tables(out)
    assert (a / "records.jsonl").read_bytes() == (b / "records.jsonl").read_bytes()
    assert (a / "records.csv").read_bytes() == (b / "records.csv").read_bytes()
    jl, cs = R.load_records(a), R.load_records(a / "records.csv")
    assert jl == cs and len(jl) == 6
    assert [(r["model"], r["eps"]) for r in jl][:2] == [("m1", 0.1), ("m1", 0.1)]
    np.testing.assert_array_equal(R.load_samples(a, "c1")["index"], np.arange(4))


def test_incomplete_cells_are_not_finished(tmp_path):
    R.write_cell(tmp_path, "c1", {}, _samples(), [_row("c1", "m", 0.1, 0.0)])
    (tmp_path / "cells" / "c2.npz").write_bytes(b"partial")  # killed before its marker
    (tmp_path / "cells" / ".c3.json.tmp-1").write_text("{")  # killed mid-write
    assert R.finished_cells(tmp_path) == ["c1"]
    assert R.read_cell(tmp_path, "c2") is None


def test_corruption_is_reported_with_a_remedy(tmp_path):
    R.write_cell(tmp_path, "c1", {}, _samples(), [_row("c1", "m", 0.1, 0.0)])
    R.rebuild_tables(tmp_path)
    npz = tmp_path / "cells" / "c1.npz"
    npz.write_bytes(npz.read_bytes()[:-10])
    with pytest.raises(ValueError, match="does not match its recorded SHA-256.*rerun the sweep command"):
        R.read_cell(tmp_path, "c1")
    table = tmp_path / "records.jsonl"
    table.write_text(table.read_text()[:-5])
    with pytest.raises(ValueError, match="does not match records.manifest.json.*rebuild_tables"):
        R.load_records(tmp_path)
    (tmp_path / "cells" / "c1.json").write_text("{not json")
    with pytest.raises(ValueError, match="is corrupt"):
        R.read_cell(tmp_path, "c1")


def test_bad_paths_and_rows(tmp_path):
    with pytest.raises(ValueError, match="no records at"):
        R.load_records(tmp_path / "missing")
    with pytest.raises(ValueError, match="missing \\['tolerance'\\]"):
        row = _row("c", "m", 0.1, 0.0)
        del row["tolerance"]
        R.write_cell(tmp_path, "c", {}, _samples(), [row])
    assert R.cell_id({"a": 1, "b": [1, 2]}) == R.cell_id({"b": [1, 2], "a": 1})
    assert json.loads(R.canonical_json({"b": 1, "a": 2})) == {"a": 2, "b": 1}


def _defined_cell(tmp_path, eps=0.1):
    meta = {"model": "m", "arch": "meso4", "config": {"image_size": 64}, "checkpoint_sha256": "ab" * 32,
            "dataset": "d", "split": "test", "source": "cfg|resize=64", "samples": "s" * 20, "attack": "pgd",
            "attack_params": {"steps": 3}, "eps": eps, "seed": 0, "shift_norm": "linf"}
    cell = R.cell_id(meta)
    R.write_cell(tmp_path, cell, {**meta, "cell": cell}, _samples(), [_row(cell, "m", eps, 0.0)])
    return cell


@pytest.mark.parametrize("edit", ["eps", "model", "rows", "legacy_eps"])
def test_an_edited_cell_file_is_detected_not_recorded(tmp_path, edit):
    """Any value of a cell's JSON changed by hand (an ε, a model label, a row) is refused:
    the JSON carries its own hash, and its definition must hash to the cell id."""
    cell = _defined_cell(tmp_path)
    marker = tmp_path / "cells" / f"{cell}.json"
    info = json.loads(marker.read_text())
    if edit in ("eps", "legacy_eps"):
        info["meta"]["eps"] = 0.2
        if edit == "legacy_eps":  # a marker without json_sha256 (written before it existed)
            info.pop("json_sha256")
    elif edit == "model":
        info["meta"]["model"] = "phantom"
    else:
        info["rows"][0]["ra"] = 1.0
    marker.write_text(json.dumps(info))
    with pytest.raises(ValueError, match="is corrupt.*rerun the sweep command"):
        R.read_cell(tmp_path, cell)
    with pytest.raises(ValueError, match="is corrupt"):
        R.rebuild_tables(tmp_path)


def test_write_cell_refuses_a_definition_that_does_not_hash_to_the_id(tmp_path):
    cell = _defined_cell(tmp_path)
    info = R.read_cell(tmp_path, cell)
    with pytest.raises(ValueError, match="hashes to"):
        R.write_cell(tmp_path, "0" * 20, info["meta"], info["samples"], info["rows"])
    R.rewrite_rows(tmp_path, cell, [{**info["rows"][0], "health": "x"}])  # still verifies after a rewrite
    assert R.read_cell(tmp_path, cell)["rows"][0]["health"] == "x"


def test_hashed_npz_names_carry_their_content_hash(tmp_path):
    path = R.write_hashed_npz(tmp_path, "00-07", {"a": np.arange(8)})
    np.testing.assert_array_equal(R.read_hashed_npz(path)["a"], np.arange(8))
    data = bytearray(path.read_bytes())
    data[-30] ^= 1  # one flipped bit inside a valid-looking file
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="does not match the SHA-256 in its name"):
        R.read_hashed_npz(path)
    legacy = tmp_path / "00-07.npz"
    legacy.write_bytes(b"x")
    with pytest.raises(ValueError, match="no content hash"):
        R.read_hashed_npz(legacy)
