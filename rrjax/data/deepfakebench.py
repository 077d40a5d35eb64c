"""DeepfakeBench (Yan et al., 2023) preprocessed frames, indexed by its dataset JSON.

The JSON is what its ``preprocessing/rearrange.py`` writes, ``{dataset: {label: {split:
[{comp:] {video: {"label", "frames": [paths]}}}}}`` with splits ``train``/``val``/
``test``; the frame folders live under ``manual_dir``. Frame paths in the JSON may be
absolute paths from the machine that wrote it: a path that is not under ``manual_dir``
is looked up there by dropping leading components until it exists. A listed path that
exists only outside ``manual_dir`` is treated like a symlink out of it (skipped and
counted unless ``follow_symlinks=True``). Records, sampling and reading limits:
:mod:`rrjax.data.frames`.

References:
  Yan et al., "DeepfakeBench: A Comprehensive Benchmark of Deepfake Detection", NeurIPS 2023.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import json
import os
import warnings
from pathlib import Path

import tensorflow_datasets as tfds

from rrjax.data import _base, frames
from rrjax.data.frames import LayoutError, VideoEntry

__all__ = ["DEEPFAKEBENCH_LABELS", "DeepfakeBench", "DeepfakeBenchConfig", "deepfakebench_entries"]

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


class _Rerooter:
    """Finds a JSON frame path under ``root`` by dropping leading path components."""

    def __init__(self, root: Path):
        self.root = root
        self.real_root = Path(os.path.realpath(root))
        self.drop: list[int] = []  # drop counts that worked before, tried first

    def __call__(self, text: str) -> Path | None:
        path = Path(text)
        if path.is_absolute() and path.exists() and Path(os.path.realpath(path)).is_relative_to(self.real_root):
            return path
        parts = path.parts[1:] if path.is_absolute() else path.parts
        for k in self.drop + [k for k in range(len(parts)) if k not in self.drop]:
            cand = self.root.joinpath(*parts[k:])
            if cand.exists():
                if k not in self.drop:
                    self.drop.insert(0, k)
                return cand
        # Only outside manual_dir: the reader refuses it unless follow_symlinks=True.
        return path if path.is_absolute() and path.exists() else None


def _load_json(json_path: Path, manual_dir: Path, dataset: str | None) -> tuple[dict, str]:
    """The JSON's object and the dataset key chosen in it."""
    if not json_path.is_file():
        raise frames.layout_error("DeepfakeBench", manual_dir, [f"{json_path}  (the dataset JSON from rearrange.py)"])
    try:
        data = json.loads(frames.read_metadata(json_path))
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
    return data, dataset


def _label(name: str, guessed: set[str]) -> int:
    if name in DEEPFAKEBENCH_LABELS:
        return DEEPFAKEBENCH_LABELS[name]
    label = 0 if "real" in name.lower() else 1
    guessed.add(f"{name}->{_base.LABELS[label]}")
    return label


def deepfakebench_entries(json_path: Path, manual_dir: Path, *, dataset: str | None,
                          compression: str) -> tuple[list[VideoEntry], dict[str, int]]:
    """Videos listed in a DeepfakeBench dataset JSON.

    Returns:
      ``(entries, missing)`` with ``missing[split]`` the number of listed frame files
      that do not exist (not even under ``manual_dir``).
    """
    data, dataset = _load_json(json_path, manual_dir, dataset)
    reroot = _Rerooter(manual_dir)
    entries, missing, guessed = [], collections.Counter(), set()
    for label_name, by_split in data[dataset].items():
        for split_name, videos in by_split.items():
            if split_name not in frames.SPLIT_NAMES:
                raise LayoutError(f"{json_path}: split {split_name!r} under {dataset}/{label_name}; "
                                  f"expected train, val or test")
            split = frames.SPLIT_NAMES[split_name]
            if videos and all(isinstance(v, dict) and "frames" not in v for v in videos.values()):
                # FaceForensics-style JSONs add a compression level between split and video.
                if compression not in videos:
                    raise ValueError(f"compression={compression!r} is not in {json_path} "
                                     f"({dataset}/{label_name}/{split_name}); expected one of {sorted(videos)}")
                videos = videos[compression]
            for video, info in videos.items():
                found = [reroot(text) for text in info.get("frames", [])]
                missing[split] += sum(p is None for p in found)
                paths = sorted((p for p in found if p is not None), key=frames.natural_key)  # listed in dir order
                entries.append(VideoEntry(f"{label_name}/{video}", _label(info.get("label", label_name), guessed),
                                          label_name, split, frames=tuple(paths)))
    if guessed:
        warnings.warn(f"labels not in DeepfakeBench's label_dict were mapped by name: {sorted(guessed)}",
                      UserWarning, stacklevel=2)
    if entries and not any(e.frames for e in entries):
        example = next(iter(next(iter(next(iter(data[dataset].values())).values())).values()), {})
        first = (example.get("frames") or ["?"])[0] if isinstance(example, dict) else "?"
        raise frames.layout_error("DeepfakeBench frames", manual_dir,
                                  [f"{first}  (and every other frame in {json_path.name}, "
                                   f"also after dropping leading folders)"],
                                  "Pass manual_dir= the folder that holds the dataset folders named in the JSON.")
    return entries, {s: n for s, n in missing.items() if n}


@dataclasses.dataclass
class DeepfakeBenchConfig(frames.FrameConfig):
    json_path: str = ""
    dataset: str | None = None
    compression: str = "c23"

    @classmethod
    def make(cls, *, json_path: str | os.PathLike = "", dataset: str | None = None, compression: str = "c23",
             **common) -> "DeepfakeBenchConfig":
        json_path = os.fspath(json_path)
        if not json_path.endswith(".json"):
            raise ValueError(f"json_path={json_path!r} is not valid; expected the dataset JSON written by "
                             "DeepfakeBench's preprocessing/rearrange.py (e.g. 'FaceForensics++.json')")
        if dataset is not None and not isinstance(dataset, str):
            raise ValueError(f"dataset={dataset!r} is not valid; expected None or a top-level key of the JSON")
        fields, parts, text = cls.common(**common)
        digest = hashlib.blake2b(json_path.encode(), digest_size=3).hexdigest()  # same stem, other folder
        return cls(name=_base.config_name(Path(json_path).stem, digest, dataset or "all", compression, *parts),
                   description=f"{json_path} [{dataset or 'its dataset'}], {compression}, {text}",
                   json_path=json_path, dataset=dataset, compression=compression, **fields)


class DeepfakeBench(frames.FrameBuilder):
    __doc__ = "DeepfakeBench's preprocessed frames, indexed by its dataset JSON." + frames.COMMON_DOC + """
      json_path: the dataset JSON (absolute, or relative to manual_dir).
      dataset: its top-level key (default: the only one).
      compression: level chosen in FaceForensics-style JSONs (default "c23").
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
