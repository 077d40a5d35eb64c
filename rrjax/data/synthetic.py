"""TFDS builders for the synthetic benchmark (the embedded default data).

``synthetic_images``: face images, half real, half face-swapped (see
:mod:`rrjax.data.render` for how). ``synthetic_videos``: clips of one moving person,
fakes swapped frame by frame with temporally inconsistent blending.

Sample ``i`` of a split is a function of ``(seed, split, i)`` alone (its own
``np.random.Generator``), so a split of 200 is the first 200 samples of a split of
2000, and labels alternate (even ``i`` real, odd ``i`` fake): every prefix of even
length is exactly balanced. The stored bytes are the samples' final JPEG compression,
shared by both classes, so storage adds no further loss.

Example::

    builder = SyntheticImages(config=SyntheticImages.config_from(image_size=64, test_size=200))
    builder.download_and_prepare()
    test = builder.as_data_source("test")   # random access, no TensorFlow
"""

from __future__ import annotations

import dataclasses

import numpy as np
import tensorflow_datasets as tfds
import tqdm

from rrjax._validation import check_int
from rrjax.data import _base, render

__all__ = ["SyntheticImages", "SyntheticVideos", "SyntheticImagesConfig", "SyntheticVideosConfig"]

_SPLITS = ("train", "validation", "test")
_SPLIT_CODE = {"train": 0, "validation": 1, "test": 2}  # part of each sample's seed


def sample_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """The generator of one sample: independent of order, workers and split sizes."""
    return np.random.default_rng(np.random.SeedSequence([seed, _SPLIT_CODE[split], index]))


def _check_sizes(**sizes: int) -> dict[str, int]:
    out = {k: check_int(v, name=k, minimum=0) for k, v in sizes.items()}
    if not any(out.values()):
        raise ValueError(f"all split sizes are 0 ({out}); expected at least one split with samples")
    return out


class _Synthetic(_base.Builder, skip_registration=True):
    """Generated splits: ``train_size`` / ``validation_size`` / ``test_size`` samples (0 = not built)."""

    def _split_generators(self, dl_manager):
        c = self.builder_config
        sizes = {"train": c.train_size, "validation": c.validation_size, "test": c.test_size}
        return {s: self._generate_examples(s, n) for s, n in sizes.items() if n > 0}


@dataclasses.dataclass
class SyntheticImagesConfig(tfds.core.BuilderConfig):
    """Synthetic image benchmark: resolution, split sizes (0 = split not built), seed."""

    image_size: int = 256
    train_size: int = 2000
    validation_size: int = 500
    test_size: int = 500
    seed: int = 0

    @classmethod
    def make(cls, *, image_size: int = 256, train_size: int = 2000, validation_size: int = 500,
             test_size: int = 500, seed: int = 0) -> "SyntheticImagesConfig":
        size = check_int(image_size, name="image_size", minimum=32)
        n = _check_sizes(train_size=train_size, validation_size=validation_size, test_size=test_size)
        seed = check_int(seed, name="seed", minimum=0)
        return cls(
            name=_base.config_name(f"{size}px", n["train_size"], n["validation_size"], n["test_size"], f"seed{seed}"),
            description=f"{size}x{size} images, splits {n}, seed {seed}",
            image_size=size, seed=seed, **n)


class SyntheticImages(_Synthetic):
    """Procedural faces, real vs face-swapped, JPEG-compressed alike (256 px by default)."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "First release."}
    name = "synthetic_images"
    CONFIG_CLASS = SyntheticImagesConfig
    BUILDER_CONFIGS = [SyntheticImagesConfig.make(), SyntheticImagesConfig.make(image_size=64)]

    def _info(self) -> tfds.core.DatasetInfo:
        c = self.builder_config
        return tfds.core.DatasetInfo(
            builder=self,
            description=(
                "Synthetic deepfake images: procedurally rendered faces (label 0) and the same "
                "kind of faces with the inner face replaced by a lower-resolution, up-sampled, "
                "colour-mismatched face blended with a blurred mask (label 1). Both classes share "
                "sensor noise and JPEG compression."),
            features=tfds.features.FeaturesDict({
                "image": _base.frame_feature(c.image_size, "jpeg"),
                "label": tfds.features.ClassLabel(names=_base.LABELS),
                "video_id": np.int64,
                "method": tfds.features.Text(),
            }),
            supervised_keys=("image", "label"),
            disable_shuffling=True,
        )

    def _generate_examples(self, split: str, n: int):
        c = self.builder_config
        for i in tqdm.trange(n, desc=f"synthetic_images {split}", unit="image", leave=False):
            jpeg, method = render.render_image(sample_rng(c.seed, split, i), c.image_size, fake=bool(i % 2))
            yield i, {"image": jpeg, "label": i % 2, "video_id": i, "method": method}


@dataclasses.dataclass
class SyntheticVideosConfig(tfds.core.BuilderConfig):
    """Synthetic video benchmark: frame size, clip length, split sizes, seed."""

    image_size: int = 64
    num_frames: int = 16
    train_size: int = 600
    validation_size: int = 100
    test_size: int = 200
    seed: int = 0

    @classmethod
    def make(cls, *, image_size: int = 64, num_frames: int = 16, train_size: int = 600,
             validation_size: int = 100, test_size: int = 200, seed: int = 0) -> "SyntheticVideosConfig":
        size = check_int(image_size, name="image_size", minimum=32)
        frames = check_int(num_frames, name="num_frames", minimum=1)
        n = _check_sizes(train_size=train_size, validation_size=validation_size, test_size=test_size)
        seed = check_int(seed, name="seed", minimum=0)
        return cls(
            name=_base.config_name(f"{size}px", f"{frames}f", n["train_size"], n["validation_size"],
                                   n["test_size"], f"seed{seed}"),
            description=f"{frames} frames of {size}x{size}, splits {n}, seed {seed}",
            image_size=size, num_frames=frames, seed=seed, **n)


class SyntheticVideos(_Synthetic):
    """Clips of one moving person, real vs swapped per frame (16 x 64 x 64 by default).

    64 px keeps clip models (3-D convolutions over 16 frames) affordable on a CPU; pass
    ``image_size=112`` for the common video-model input size.
    """

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "First release."}
    name = "synthetic_videos"
    CONFIG_CLASS = SyntheticVideosConfig
    BUILDER_CONFIGS = [SyntheticVideosConfig.make()]

    def _info(self) -> tfds.core.DatasetInfo:
        c = self.builder_config
        return tfds.core.DatasetInfo(
            builder=self,
            description=(
                "Synthetic deepfake clips: one procedurally rendered person moving smoothly "
                "(label 0), or the same with the face swapped in every frame and the blending "
                "mask and colour re-drawn per frame (label 1)."),
            features=tfds.features.FeaturesDict({
                "clip": _base.clip_feature(c.image_size, c.num_frames, "jpeg"),
                "label": tfds.features.ClassLabel(names=_base.LABELS),
                "video_id": np.int64,
                "method": tfds.features.Text(),
            }),
            supervised_keys=("clip", "label"),
            disable_shuffling=True,
        )

    def _generate_examples(self, split: str, n: int):
        c = self.builder_config
        for i in tqdm.trange(n, desc=f"synthetic_videos {split}", unit="clip", leave=False):
            frames, method = render.render_clip(sample_rng(c.seed, split, i), c.image_size, c.num_frames,
                                                fake=bool(i % 2))
            yield i, {"clip": frames, "label": i % 2, "video_id": i, "method": method}
