"""What the real-dataset builders share: video entries, listing, sampling, accounting, the writer.

A real dataset module (:mod:`rrjax.data.faceforensics`, :mod:`rrjax.data.celeb_df`,
:mod:`rrjax.data.deepfakebench`) finds the videos under ``manual_dir`` as
:class:`VideoEntry` items (a folder of frames or a video file) and subclasses
:class:`FrameBuilder`, which samples frames or clips of each video into records.

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

Files are read through :mod:`rrjax.data.readers` (regular files inside ``manual_dir``
only, size limits). Unreadable or refused frames and videos are skipped and counted in a
:class:`SkippedFilesWarning` (and the absl log) at the end of each split; a missing or
wrong layout raises :class:`LayoutError` listing what was expected and not found.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import re
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import tensorflow_datasets as tfds
import tqdm
from absl import logging

from rrjax._validation import check_choice, check_int
from rrjax.data import _base, readers

__all__ = [
    "FrameBuilder",
    "FrameConfig",
    "LayoutError",
    "SkippedFilesWarning",
    "VideoEntry",
    "clip_starts",
    "sample_indices",
]

SOURCES = ("auto", "frames", "videos")
SPLIT_NAMES = {"train": "train", "val": "validation", "validation": "validation", "test": "test"}
IMAGE_EXT = {".png", ".jpg", ".jpeg", ".bmp", ".webp"}
VIDEO_EXT = {".mp4", ".avi", ".mov", ".mkv", ".webm"}
METADATA_MAX_BYTES = 2**30  # split lists and dataset JSONs (DeepfakeBench's are tens of MB)


class LayoutError(FileNotFoundError):
    """The files under ``manual_dir`` do not have the layout a builder expects."""


class SkippedFilesWarning(UserWarning):
    """Some frames or videos could not be read, or were refused, and were left out of a split."""


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


def natural_key(path: Path):
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", path.name)]


def frame_files(folder: Path) -> tuple[Path, ...]:
    """Image files of a frame folder in natural order (any file type; the reader refuses the odd ones)."""
    return tuple(sorted((p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXT), key=natural_key))


def frame_folders(folder: Path) -> list[Path]:
    return sorted((p for p in folder.iterdir() if p.is_dir()), key=natural_key)


def video_files(folder: Path) -> list[Path]:
    """Video files of a folder; FIFOs and devices are listed too, so that they are counted when refused."""
    return sorted((p for p in folder.iterdir() if p.suffix.lower() in VIDEO_EXT and not p.is_dir()),
                  key=natural_key)


def entries_in(source: str, frames_dir: Path | None, videos_dir: Path | None) -> list[tuple[str, Path]]:
    """``(video name, frame folder or video file)`` of one category folder."""
    if source == "frames":
        return [(d.name, d) for d in frame_folders(frames_dir)]
    return [(v.stem, v) for v in video_files(videos_dir)]


def make_entry(rel: str, label: int, method: str, split: str, source: str, path: Path) -> VideoEntry:
    if source == "frames":
        return VideoEntry(rel, label, method, split, frames=frame_files(path))
    return VideoEntry(rel, label, method, split, video=path)


def read_metadata(path: Path) -> str:
    """Text of a split list or dataset JSON (a regular file of at most 1 GiB, else LayoutError)."""
    try:
        return readers.read_bytes(path, readers.Limits(max_file_bytes=METADATA_MAX_BYTES)).decode()
    except readers.FileSkipped as e:
        raise LayoutError(f"{path} cannot be read as a list of videos ({e.reason}: expected a regular "
                          f"file of at most {METADATA_MAX_BYTES} bytes)") from None
    except UnicodeDecodeError as e:
        raise LayoutError(f"{path} is not UTF-8 text ({e})") from None


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


def layout_error(dataset: str, root: Path, missing: Sequence[str], hint: str = "") -> LayoutError:
    listed = "\n".join(f"  {m}" for m in missing)
    return LayoutError(
        f"{dataset} layout not found under {root}.\nExpected and not found:\n{listed}\n"
        f"Found these folders:\n{_describe(root)}" + (f"\n{hint}" if hint else ""))


def pick_source(source: str, frame_dirs: Sequence[Path | None]) -> str:
    if source != "auto":
        return source
    return "frames" if all(d is not None for d in frame_dirs) else "videos"


def missing_source(requested: str, source: str, frames_dir: Path | None, videos_dir: Path | None,
                   frames_text: str, videos_text: str) -> str | None:
    """What to list as missing for one category folder, or None when its source is there."""
    if requested == "auto" and frames_dir is None and videos_dir is None:
        return f"{frames_text}  or  {videos_text}"
    if source == "frames" and frames_dir is None:
        return frames_text
    if source == "videos" and videos_dir is None:
        return videos_text
    return None


def first_dir(*candidates: Path) -> Path | None:
    return next((c for c in candidates if c.is_dir()), None)


# --------------------------------------------------------------------------- sampling


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


# --------------------------------------------------------------------------- accounting


_SKIP_TEXT = {  # reason -> what the warning calls such files, in the order it lists them
    "frame": "unreadable frame files",
    "video": "unreadable videos",
    "special": "entries that are not regular files (FIFOs, devices, sockets)",
    "outside": "files whose real path is outside manual_dir (pass follow_symlinks=True to read them)",
    "bytes": "files larger than max_file_bytes={max_file_bytes}",
    "pixels": "images or videos with more than max_pixels={max_pixels} pixels per frame",
    "frames": "videos with more than max_video_frames={max_video_frames} frames",
}


@dataclasses.dataclass
class Skips:
    """Files left out of one split, by reason (see :data:`_SKIP_TEXT`)."""

    limits: readers.Limits
    missing: int = 0
    by_reason: dict[str, list[str]] = dataclasses.field(default_factory=lambda: collections.defaultdict(list))
    short: list[str] = dataclasses.field(default_factory=list)

    def add(self, kind: str, error: readers.FileSkipped) -> None:
        """Counts a refused file; ``kind`` ("frame" or "video") names undecodable ones."""
        self.by_reason[kind if error.reason == "unreadable" else error.reason].append(error.path)

    def report(self, dataset: str, split: str) -> str:
        """Logs and warns (:class:`SkippedFilesWarning`) what was skipped, if anything.

        Returns:
          The text of the warning ("" when nothing was skipped).
        """
        limits = dataclasses.asdict(self.limits)
        parts = [f"{len(paths)} {_SKIP_TEXT[reason].format(**limits)} (e.g. {paths[0]})"
                 for reason in _SKIP_TEXT if (paths := self.by_reason.get(reason))]
        if self.missing:
            parts.append(f"{self.missing} listed frame files that do not exist")
        if self.short:
            parts.append(f"{len(self.short)} videos with fewer readable frames than clip_length (e.g. {self.short[0]})")
        if not parts:
            return ""
        text = f"{dataset} split {split!r}: skipped " + "; ".join(parts)
        logging.warning(text)
        warnings.warn(text, SkippedFilesWarning, stacklevel=2)
        return text


# --------------------------------------------------------------------------- config


COMMON_DOC = """
    Args (as ``config_from`` keywords), shared by the real datasets:
      image_size: stored frame size in pixels (default 256, DeepfakeBench's).
      frames_per_video: frames sampled evenly per video (default 32, as DeepfakeBench;
        0 = all).
      clip_length: 0 stores frames; T > 0 stores clips of T consecutive frames.
      follow_symlinks: read files whose real path is outside manual_dir (default False:
        such files are skipped and counted).
      max_pixels: images and video streams with more pixels per frame are skipped
        (default 4096 * 4096).
      max_file_bytes: frame files larger than this are skipped (default 64 MiB).
      max_video_frames: videos with more frames are skipped (default 18000)."""

SOURCE_DOC = """
      source: "frames" (extracted frame folders), "videos" (needs PyAV) or "auto"
        (frames when every folder has them)."""


@dataclasses.dataclass
class FrameConfig(tfds.core.BuilderConfig):
    """Config fields every real dataset has: storage size, sampling, and reading limits."""

    image_size: int = 256
    frames_per_video: int = 32
    clip_length: int = 0
    follow_symlinks: bool = False
    max_pixels: int = readers.DEFAULT_MAX_PIXELS
    max_file_bytes: int = readers.DEFAULT_MAX_FILE_BYTES
    max_video_frames: int = readers.DEFAULT_MAX_VIDEO_FRAMES

    @staticmethod
    def common(*, image_size: int = 256, frames_per_video: int = 32, clip_length: int = 0,
               follow_symlinks: bool = False, max_pixels: int = readers.DEFAULT_MAX_PIXELS,
               max_file_bytes: int = readers.DEFAULT_MAX_FILE_BYTES,
               max_video_frames: int = readers.DEFAULT_MAX_VIDEO_FRAMES) -> tuple[dict, list[str], str]:
        """Validated common fields, their parts of the config name, and their description.

        Limits at their defaults add nothing to the name, so configs named before the
        limits existed keep their names.
        """
        fields = dict(image_size=check_int(image_size, name="image_size", minimum=16),
                      frames_per_video=check_int(frames_per_video, name="frames_per_video", minimum=0),
                      clip_length=check_int(clip_length, name="clip_length", minimum=0),
                      follow_symlinks=follow_symlinks,
                      max_pixels=check_int(max_pixels, name="max_pixels", minimum=1),
                      max_file_bytes=check_int(max_file_bytes, name="max_file_bytes", minimum=1),
                      max_video_frames=check_int(max_video_frames, name="max_video_frames", minimum=1))
        if not isinstance(follow_symlinks, bool):
            raise ValueError(f"follow_symlinks={follow_symlinks!r} is not valid; expected True or False")
        size, fpv, clip = fields["image_size"], fields["frames_per_video"], fields["clip_length"]
        if clip and fpv and fpv < clip:
            raise ValueError(f"frames_per_video={fpv} < clip_length={clip}; expected frames_per_video >= "
                             "clip_length (or 0 for every frame)")
        parts = [f"{size}px", f"fpv{fpv}", f"clip{clip}"]
        defaults = {"max_pixels": ("px", readers.DEFAULT_MAX_PIXELS),
                    "max_file_bytes": ("bytes", readers.DEFAULT_MAX_FILE_BYTES),
                    "max_video_frames": ("frames", readers.DEFAULT_MAX_VIDEO_FRAMES)}
        parts += [f"max{tag}{fields[k]}" for k, (tag, default) in defaults.items() if fields[k] != default]
        parts += ["links"] if follow_symlinks else []
        text = f"{size}px, {fpv or 'all'} frames per video, clip length {clip}"
        text += "".join(f", {k}={fields[k]}" for k in defaults if fields[k] != defaults[k][1])
        text += ", follows symlinks out of manual_dir" if follow_symlinks else ""
        return fields, parts, text


def check_source(source: str) -> str:
    return check_choice(source, SOURCES, name="source")


# --------------------------------------------------------------------------- builder


class FrameBuilder(_base.Builder, skip_registration=True):
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
        manual_dir = Path(dl_manager.manual_dir)
        entries, missing = self._entries(manual_dir)
        by_split = collections.defaultdict(list)
        for e in entries:
            by_split[e.split].append(e)
        if not by_split:
            raise LayoutError(f"{self.DATASET_TITLE}: the layout under {manual_dir} is right but holds no videos")
        limits = readers.Limits.under(manual_dir, self.builder_config)
        return {s: self._generate_examples(s, es, Skips(limits, missing.get(s, 0)))
                for s, es in sorted(by_split.items())}

    def _generate_examples(self, split: str, entries: list[VideoEntry], skips: Skips) -> Iterator:
        key = 0
        for e in tqdm.tqdm(entries, desc=f"{self.DATASET_TITLE} {split}", unit="video", leave=False):
            meta = {"label": e.label, "video_id": e.video_id, "video": e.name, "method": e.method}
            if e.video is not None:
                records = self._video_records(e, skips)
            elif self.builder_config.clip_length:
                records = self._clip_records(e, skips)
            else:
                records = self._frame_records(e, skips)
            for record in records:
                yield key, {**record, **meta}
                key += 1
        text = skips.report(self.DATASET_TITLE, split)
        if key == 0:  # tfds would fail with a bare "No examples were yielded"
            raise LayoutError(f"{self.DATASET_TITLE} split {split!r} has no readable frames: "
                              f"{text or 'the frame folders are empty'}")

    def _read_frame(self, path: Path, skips: Skips) -> bytes | None:
        try:
            return readers.read_frame(path, self.builder_config.image_size, skips.limits)
        except readers.FileSkipped as e:
            skips.add("frame", e)
            return None

    def _frame_records(self, e: VideoEntry, skips: Skips) -> Iterator[dict]:
        for i in sample_indices(len(e.frames), self.builder_config.frames_per_video):
            data = self._read_frame(e.frames[i], skips)
            if data is not None:
                yield {"image": data, "frame_index": i}

    def _clip_records(self, e: VideoEntry, skips: Skips) -> Iterator[dict]:
        c = self.builder_config
        readable, index = [], []
        for i, path in enumerate(e.frames):  # clips need consecutive readable frames
            data = self._read_frame(path, skips)
            if data is not None:
                readable.append(data)
                index.append(i)
        starts = clip_starts(len(readable), c.clip_length, c.frames_per_video)
        if not starts:
            skips.short.append(e.name)
        for s in starts:
            yield {"clip": readable[s:s + c.clip_length], "frame_index": index[s]}

    def _video_records(self, e: VideoEntry, skips: Skips) -> Iterator[dict]:
        c = self.builder_config
        try:
            total = readers.read_video(e.video, None, c.image_size, skips.limits)[0]
            if c.clip_length == 0:
                wanted = sample_indices(total, c.frames_per_video)
            else:
                starts = clip_starts(total, c.clip_length, c.frames_per_video)
                wanted = sorted({s + k for s in starts for k in range(c.clip_length)})
                if not starts:
                    skips.short.append(e.name)
                    return
            frames = readers.read_video(e.video, wanted, c.image_size, skips.limits)[1]
        except readers.FileSkipped as err:
            skips.add("video", err)
            return
        if c.clip_length == 0:
            for i in wanted:
                if i in frames:
                    yield {"image": _base.encode_png(frames[i]), "frame_index": i}
            return
        for s in starts:
            clip = [frames.get(s + k) for k in range(c.clip_length)]
            if any(f is None for f in clip):
                skips.short.append(e.name)
                continue
            yield {"clip": [_base.encode_png(f) for f in clip], "frame_index": s}
