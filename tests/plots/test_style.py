"""Saving: every figure file is written atomically, so a failed or killed draw leaves no torn file."""

from __future__ import annotations

import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.backends.backend_pdf import FigureCanvasPdf
from matplotlib.figure import Figure

from rrjax import plots


def _figure():
    fig = Figure()
    fig.add_subplot().plot([0, 1], [0, 1])
    return fig


def _dies_midway(self, filename, *args, **kwargs):
    """A print method that writes the start of a file, then dies (as a kill during drawing would)."""
    with open(filename, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" if str(filename).endswith("png") else b"%PDF-1.4\n")
        f.write(b"truncated")
    raise RuntimeError("killed while drawing")


@pytest.mark.parametrize("fmt, canvas", [("png", FigureCanvasAgg), ("pdf", FigureCanvasPdf)])
def test_a_draw_that_dies_leaves_no_file_and_keeps_the_older_one(tmp_path, monkeypatch, fmt, canvas):
    fresh, kept = tmp_path / "fresh", tmp_path / "kept"
    kept.mkdir()
    (kept / f"fig.{fmt}").write_bytes(b"the older, complete figure")
    monkeypatch.setattr(canvas, f"print_{fmt}", _dies_midway)
    with pytest.raises(RuntimeError, match="killed while drawing"):
        plots.save(_figure(), fresh / "fig", formats=[fmt])
    assert list(fresh.iterdir()) == []  # no truncated file at the final name, no temporary file
    with pytest.raises(RuntimeError, match="killed while drawing"):
        plots.save(_figure(), kept / "fig", formats=[fmt])
    assert [p.name for p in kept.iterdir()] == [f"fig.{fmt}"]
    assert (kept / f"fig.{fmt}").read_bytes() == b"the older, complete figure"


def test_save_writes_each_format_under_its_final_name_only(tmp_path):
    (tmp_path / "fig.png").write_bytes(b"older")
    written = plots.save(_figure(), tmp_path / "fig", formats=["png", "pdf", "svg"])
    assert written == [tmp_path / "fig.png", tmp_path / "fig.pdf", tmp_path / "fig.svg"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fig.pdf", "fig.png", "fig.svg"]
    assert (tmp_path / "fig.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (tmp_path / "fig.pdf").read_bytes()[:5] == b"%PDF-"
    assert b"<svg" in (tmp_path / "fig.svg").read_bytes()[:2000]
    with pytest.raises(ValueError, match="formats is empty"):
        plots.save(_figure(), tmp_path / "x", formats=[])
