"""An example dataset defined outside rrjax and registered when imported.

``toy_images``: ``num_images`` flat-ish RGB images of ``image_size`` pixels per split
(train and test), label ``i % 2``; image ``i`` is :func:`toy_pixels` ``(i, image_size)``.
Importing this module is all a script needs to use it by name, e.g.
``experiments/sweep.py --extra_modules=tests.extensions.toy_dataset --dataset=toy_images``
or ``data.load("toy_images", "test")``.

The pattern for your own dataset: a ``tfds.core.BuilderConfig`` dataclass with a
``make(**kwargs)`` classmethod that validates the keywords and names the config, a
subclass of ``rrjax.data.Builder`` (array_record, configs from keywords) that writes
encoded image bytes and a label, and one ``rrjax.data.register`` call.
"""

from __future__ import annotations

import dataclasses
import io

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image

from rrjax import data

__all__ = ["ToyImages", "ToyImagesConfig", "toy_pixels"]


def toy_pixels(i: int, size: int) -> np.ndarray:
    """Image ``i``: ``u8[size,size,3]``, value ``60 + 120 * (i % 2) + i`` in channel 0, a
    horizontal ramp ``0..size-1`` in channel 1, ``i`` in channel 2 (fakes are brighter)."""
    pixels = np.empty((size, size, 3), np.uint8)
    pixels[..., 0] = 60 + 120 * (i % 2) + i
    pixels[..., 1] = np.arange(size, dtype=np.uint8)[None, :]
    pixels[..., 2] = i
    return pixels


@dataclasses.dataclass
class ToyImagesConfig(tfds.core.BuilderConfig):
    num_images: int = 8
    image_size: int = 32

    @classmethod
    def make(cls, *, num_images: int = 8, image_size: int = 32) -> "ToyImagesConfig":
        for key, value, low in (("num_images", num_images, 1), ("image_size", image_size, 8)):
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= 64:
                raise ValueError(f"{key}={value!r} is not valid; expected an integer in [{low}, 64]")
        return cls(name=f"{image_size}px_{num_images}", description=f"{num_images} images of {image_size} px",
                   num_images=num_images, image_size=image_size)


# skip_registration: tfds's own name registry refuses a second class named "toy_images"
# (this module may be imported afresh, e.g. by tests); rrjax reads its own registry.
class ToyImages(data.Builder, skip_registration=True):
    """A tiny generated binary image dataset (see the module docstring)."""

    name = "toy_images"
    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "First release."}
    CONFIG_CLASS = ToyImagesConfig
    BUILDER_CONFIGS = [ToyImagesConfig.make()]

    def _info(self) -> tfds.core.DatasetInfo:
        size = self.builder_config.image_size
        return tfds.core.DatasetInfo(
            builder=self,
            description="Toy images: label i % 2, fakes brighter in the red channel.",
            features=tfds.features.FeaturesDict({
                "image": tfds.features.Image(shape=(size, size, 3), encoding_format="png"),
                "label": tfds.features.ClassLabel(names=("real", "fake")),
            }),
            supervised_keys=("image", "label"),
            disable_shuffling=True,
        )

    def _split_generators(self, dl_manager):
        return {split: self._generate_examples() for split in ("train", "test")}

    def _generate_examples(self):
        c = self.builder_config
        for i in range(c.num_images):
            buf = io.BytesIO()  # encoded bytes: tfds would need TensorFlow to encode arrays
            Image.fromarray(toy_pixels(i, c.image_size)).save(buf, format="PNG")
            yield i, {"image": buf.getvalue(), "label": i % 2}


data.register("toy_images", ToyImages)
