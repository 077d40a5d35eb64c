"""How every figure looks and is written: palette, markers, rc style, label text, saving.

Nothing here reads records; :mod:`rrjax.plots.query` and the figure modules build on it.

Colours. Models take colours from the Okabe-Ito palette (safe for the common colour-vision
deficiencies) and a distinct marker (:data:`OKABE_ITO`, :data:`MARKERS`, assigned by
:func:`rrjax.plots.model_styles`).

Saving. :func:`save` renders each format into a temporary file next to the target and renames
it over the target (``rrjax._io.atomic_path``), so a killed or failing draw leaves either the
old figure or none, never a truncated PNG/PDF that looks complete.

References:
  M. Okabe, K. Ito. "Color Universal Design (CUD): how to make figures and presentations that
  are friendly to colorblind people", 2008.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import os
import pathlib
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import matplotlib as mpl
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from rrjax._io import atomic_path
from rrjax._validation import check_choice

__all__ = [
    "OKABE_ITO", "MARKERS", "FORMATS", "HEATMAP_CMAP", "Y_LIM", "styled", "save", "check_formats", "slug",
    "legend", "model_handles", "tick_labels", "norm_name", "fmt_eps", "shift_text", "rr_definition",
    "health_note", "title_context",
]

# Okabe-Ito, reordered so the first colours are the most distinct on white; yellow (weak on
# white) and black (reads as an annotation) come last.
OKABE_ITO = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#F0E442")
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
FORMATS = ("png", "pdf", "svg")
HEATMAP_CMAP = "cividis"  # perceptually uniform and designed for colour-vision deficiencies
Y_LIM = (-0.02, 1.02)
_NORM_SYMBOL = {"linf": "∞", "l1": "₁", "l2": "₂", "l0": "₀"}
_STYLE = {
    "font.size": 11, "axes.titlesize": 11.5, "axes.labelsize": 11, "xtick.labelsize": 10,
    "ytick.labelsize": 10, "legend.fontsize": 10, "figure.titlesize": 12.5, "axes.grid": True,
    "grid.alpha": 0.3, "grid.linewidth": 0.6, "savefig.dpi": 150,
    # TrueType in PDFs keeps the text selectable and editable.
    "pdf.fonttype": 42,
}


def styled(fn: Callable) -> Callable:
    """Runs a figure function under the module's rc style (scoped; nothing global changes)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with mpl.rc_context(_STYLE):
            return fn(*args, **kwargs)

    return wrapper


# ------------------------------------------------------------------------------- saving

def save(fig: Figure, path: str | os.PathLike, *, formats: Sequence[str] = ("png", "pdf")) -> list[pathlib.Path]:
    """Writes ``fig`` as ``<path>.<fmt>`` for each format, each file atomically; returns the paths.

    Args:
      fig: a figure from this package.
      path: target path without extension (its parent directories are created).
      formats: any of :data:`FORMATS`.

    Returns:
      The written paths, one per format. A draw that fails (or is killed) leaves the file of
      that format as it was before (absent, or the older figure) and no temporary file.
    """
    out = []
    base = pathlib.Path(path)
    base.parent.mkdir(parents=True, exist_ok=True)
    for fmt in check_formats(formats):
        target = base.with_name(f"{base.name}.{fmt}")
        with mpl.rc_context(_STYLE), _quiet_font_subsetting(), atomic_path(target) as tmp:
            fig.savefig(tmp, format=fmt)
        out.append(target)
    return out


@contextlib.contextmanager
def _quiet_font_subsetting() -> Iterator[None]:
    # PDF output subsets fonts with fontTools, which logs every table at INFO; under absl (whose
    # handler shows INFO) that is thousands of lines per figure. Scoped, and restored afterwards.
    logger = logging.getLogger("fontTools")
    level = logger.level
    logger.setLevel(max(level, logging.WARNING))
    try:
        yield
    finally:
        logger.setLevel(level)


def check_formats(formats: Sequence[str]) -> list[str]:
    """``formats`` as a non-empty list of :data:`FORMATS` entries (a single string is one format)."""
    formats = [formats] if isinstance(formats, str) else list(formats)
    if not formats:
        raise ValueError(f"formats is empty; expected one or more of {', '.join(FORMATS)}")
    for f in formats:
        check_choice(f, FORMATS, name="format")
    return formats


def slug(*parts: Any) -> str:
    """A file name from ``parts``: unsafe characters become ``-``, empty parts are dropped."""
    return "_".join(re.sub(r"[^A-Za-z0-9._=-]+", "-", str(p)).strip("-") for p in parts if p != "")


# ------------------------------------------------------------------------------- layout

def legend(fig: Figure, handles: list, ncols: int | None = None) -> None:
    """The figure legend, below the axes and outside them, so no data point is ever hidden."""
    fig.legend(handles=handles, loc="outside lower center", ncols=ncols or min(len(handles), 5), frameon=False)


def model_handles(styles: Mapping[str, tuple[str, str]], models: Sequence[str]) -> list:
    """One legend entry (line and marker in the model's style) per model, in the given order."""
    return [Line2D([], [], color=styles[m][0], marker=styles[m][1], lw=2, label=m) for m in models]


def tick_labels(ax, values: Sequence[float], axis: str, max_ticks: int = 11) -> None:
    """Labels image rows/columns ``0..len(values)-1`` with ``values``, at most ``max_ticks`` of them."""
    stride = max(1, math.ceil(len(values) / max_ticks))
    pos = list(range(0, len(values), stride))
    labels = [f"{values[i]:.3g}" for i in pos]
    if axis == "x":
        ax.set_xticks(pos, labels, rotation=45 if len(pos) > 6 else 0, ha="right" if len(pos) > 6 else "center")
    else:
        ax.set_yticks(pos, labels)


# ------------------------------------------------------------------------------- label text

def norm_name(norm: str) -> str:
    """``"linf"`` -> ``"L∞"``; unknown norms are shown as given."""
    return f"L{_NORM_SYMBOL.get(norm, norm)}" if norm in _NORM_SYMBOL else str(norm)


def fmt_eps(eps: float) -> str:
    """ε for a title; a multiple of 1/255 that is not a round decimal also shows as ``k/255``."""
    text = f"{eps:.4g}"
    k = eps * 255
    if eps > 0 and abs(round(eps, 3) - eps) > 1e-6 and abs(k - round(k)) < 1e-3:
        text += f" ({round(k)}/255)"
    return text


def shift_text(shift_norm: str) -> str:
    """The probability shift ``‖p(x′) − p(x)‖`` in the given norm."""
    return f"‖p(x′) − p(x)‖{_NORM_SYMBOL.get(shift_norm, '_' + str(shift_norm))}"


def rr_definition(shift_norm: str, strict: bool) -> str:
    """One line defining RR(b) as the records computed it."""
    text = f"RR(b): share of samples with {shift_text(shift_norm)} ≤ b"
    return text + " and the label unchanged" if strict else text


def health_note(rows: Sequence[Mapping]) -> str:
    """A title line listing the attack-health flags of ``rows`` (empty when none is flagged)."""
    flagged = sorted({(r["model"], r["attack"], r["health"]) for r in rows if r["health"]})
    if not flagged:
        return ""
    return "\nattack-health flags: " + "; ".join(f"{m}/{a}: {h}" for m, a, h in flagged)


def title_context(ctx: Mapping[str, Any]) -> str:
    """``"<dataset> (<split>)"`` for a title."""
    return f"{ctx['dataset']} ({ctx['split']})"
