"""FaceForensics++ (Rössler et al., 2019) from its official folder layout (``manual_dir``)::

    <manual_dir>/original_sequences/youtube/<c23|c40|raw>/{videos/*.mp4 | images/<video>/*.png | frames/<video>/*.png}
    <manual_dir>/manipulated_sequences/<Deepfakes|Face2Face|FaceSwap|NeuralTextures|FaceShifter>/<comp>/...
    <manual_dir>/{splits/,}{train,val,test}.json     # the official lists of [a, b] pairs

``images/`` is what FF++'s frame-extraction script writes, ``frames/`` what
DeepfakeBench's preprocessing writes (face crops). A real video ``a`` belongs to the
split whose list holds a pair with ``a``; a fake ``a_b`` to the split of ``[a, b]``.
Records, sampling and reading limits: :mod:`rrjax.data.frames`.

References:
  Rössler et al., "FaceForensics++: Learning to Detect Manipulated Facial Images", ICCV 2019.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path

import tensorflow_datasets as tfds
from absl import logging

from rrjax._validation import check_choice
from rrjax.data import _base, frames
from rrjax.data.frames import LayoutError, VideoEntry

__all__ = ["FF_METHODS", "FaceForensics", "FaceForensicsConfig", "faceforensics_entries"]

FF_METHODS = ("Deepfakes", "Face2Face", "FaceSwap", "NeuralTextures", "FaceShifter")
FF_COMPRESSIONS = ("c23", "c40", "raw")
_FF_SHORT = {"Deepfakes": "DF", "Face2Face": "F2F", "FaceSwap": "FS", "NeuralTextures": "NT", "FaceShifter": "FSh"}


def _split_lists(root: Path, manual_dir: Path, missing: list[str]) -> dict[str, Path]:
    """Paths of the official split lists; what is not found is appended to ``missing``."""
    lists = {}
    for s in ("train", "val", "test"):
        path = next((d / f"{s}.json" for d in (root / "splits", root, manual_dir / "splits", manual_dir)
                     if (d / f"{s}.json").is_file()), None)
        if path is None:
            missing.append(f"splits/{s}.json  (or {s}.json), the official FaceForensics++ split list")
        else:
            lists[s] = path
    return lists


def _split_of(lists: dict[str, Path]) -> dict[str, str]:
    """Video name (``a``, ``a_b``) -> split, from the official lists of ``[a, b]`` pairs."""
    split_of: dict[str, str] = {}
    for s, path in lists.items():
        pairs = json.loads(frames.read_metadata(path))
        if not isinstance(pairs, list) or not all(isinstance(p, list) and len(p) == 2 for p in pairs):
            raise LayoutError(f"{path} is not a FaceForensics++ split list; expected a JSON list of [a, b] pairs")
        for a, b in pairs:
            for key in (a, b, f"{a}_{b}", f"{b}_{a}"):
                split_of[key] = frames.SPLIT_NAMES[s]
    return split_of


def faceforensics_entries(manual_dir: Path, *, compression: str, methods: Sequence[str], source: str) -> list[VideoEntry]:
    """Videos of FaceForensics++ under ``manual_dir`` (see the module docstring)."""
    root = manual_dir
    if not (root / "original_sequences").is_dir() and (root / "FaceForensics++" / "original_sequences").is_dir():
        root = root / "FaceForensics++"
    cats = [("original_sequences/youtube", "youtube", 0)] + [(f"manipulated_sequences/{m}", m, 1) for m in methods]
    frame_dirs = [frames.first_dir(root / c / compression / "frames", root / c / compression / "images")
                  for c, _, _ in cats]
    video_dirs = [frames.first_dir(root / c / compression / "videos") for c, _, _ in cats]
    requested, source = source, frames.pick_source(source, frame_dirs)
    missing = [m for (cat, _, _), fd, vd in zip(cats, frame_dirs, video_dirs)
               if (m := frames.missing_source(
                   requested, source, fd, vd,
                   f"{cat}/{compression}/frames/<video>/*.png  (or {cat}/{compression}/images/<video>/*.png)",
                   f"{cat}/{compression}/videos/*.mp4"))]
    lists = _split_lists(root, manual_dir, missing)
    if missing:
        raise frames.layout_error("FaceForensics++", root, missing,
                                  f"compression={compression!r}, source={requested!r}, methods={list(methods)}")
    split_of = _split_of(lists)
    entries, unlisted = [], 0
    for (cat, method, label), fd, vd in zip(cats, frame_dirs, video_dirs):
        for name, path in frames.entries_in(source, fd, vd):
            split = split_of.get(name)
            if split is None:
                unlisted += 1
                continue
            entries.append(frames.make_entry(f"{cat}/{compression}/{name}", label, method, split, source, path))
    if unlisted:
        logging.info("FaceForensics++: %d videos are in no split list and were left out", unlisted)
    return entries


@dataclasses.dataclass
class FaceForensicsConfig(frames.FrameConfig):
    compression: str = "c23"
    methods: tuple[str, ...] = FF_METHODS[:4]
    source: str = "auto"

    @classmethod
    def make(cls, *, compression: str = "c23", methods: Sequence[str] = FF_METHODS[:4], source: str = "auto",
             **common) -> "FaceForensicsConfig":
        check_choice(compression, FF_COMPRESSIONS, name="compression")
        if isinstance(methods, str):
            methods = (methods,)
        methods = tuple(methods)
        if not methods:
            raise ValueError("methods is empty; expected one or more of " + ", ".join(FF_METHODS))
        for m in methods:
            check_choice(m, FF_METHODS, name="methods")
        methods = tuple(m for m in FF_METHODS if m in methods)  # canonical order, no repeats
        frames.check_source(source)
        fields, parts, text = cls.common(**common)
        short = "+".join(_FF_SHORT[m] for m in methods)
        return cls(name=_base.config_name(compression, short, source, *parts),
                   description=f"compression {compression}, methods {list(methods)}, source {source}, {text}",
                   compression=compression, methods=methods, source=source, **fields)


class FaceForensics(frames.FrameBuilder):
    __doc__ = "FaceForensics++ (official layout) as frames or clips." + frames.COMMON_DOC + """
      compression: "c23" (default), "c40" or "raw".
      methods: manipulation methods used as fakes (default the four of the paper).""" + frames.SOURCE_DOC
    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "First release."}
    name = "faceforensics"
    CONFIG_CLASS = FaceForensicsConfig
    BUILDER_CONFIGS = [FaceForensicsConfig.make()]
    DATASET_TITLE = "FaceForensics++"
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        "Download FaceForensics++ with its official script (videos, and optionally extracted "
        "frames) and put its split lists train.json/val.json/test.json next to it; pass the "
        "folder holding original_sequences/ and manipulated_sequences/ as manual_dir.")

    def _entries(self, manual_dir):
        c = self.builder_config
        return faceforensics_entries(manual_dir, compression=c.compression, methods=c.methods, source=c.source), {}
