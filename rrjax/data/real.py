"""TFDS builders for real deepfake datasets the user already has on disk (``manual_dir``).

Three layouts are understood:

* **FaceForensics++** (Rössler et al., 2019), official folder layout::

    <manual_dir>/original_sequences/youtube/<c23|c40|raw>/{videos/*.mp4 | images/<video>/*.png | frames/<video>/*.png}
    <manual_dir>/manipulated_sequences/<Deepfakes|Face2Face|FaceSwap|NeuralTextures|FaceShifter>/<comp>/...
    <manual_dir>/{splits/,}{train,val,test}.json     # the official lists of [a, b] pairs

  ``images/`` is what FF++'s frame-extraction script writes, ``frames/`` what
  DeepfakeBench's preprocessing writes (face crops). A real video ``a`` belongs to
  the split whose list holds a pair with ``a``; a fake ``a_b`` to the split of ``[a, b]``.

* **Celeb-DF v2** (Li et al., 2020)::

    <manual_dir>/{Celeb-real, Celeb-synthesis, YouTube-real}/{*.mp4 | videos/*.mp4 | frames/<video>/*.png}
    <manual_dir>/List_of_testing_videos.txt   # "<1 = real | 0 = fake> <folder>/<video>.mp4" per line

  The listed videos are the test split, all others the train split (Celeb-DF has no
  official validation split).

* **DeepfakeBench** preprocessed frames (Yan et al., 2023): the dataset JSON written by
  its ``preprocessing/rearrange.py``, ``{dataset: {label: {split: [{comp:] {video:
  {"label", "frames": [paths]}}}}}`` with splits ``train``/``val``/``test``, plus the
  frame folders. Frame paths in the JSON may be absolute paths from the machine that
  wrote it: a path that does not exist is looked up under ``manual_dir`` by dropping
  leading components until it exists.

Each record is one frame (``image``) or, with ``clip_length > 0``, one clip of
consecutive frames (``clip``), with ``label`` (0 real, 1 fake), ``video_id`` (a stable
63-bit hash of the video's method and name, shared by all frames of the video),
``frame_index`` (position of the frame, or the clip's first frame, in the video's
sorted frame list), ``video`` (the video's relative name) and ``method``.

Frames per video follow DeepfakeBench's even sampling: with ``n = frames_per_video``
and ``T`` frames, ``step = T // n`` and frames ``0, step, 2*step, ...`` (the first
``n``); ``frames_per_video=0`` keeps every frame. Clips: ``max(1, n // clip_length)``
clips of ``clip_length`` consecutive frames with evenly spaced starts. Frames are
stored at ``image_size`` (shorter side resized with Pillow's antialiased bicubic filter,
then centre-cropped); a PNG that already has that size is stored byte for byte.

Unreadable frames and videos are skipped and counted in a :class:`SkippedFilesWarning`
(and the absl log) at the end of each split; a missing or wrong layout raises
:class:`LayoutError` listing what was expected and not found.

References:
  Rössler et al., "FaceForensics++: Learning to Detect Manipulated Facial Images", ICCV 2019.
  Li et al., "Celeb-DF: A Large-scale Challenging Dataset for DeepFake Forensics", CVPR 2020.
  Yan et al., "DeepfakeBench: A Comprehensive Benchmark of Deepfake Detection", NeurIPS 2023.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import io
import json
import os
import re
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import tensorflow_datasets as tfds
import tqdm
from absl import logging
from PIL import Image

from rrjax._validation import check_choice, check_int
from rrjax.data import _base

__all__ = [
    "FaceForensics",
    "CelebDF",
    "DeepfakeBench",
    "LayoutError",
    "SkippedFilesWarning",
    "VideoDecoderUnavailableError",
    "FF_METHODS",
    "DEEPFAKEBENCH_LABELS",
]

FF_METHODS = ("Deepfakes", "Face2Face", "FaceSwap", "NeuralTextures", "FaceShifter")
FF_COMPRESSIONS = ("c23", "c40", "raw")
_FF_SHORT = {"Deepfakes": "DF", "Face2Face": "F2F", "FaceSwap": "FS", "NeuralTextures": "NT", "FaceShifter": "FSh"}
SOURCES = ("auto", "frames", "videos")
_IMAGE_EXT = {".png", ".jpg", ".jpeg", ".bmp", ".webp"}
_VIDEO_EXT = {".mp4", ".avi", ".mov", ".mkv", ".webm"}
_SPLIT_NAMES = {"train": "train", "val": "validation", "validation": "validation", "test": "test"}

# DeepfakeBench's training/config/train_config.yaml ``label_dict`` (0 real, 1 fake).
DEEPFAKEBENCH_LABELS = {
    "DFD_fake": 1, "DFD_real": 0,
    "FF-SH": 1, "FF-F2F": 1, "FF-DF": 1, "FF-FS": 1, "FF-NT": 1, "FF-FH": 1, "FF-real": 0,
    "CelebDFv1_real": 0, "CelebDFv1_fake": 1, "CelebDFv2_real": 0, "CelebDFv2_fake": 1,
    "DFDCP_Real": 0, "DFDCP_FakeA": 1, "DFDCP_FakeB": 1,
    "DFDC_Fake": 1, "DFDC_Real": 0,
    "DF_fake": 1, "DF_real": 0,
    "UADFV_Fake": 1, "UADFV_Real": 0,
    "roop_Real": 0, "roop_Fake": 1,
}


class LayoutError(FileNotFoundError):
    """The files under ``manual_dir`` do not have the layout a builder expects."""


class VideoDecoderUnavailableError(ImportError):
    """Videos were requested but no video decoder (PyAV) can be imported."""


class SkippedFilesWarning(UserWarning):
    """Some frames or videos could not be read and were left out of a split."""


# --------------------------------------------------------------------------- discovery


@dataclasses.dataclass
class VideoEntry:
    """One video found on disk: either a folder of frames or a video file."""

    name: str                  # relative name, unique in the dataset
    label: int                 # 0 real, 1 fake
    method: str
    split: str                 # train / validation / test
    frames: tuple[Path, ...] = ()
    video: Path | None = None

    @property
    def video_id(self) -> int:
        digest = hashlib.blake2b(f"{self.method}/{Path(self.name).name}".encode(), digest_size=8).digest()
        return int.from_bytes(digest, "little") >> 1


def _natural_key(path: Path):
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", path.name)]


def _frame_files(folder: Path) -> tuple[Path, ...]:
    return tuple(sorted((p for p in folder.iterdir() if p.suffix.lower() in _IMAGE_EXT), key=_natural_key))


def _frame_folders(folder: Path) -> list[Path]:
    return sorted((p for p in folder.iterdir() if p.is_dir()), key=_natural_key)


def _video_files(folder: Path) -> list[Path]:
    return sorted((p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in _VIDEO_EXT), key=_natural_key)


def _describe(root: Path, depth: int = 3) -> str:
    """What is actually under ``root`` (folders only, a few levels), for error messages."""
    lines = []
    def walk(p: Path, level: int):
        kids = sorted(k.name for k in p.iterdir() if k.is_dir()) if p.is_dir() else []
        if kids and level < depth:
            for k in kids[:12]:
                lines.append("  " + str((p / k).relative_to(root)) + "/")
                walk(p / k, level + 1)
            if len(kids) > 12:
                lines.append(f"  {p.relative_to(root)}/... ({len(kids) - 12} more)")
    walk(root, 0)
    return "\n".join(lines[:40]) or "  (no folders)"


def _layout_error(dataset: str, root: Path, missing: Sequence[str], hint: str = "") -> LayoutError:
    listed = "\n".join(f"  {m}" for m in missing)
    return LayoutError(
        f"{dataset} layout not found under {root}.\nExpected and not found:\n{listed}\n"
        f"Found these folders:\n{_describe(root)}" + (f"\n{hint}" if hint else ""))


def _pick_source(source: str, frame_dirs: Sequence[Path | None], video_dirs: Sequence[Path | None]) -> str:
    if source != "auto":
        return source
    return "frames" if all(d is not None for d in frame_dirs) else "videos"


def _first_dir(*candidates: Path) -> Path | None:
    return next((c for c in candidates if c.is_dir()), None)


def faceforensics_entries(manual_dir: Path, *, compression: str, methods: Sequence[str], source: str) -> list[VideoEntry]:
    """Videos of FaceForensics++ under ``manual_dir`` (see the module docstring)."""
    root = manual_dir
    if not (root / "original_sequences").is_dir() and (root / "FaceForensics++" / "original_sequences").is_dir():
        root = root / "FaceForensics++"
    cats = [("original_sequences/youtube", "youtube", 0)] + [(f"manipulated_sequences/{m}", m, 1) for m in methods]
    frame_dirs = [_first_dir(root / c / compression / "frames", root / c / compression / "images") for c, _, _ in cats]
    video_dirs = [_first_dir(root / c / compression / "videos") for c, _, _ in cats]
    requested, source = source, _pick_source(source, frame_dirs, video_dirs)
    missing = []
    for (cat, _, _), fd, vd in zip(cats, frame_dirs, video_dirs):
        frames_text = f"{cat}/{compression}/frames/<video>/*.png  (or {cat}/{compression}/images/<video>/*.png)"
        videos_text = f"{cat}/{compression}/videos/*.mp4"
        if requested == "auto" and fd is None and vd is None:
            missing.append(f"{frames_text}  or  {videos_text}")
        elif source == "frames" and fd is None:
            missing.append(frames_text)
        elif source == "videos" and vd is None:
            missing.append(videos_text)
    lists = {}
    for s in ("train", "val", "test"):
        path = next((d / f"{s}.json" for d in (root / "splits", root, manual_dir / "splits", manual_dir)
                     if (d / f"{s}.json").is_file()), None)
        if path is None:
            missing.append(f"splits/{s}.json  (or {s}.json), the official FaceForensics++ split list")
        else:
            lists[s] = path
    if missing:
        raise _layout_error("FaceForensics++", root, missing,
                            f"compression={compression!r}, source={requested!r}, methods={list(methods)}")
    split_of: dict[str, str] = {}
    for s, path in lists.items():
        pairs = json.loads(path.read_text())
        if not isinstance(pairs, list) or not all(isinstance(p, list) and len(p) == 2 for p in pairs):
            raise LayoutError(f"{path} is not a FaceForensics++ split list; expected a JSON list of [a, b] pairs")
        for a, b in pairs:
            for key in (a, b, f"{a}_{b}", f"{b}_{a}"):
                split_of[key] = _SPLIT_NAMES[s]
    entries, unlisted = [], 0
    for (cat, method, label), fd, vd in zip(cats, frame_dirs, video_dirs):
        items = ([(d.name, d) for d in _frame_folders(fd)] if source == "frames"
                 else [(v.stem, v) for v in _video_files(vd)])
        for name, path in items:
            split = split_of.get(name)
            if split is None:
                unlisted += 1
                continue
            rel = f"{cat}/{compression}/{name}"
            if source == "frames":
                entries.append(VideoEntry(rel, label, method, split, frames=_frame_files(path)))
            else:
                entries.append(VideoEntry(rel, label, method, split, video=path))
    if unlisted:
        logging.info("FaceForensics++: %d videos are in no split list and were left out", unlisted)
    return entries


_CELEB_CATEGORIES = (("Celeb-real", 0), ("YouTube-real", 0), ("Celeb-synthesis", 1))


def celebdf_entries(manual_dir: Path, *, source: str) -> list[VideoEntry]:
    """Videos of Celeb-DF v2 under ``manual_dir`` (see the module docstring)."""
    root = manual_dir
    if not (root / "List_of_testing_videos.txt").is_file() and (root / "Celeb-DF-v2").is_dir():
        root = root / "Celeb-DF-v2"
    frame_dirs = [_first_dir(root / c / "frames") for c, _ in _CELEB_CATEGORIES]
    video_dirs = []
    for c, _ in _CELEB_CATEGORIES:
        d = _first_dir(root / c / "videos", root / c)
        video_dirs.append(d if d is not None and _video_files(d) else None)
    requested, source = source, _pick_source(source, frame_dirs, video_dirs)
    missing = []
    for (c, _), fd, vd in zip(_CELEB_CATEGORIES, frame_dirs, video_dirs):
        frames_text, videos_text = f"{c}/frames/<video>/*.png", f"{c}/*.mp4  (or {c}/videos/*.mp4)"
        if requested == "auto" and fd is None and vd is None:
            missing.append(f"{frames_text}  or  {videos_text}")
        elif source == "frames" and fd is None:
            missing.append(frames_text)
        elif source == "videos" and vd is None:
            missing.append(videos_text)
    listing = root / "List_of_testing_videos.txt"
    if not listing.is_file():
        missing.append("List_of_testing_videos.txt")
    if missing:
        raise _layout_error("Celeb-DF v2", root, missing, f"source={requested!r}")
    test: dict[str, int] = {}
    for n, line in enumerate(listing.read_text().splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2 or parts[0] not in ("0", "1") or "/" not in parts[1]:
            raise LayoutError(f"{listing}:{n}: {line!r} is not '<1|0> <folder>/<video>.mp4'")
        folder, file = parts[1].split("/", 1)
        test[f"{folder}/{Path(file).stem}"] = 1 - int(parts[0])  # the list writes 1 for real
    entries = []
    for (cat, label), fd, vd in zip(_CELEB_CATEGORIES, frame_dirs, video_dirs):
        items = ([(d.name, d) for d in _frame_folders(fd)] if source == "frames"
                 else [(v.stem, v) for v in _video_files(vd)])
        for name, path in items:
            rel = f"{cat}/{name}"
            if rel in test and test[rel] != label:
                raise LayoutError(f"{listing} labels {rel} as {'fake' if test[rel] else 'real'}, "
                                  f"but its folder {cat} holds {_base.LABELS[label]} videos")
            split = "test" if rel in test else "train"
            if source == "frames":
                entries.append(VideoEntry(rel, label, cat, split, frames=_frame_files(path)))
            else:
                entries.append(VideoEntry(rel, label, cat, split, video=path))
    return entries


class _Rerooter:
    """Finds a JSON frame path under ``root`` by dropping leading path components."""

    def __init__(self, root: Path):
        self.root = root
        self.drop: list[int] = []  # drop counts that worked before, tried first

    def __call__(self, text: str) -> Path | None:
        path = Path(text)
        if path.is_absolute() and path.exists():
            return path
        parts = path.parts[1:] if path.is_absolute() else path.parts
        for k in self.drop + [k for k in range(len(parts)) if k not in self.drop]:
            cand = self.root.joinpath(*parts[k:])
            if cand.exists():
                if k not in self.drop:
                    self.drop.insert(0, k)
                return cand
        return None


def deepfakebench_entries(json_path: Path, manual_dir: Path, *, dataset: str | None,
                          compression: str) -> tuple[list[VideoEntry], dict[str, int]]:
    """Videos listed in a DeepfakeBench dataset JSON.

    Returns:
      ``(entries, missing)`` with ``missing[split]`` the number of listed frame files
      that do not exist (not even under ``manual_dir``).
    """
    if not json_path.is_file():
        raise _layout_error("DeepfakeBench", manual_dir, [f"{json_path}  (the dataset JSON from rearrange.py)"])
    try:
        data = json.loads(json_path.read_text())
    except json.JSONDecodeError as e:
        raise LayoutError(f"{json_path} is not valid JSON ({e})") from None
    if not isinstance(data, dict) or not data:
        raise LayoutError(f"{json_path}: expected an object {{dataset: {{label: {{split: ...}}}}}}")
    if dataset is None:
        if len(data) != 1:
            raise ValueError(f"dataset=None but {json_path} holds {sorted(data)}; pass dataset=<one of them>")
        dataset = next(iter(data))
    if dataset not in data:
        raise ValueError(f"dataset={dataset!r} is not in {json_path}; expected one of {sorted(data)}")
    reroot = _Rerooter(manual_dir)
    entries, missing, guessed = [], collections.Counter(), set()
    for label_name, by_split in data[dataset].items():
        for split_name, videos in by_split.items():
            if split_name not in _SPLIT_NAMES:
                raise LayoutError(f"{json_path}: split {split_name!r} under {dataset}/{label_name}; "
                                  f"expected train, val or test")
            if videos and all(isinstance(v, dict) and "frames" not in v for v in videos.values()):
                # FaceForensics-style JSONs add a compression level between split and video.
                if compression not in videos:
                    raise ValueError(f"compression={compression!r} is not in {json_path} "
                                     f"({dataset}/{label_name}/{split_name}); expected one of {sorted(videos)}")
                videos = videos[compression]
            for video, info in videos.items():
                name = info.get("label", label_name)
                if name in DEEPFAKEBENCH_LABELS:
                    label = DEEPFAKEBENCH_LABELS[name]
                else:
                    label = 0 if "real" in name.lower() else 1
                    guessed.add(f"{name}->{_base.LABELS[label]}")
                frames = []
                for text in info.get("frames", []):
                    p = reroot(text)
                    if p is None:
                        missing[_SPLIT_NAMES[split_name]] += 1
                    else:
                        frames.append(p)
                frames.sort(key=_natural_key)  # rearrange.py lists frames in directory order
                entries.append(VideoEntry(f"{label_name}/{video}", label, label_name,
                                          _SPLIT_NAMES[split_name], frames=tuple(frames)))
    if guessed:
        warnings.warn(f"labels not in DeepfakeBench's label_dict were mapped by name: {sorted(guessed)}",
                      UserWarning, stacklevel=2)
    if entries and not any(e.frames for e in entries):
        example = next(iter(next(iter(next(iter(data[dataset].values())).values())).values()), {})
        first = (example.get("frames") or ["?"])[0] if isinstance(example, dict) else "?"
        raise _layout_error("DeepfakeBench frames", manual_dir,
                            [f"{first}  (and every other frame in {json_path.name}, "
                             f"also after dropping leading folders)"],
                            "Pass manual_dir= the folder that holds the dataset folders named in the JSON.")
    return entries, dict(missing)


# --------------------------------------------------------------------------- reading


def sample_indices(total: int, frames_per_video: int) -> list[int]:
    """DeepfakeBench's even sampling: every ``total // n``-th frame, the first ``n``."""
    if frames_per_video == 0 or frames_per_video >= total:
        return list(range(total))
    step = total // frames_per_video
    return list(range(0, total, step))[:frames_per_video]


def clip_starts(total: int, clip_length: int, frames_per_video: int) -> list[int]:
    """Starts of ``max(1, n // clip_length)`` evenly spaced clips (all disjoint ones if n = 0)."""
    if total < clip_length:
        return []
    n = total // clip_length if frames_per_video == 0 else max(1, frames_per_video // clip_length)
    n = min(n, total - clip_length + 1)
    return sorted(set(np.linspace(0, total - clip_length, n).round().astype(int).tolist()))


def _fit(pixels: np.ndarray, size: int) -> np.ndarray:
    """Resizes the shorter side to ``size`` (antialiased bicubic) and centre-crops."""
    h, w = pixels.shape[:2]
    if (h, w) == (size, size):
        return pixels
    im = Image.fromarray(pixels)
    scale = size / min(h, w)
    nh, nw = max(size, round(h * scale)), max(size, round(w * scale))
    im = im.resize((nw, nh), Image.BICUBIC)
    top, left = (nh - size) // 2, (nw - size) // 2
    return np.asarray(im.crop((left, top, left + size, top + size)))


_UNREADABLE = (OSError, ValueError, SyntaxError, Image.DecompressionBombError)


def read_frame(path: Path, size: int) -> bytes | None:
    """Stored bytes of one frame file (PNG), or None if the file cannot be decoded."""
    try:
        data = path.read_bytes()
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            if im.format == "PNG" and im.mode == "RGB" and im.size == (size, size):
                return data
            pixels = np.asarray(im.convert("RGB"))
    except _UNREADABLE:
        return None
    return _base.encode_png(_fit(pixels, size))


def _video_backend():
    try:
        import av  # noqa: PLC0415 - optional at import time, needed only for videos
    except ImportError:
        raise VideoDecoderUnavailableError(
            "reading videos needs a video decoder and none is installed: install PyAV "
            "(`pip install av`), or extract frames first and use source='frames'") from None
    return av


def read_video(path: Path, wanted: Sequence[int] | None, size: int) -> tuple[int, dict[int, np.ndarray]] | None:
    """Decodes the frames ``wanted`` (None = count only) of a video with PyAV.

    Returns:
      ``(num_frames, {index: u8[size,size,3]})``, or None if the file cannot be decoded.
    """
    av = _video_backend()
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            total = stream.frames
            if total <= 0 or wanted is None:
                total = sum(1 for packet in container.demux(stream) if packet.size)
                if wanted is None:
                    return total, {}
                container.seek(0)
            want = set(wanted)
            last = max(want) if want else -1
            out = {}
            for i, frame in enumerate(container.decode(stream)):
                if i in want:
                    out[i] = _fit(frame.to_ndarray(format="rgb24"), size)
                if i >= last:
                    break
            return total, out
    except (av.error.FFmpegError, OSError, ValueError, IndexError):
        return None


@dataclasses.dataclass
class _Skips:
    frames: list[str] = dataclasses.field(default_factory=list)
    videos: list[str] = dataclasses.field(default_factory=list)
    short: list[str] = dataclasses.field(default_factory=list)
    missing: int = 0

    def report(self, dataset: str, split: str) -> None:
        n = len(self.frames) + len(self.videos) + self.missing
        if not (n or self.short):
            return
        parts = []
        if self.frames:
            parts.append(f"{len(self.frames)} unreadable frame files (e.g. {self.frames[0]})")
        if self.videos:
            parts.append(f"{len(self.videos)} unreadable videos (e.g. {self.videos[0]})")
        if self.missing:
            parts.append(f"{self.missing} listed frame files that do not exist")
        if self.short:
            parts.append(f"{len(self.short)} videos with fewer readable frames than clip_length (e.g. {self.short[0]})")
        text = f"{dataset} split {split!r}: skipped " + "; ".join(parts)
        logging.warning(text)
        warnings.warn(text, SkippedFilesWarning, stacklevel=2)


# --------------------------------------------------------------------------- builders


def _check_common(image_size, frames_per_video, clip_length, source):
    size = check_int(image_size, name="image_size", minimum=16)
    fpv = check_int(frames_per_video, name="frames_per_video", minimum=0)
    clip = check_int(clip_length, name="clip_length", minimum=0)
    check_choice(source, SOURCES, name="source")
    if clip and fpv and fpv < clip:
        raise ValueError(f"frames_per_video={fpv} < clip_length={clip}; expected frames_per_video >= "
                         "clip_length (or 0 for every frame)")
    return size, fpv, clip


class _FrameBuilder(_base.Builder, skip_registration=True):
    """Shared writer: samples frames or clips of each discovered video into records."""

    DATASET_TITLE = ""

    def _entries(self, manual_dir: Path) -> tuple[list[VideoEntry], dict[str, int]]:
        """Videos found under ``manual_dir`` and, per split, listed frames that are missing."""
        raise NotImplementedError

    def check_layout(self, manual_dir: Path) -> int:
        """Raises :class:`LayoutError` unless ``manual_dir`` has this dataset's layout.

        Returns:
          The number of videos found.
        """
        return len(self._entries(Path(manual_dir))[0])

    def _info(self) -> tfds.core.DatasetInfo:
        c = self.builder_config
        pixels = (_base.clip_feature(c.image_size, c.clip_length, "png") if c.clip_length
                  else _base.frame_feature(c.image_size, "png"))
        key = "clip" if c.clip_length else "image"
        return tfds.core.DatasetInfo(
            builder=self,
            description=f"{self.DATASET_TITLE} from files in manual_dir ({c.description}).",
            features=tfds.features.FeaturesDict({
                key: pixels,
                "label": tfds.features.ClassLabel(names=_base.LABELS),
                "video_id": np.int64,
                "frame_index": np.int32,
                "video": tfds.features.Text(),
                "method": tfds.features.Text(),
            }),
            supervised_keys=(key, "label"),
            disable_shuffling=True,
        )

    def _split_generators(self, dl_manager):
        entries, missing = self._entries(Path(dl_manager.manual_dir))
        by_split = collections.defaultdict(list)
        for e in entries:
            by_split[e.split].append(e)
        if not by_split:
            raise LayoutError(f"{self.DATASET_TITLE}: the layout under {dl_manager.manual_dir} is right but holds no videos")
        return {s: self._generate_examples(s, es, missing.get(s, 0)) for s, es in sorted(by_split.items())}

    def _generate_examples(self, split: str, entries: list[VideoEntry], missing: int) -> Iterator:
        skips = _Skips(missing=missing)
        key = 0
        for e in tqdm.tqdm(entries, desc=f"{self.DATASET_TITLE} {split}", unit="video", leave=False):
            for record in self._records(e, skips):
                yield key, record
                key += 1
        skips.report(self.DATASET_TITLE, split)

    def _records(self, e: VideoEntry, skips: _Skips) -> Iterator[dict]:
        c = self.builder_config
        meta = {"label": e.label, "video_id": e.video_id, "video": e.name, "method": e.method}
        if e.video is not None:
            yield from self._video_records(e, meta, skips)
            return
        if c.clip_length == 0:
            for i in sample_indices(len(e.frames), c.frames_per_video):
                data = read_frame(e.frames[i], c.image_size)
                if data is None:
                    skips.frames.append(str(e.frames[i]))
                    continue
                yield {"image": data, "frame_index": i, **meta}
            return
        readable, index = [], []
        for i, path in enumerate(e.frames):  # clips need consecutive readable frames
            data = read_frame(path, c.image_size)
            if data is None:
                skips.frames.append(str(path))
            else:
                readable.append(data)
                index.append(i)
        starts = clip_starts(len(readable), c.clip_length, c.frames_per_video)
        if not starts:
            skips.short.append(e.name)
        for s in starts:
            yield {"clip": readable[s:s + c.clip_length], "frame_index": index[s], **meta}

    def _video_records(self, e: VideoEntry, meta: dict, skips: _Skips) -> Iterator[dict]:
        c = self.builder_config
        counted = read_video(e.video, None, c.image_size)
        if counted is None:
            skips.videos.append(str(e.video))
            return
        total = counted[0]
        if c.clip_length == 0:
            wanted = sample_indices(total, c.frames_per_video)
        else:
            starts = clip_starts(total, c.clip_length, c.frames_per_video)
            wanted = sorted({s + k for s in starts for k in range(c.clip_length)})
            if not starts:
                skips.short.append(e.name)
                return
        decoded = read_video(e.video, wanted, c.image_size)
        if decoded is None:
            skips.videos.append(str(e.video))
            return
        frames = decoded[1]
        if c.clip_length == 0:
            for i in wanted:
                if i in frames:
                    yield {"image": _base.encode_png(frames[i]), "frame_index": i, **meta}
            return
        for s in starts:
            clip = [frames.get(s + k) for k in range(c.clip_length)]
            if any(f is None for f in clip):
                skips.short.append(e.name)
                continue
            yield {"clip": [_base.encode_png(f) for f in clip], "frame_index": s, **meta}


_COMMON_DOC = """
    Args (as ``config_from`` keywords):
      image_size: stored frame size in pixels (default 256, DeepfakeBench's).
      frames_per_video: frames sampled evenly per video (default 32, as DeepfakeBench;
        0 = all).
      clip_length: 0 stores frames; T > 0 stores clips of T consecutive frames.
      source: "frames" (extracted frame folders), "videos" (needs PyAV) or "auto"
        (frames when every folder has them)."""


@dataclasses.dataclass
class FaceForensicsConfig(tfds.core.BuilderConfig):
    compression: str = "c23"
    methods: tuple[str, ...] = FF_METHODS[:4]
    source: str = "auto"
    image_size: int = 256
    frames_per_video: int = 32
    clip_length: int = 0

    @classmethod
    def make(cls, *, compression: str = "c23", methods: Sequence[str] = FF_METHODS[:4], source: str = "auto",
             image_size: int = 256, frames_per_video: int = 32, clip_length: int = 0) -> "FaceForensicsConfig":
        check_choice(compression, FF_COMPRESSIONS, name="compression")
        if isinstance(methods, str):
            methods = (methods,)
        methods = tuple(methods)
        if not methods:
            raise ValueError("methods is empty; expected one or more of " + ", ".join(FF_METHODS))
        for m in methods:
            check_choice(m, FF_METHODS, name="methods")
        methods = tuple(m for m in FF_METHODS if m in methods)  # canonical order, no repeats
        size, fpv, clip = _check_common(image_size, frames_per_video, clip_length, source)
        short = "+".join(_FF_SHORT[m] for m in methods)
        return cls(name=_base.config_name(compression, short, source, f"{size}px", f"fpv{fpv}", f"clip{clip}"),
                   description=f"compression {compression}, methods {list(methods)}, source {source}, "
                               f"{size}px, {fpv or 'all'} frames per video, clip length {clip}",
                   compression=compression, methods=methods, source=source, image_size=size,
                   frames_per_video=fpv, clip_length=clip)


class FaceForensics(_FrameBuilder):
    __doc__ = "FaceForensics++ (official layout) as frames or clips." + _COMMON_DOC + """
      compression: "c23" (default), "c40" or "raw".
      methods: manipulation methods used as fakes (default the four of the paper).
    """
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


@dataclasses.dataclass
class CelebDFConfig(tfds.core.BuilderConfig):
    source: str = "auto"
    image_size: int = 256
    frames_per_video: int = 32
    clip_length: int = 0

    @classmethod
    def make(cls, *, source: str = "auto", image_size: int = 256, frames_per_video: int = 32,
             clip_length: int = 0) -> "CelebDFConfig":
        size, fpv, clip = _check_common(image_size, frames_per_video, clip_length, source)
        return cls(name=_base.config_name(source, f"{size}px", f"fpv{fpv}", f"clip{clip}"),
                   description=f"source {source}, {size}px, {fpv or 'all'} frames per video, clip length {clip}",
                   source=source, image_size=size, frames_per_video=fpv, clip_length=clip)


class CelebDF(_FrameBuilder):
    __doc__ = "Celeb-DF v2 (official layout; test split = List_of_testing_videos.txt)." + _COMMON_DOC
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


@dataclasses.dataclass
class DeepfakeBenchConfig(tfds.core.BuilderConfig):
    json_path: str = ""
    dataset: str | None = None
    compression: str = "c23"
    image_size: int = 256
    frames_per_video: int = 32
    clip_length: int = 0

    @classmethod
    def make(cls, *, json_path: str | os.PathLike = "", dataset: str | None = None, compression: str = "c23",
             image_size: int = 256, frames_per_video: int = 32, clip_length: int = 0) -> "DeepfakeBenchConfig":
        json_path = os.fspath(json_path)
        if not json_path.endswith(".json"):
            raise ValueError(f"json_path={json_path!r} is not valid; expected the dataset JSON written by "
                             "DeepfakeBench's preprocessing/rearrange.py (e.g. 'FaceForensics++.json')")
        if dataset is not None and not isinstance(dataset, str):
            raise ValueError(f"dataset={dataset!r} is not valid; expected None or a top-level key of the JSON")
        size, fpv, clip = _check_common(image_size, frames_per_video, clip_length, "frames")
        digest = hashlib.blake2b(json_path.encode(), digest_size=3).hexdigest()  # same stem, other folder
        return cls(name=_base.config_name(Path(json_path).stem, digest, dataset or "all", compression,
                                          f"{size}px", f"fpv{fpv}", f"clip{clip}"),
                   description=f"{json_path} [{dataset or 'its dataset'}], {compression}, {size}px, "
                               f"{fpv or 'all'} frames per video, clip length {clip}",
                   json_path=json_path, dataset=dataset, compression=compression, image_size=size,
                   frames_per_video=fpv, clip_length=clip)


class DeepfakeBench(_FrameBuilder):
    __doc__ = "DeepfakeBench's preprocessed frames, indexed by its dataset JSON." + """

    Args (as ``config_from`` keywords):
      json_path: the dataset JSON (absolute, or relative to manual_dir).
      dataset: its top-level key (default: the only one).
      compression: level chosen in FaceForensics-style JSONs (default "c23").
      image_size, frames_per_video, clip_length: as for the other real datasets.
    """
    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "First release."}
    name = "deepfakebench"
    CONFIG_CLASS = DeepfakeBenchConfig
    BUILDER_CONFIGS = [DeepfakeBenchConfig.make(json_path="FaceForensics++.json")]
    DATASET_TITLE = "DeepfakeBench"
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        "Run DeepfakeBench's preprocessing (or get its preprocessed frames) and pass the folder "
        "holding the dataset folders (its datasets/rgb) as manual_dir and the JSON as json_path.")

    def _entries(self, manual_dir):
        c = self.builder_config
        path = Path(c.json_path)
        if not path.is_absolute():
            path = manual_dir / path
        return deepfakebench_entries(path, manual_dir, dataset=c.dataset, compression=c.compression)
