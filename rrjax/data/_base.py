"""What every rrjax TFDS builder shares: array_record output, config naming, features.

Builders write array_record shards through tfds's own writer and are read back with
``tfds.data_source`` / ``builder.as_data_source`` (random access). Neither step needs
TensorFlow: images arrive at the writer already encoded (Pillow), so tfds's TF-based
encoders are never called, and tfds decodes them with Pillow (or OpenCV) when reading.
With TensorFlow installed the same files also load through ``tfds.load``.
"""

from __future__ import annotations

import dataclasses
import io
import re
from typing import Any, ClassVar

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image

LABELS = ("real", "fake")  # index = the label: 0 = real, 1 = fake


def frame_feature(size: int, encoding: str) -> tfds.features.Image:
    """An RGB frame of fixed ``size x size``; ``encoding`` is what the bytes will hold."""
    return tfds.features.Image(shape=(size, size, 3), encoding_format=encoding)


def clip_feature(size: int, length: int, encoding: str) -> tfds.features.Sequence:
    # tfds.features.Video needs TensorFlow at construction; a fixed-length sequence of
    # images stores the same thing and decodes to a list of u8[H,W,3] frames.
    return tfds.features.Sequence(frame_feature(size, encoding), length=length)


def encode_png(pixels: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def config_name(*parts: Any) -> str:
    """A directory-safe config name built from the values that define the data."""
    return re.sub(r"[^A-Za-z0-9.+]+", "_", "_".join(str(p) for p in parts))


class Builder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Base class: array_record by default, configs created from keyword arguments.

    Subclasses define ``CONFIG_CLASS`` (a ``tfds.core.BuilderConfig`` dataclass with a
    ``make(**kwargs)`` classmethod that validates the values and names the config) and
    list their predefined configs in ``BUILDER_CONFIGS``.
    """

    CONFIG_CLASS: ClassVar[type]

    def __init__(self, *, file_format: str | None = None, **kwargs: Any):
        super().__init__(file_format=file_format or "array_record", **kwargs)

    @classmethod
    def config_from(cls, **kwargs: Any) -> tfds.core.BuilderConfig:
        """The config for these keyword arguments (a predefined one when they match).

        tfds refuses a custom config named like a predefined one, and names encode
        every value, so equal names mean equal configs.
        """
        config = cls.CONFIG_CLASS.make(**kwargs)
        for known in cls.BUILDER_CONFIGS:
            if known.name == config.name:
                return known
        return config

    @classmethod
    def config_fields(cls) -> tuple[str, ...]:
        base = {f.name for f in dataclasses.fields(tfds.core.BuilderConfig)}
        return tuple(f.name for f in dataclasses.fields(cls.CONFIG_CLASS) if f.name not in base)
