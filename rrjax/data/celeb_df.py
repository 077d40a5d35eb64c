"""Celeb-DF v2 (Li et al., 2020) from its official folder layout (``manual_dir``)::

    <manual_dir>/{Celeb-real, Celeb-synthesis, YouTube-real}/{*.mp4 | videos/*.mp4 | frames/<video>/*.png}
    <manual_dir>/List_of_testing_videos.txt   # "<1 = real | 0 = fake> <folder>/<video>.mp4" per line

The listed videos are the test split, all others the train split (Celeb-DF has no
official validation split). ``manual_dir`` may also be the folder holding ``Celeb-DF-v2/``.
Records, sampling and reading limits: :mod:`rrjax.data.frames`.

References:
  Li et al., "Celeb-DF: A Large-scale Challenging Dataset for DeepFake Forensics", CVPR 2020.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import tensorflow_datasets as tfds

from rrjax.data import _base, frames
from rrjax.data.frames import LayoutError, VideoEntry

__all__ = ["CelebDF", "CelebDFConfig", "celebdf_entries"]

_CELEB_CATEGORIES = (("Celeb-real", 0), ("YouTube-real", 0), ("Celeb-synthesis", 1))


def _test_list(listing: Path) -> dict[str, int]:
    """``{"<folder>/<video>": label}`` of List_of_testing_videos.txt (which writes 1 for real)."""
    test: dict[str, int] = {}
    for n, line in enumerate(frames.read_metadata(listing).splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2 or parts[0] not in ("0", "1") or "/" not in parts[1]:
            raise LayoutError(f"{listing}:{n}: {line!r} is not '<1|0> <folder>/<video>.mp4'")
        folder, file = parts[1].split("/", 1)
        test[f"{folder}/{Path(file).stem}"] = 1 - int(parts[0])
    return test


def celebdf_entries(manual_dir: Path, *, source: str) -> list[VideoEntry]:
    """Videos of Celeb-DF v2 under ``manual_dir`` (see the module docstring)."""
    root = manual_dir
    if not (root / "List_of_testing_videos.txt").is_file() and (root / "Celeb-DF-v2").is_dir():
        root = root / "Celeb-DF-v2"
    frame_dirs = [frames.first_dir(root / c / "frames") for c, _ in _CELEB_CATEGORIES]
    video_dirs = []
    for c, _ in _CELEB_CATEGORIES:
        d = frames.first_dir(root / c / "videos", root / c)
        video_dirs.append(d if d is not None and frames.video_files(d) else None)
    requested, source = source, frames.pick_source(source, frame_dirs)
    missing = [m for (c, _), fd, vd in zip(_CELEB_CATEGORIES, frame_dirs, video_dirs)
               if (m := frames.missing_source(requested, source, fd, vd, f"{c}/frames/<video>/*.png",
                                              f"{c}/*.mp4  (or {c}/videos/*.mp4)"))]
    listing = root / "List_of_testing_videos.txt"
    if not listing.is_file():
        missing.append("List_of_testing_videos.txt")
    if missing:
        raise frames.layout_error("Celeb-DF v2", root, missing, f"source={requested!r}")
    test = _test_list(listing)
    entries = []
    for (cat, label), fd, vd in zip(_CELEB_CATEGORIES, frame_dirs, video_dirs):
        for name, path in frames.entries_in(source, fd, vd):
            rel = f"{cat}/{name}"
            if rel in test and test[rel] != label:
                raise LayoutError(f"{listing} labels {rel} as {'fake' if test[rel] else 'real'}, "
                                  f"but its folder {cat} holds {_base.LABELS[label]} videos")
            entries.append(frames.make_entry(rel, label, cat, "test" if rel in test else "train", source, path))
    return entries


@dataclasses.dataclass
class CelebDFConfig(frames.FrameConfig):
    source: str = "auto"

    @classmethod
    def make(cls, *, source: str = "auto", **common) -> "CelebDFConfig":
        fields, parts, text = cls.common(**common)
        frames.check_source(source)
        return cls(name=_base.config_name(source, *parts), description=f"source {source}, {text}",
                   source=source, **fields)


class CelebDF(frames.FrameBuilder):
    __doc__ = ("Celeb-DF v2 (official layout; test split = List_of_testing_videos.txt)."
               + frames.COMMON_DOC + frames.SOURCE_DOC)
    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "First release."}
    name = "celeb_df_v2"
    CONFIG_CLASS = CelebDFConfig
    BUILDER_CONFIGS = [CelebDFConfig.make()]
    DATASET_TITLE = "Celeb-DF v2"
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        "Get Celeb-DF v2 from its authors and pass the folder holding Celeb-real/, "
        "Celeb-synthesis/, YouTube-real/ and List_of_testing_videos.txt as manual_dir.")

    def _entries(self, manual_dir):
        return celebdf_entries(manual_dir, source=self.builder_config.source), {}
