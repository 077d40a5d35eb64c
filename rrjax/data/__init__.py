"""Deepfake datasets as TFDS builders (array_record, no TensorFlow) and the input pipeline.

Datasets (:data:`DATASETS`): ``synthetic_images`` and ``synthetic_videos`` (generated,
the default data; nothing is downloaded), ``faceforensics``, ``celeb_df_v2`` and
``deepfakebench`` (from files you already have, passed as ``manual_dir``), and any you
add with :func:`register` (a subclass of :class:`Builder`).

Modules: one per dataset (``synthetic``, ``faceforensics``, ``celeb_df``,
``deepfakebench``), ``frames`` (what the real datasets share), ``readers`` (safe file
reading and its limits), ``registry`` and ``pipeline`` (loading and batching).

Typical use::

    from rrjax import data
    test = data.load("synthetic_images", "test", image_size=64, train_size=0,
                     validation_size=0, test_size=200)
    for batch in data.batches(test, 32, shuffle=True, seed=0):
        batch["x"]  # f32[32,64,64,3] in [0,1]; batch["y"] i32[32]
    x, y, video_id = data.load_arrays("faceforensics", "test", n=512,
                                      manual_dir="/data/FaceForensics++", compression="c23")
"""

from rrjax.data._base import Builder
from rrjax.data.frames import LayoutError, SkippedFilesWarning
from rrjax.data.pipeline import RESIZE_METHODS, batches, load, load_arrays, resize, subset_indices
from rrjax.data.readers import VideoDecoderUnavailableError
from rrjax.data.registry import DATASETS, default_data_dir, get_builder, register

__all__ = [
    "DATASETS",
    "RESIZE_METHODS",
    "Builder",
    "LayoutError",
    "SkippedFilesWarning",
    "VideoDecoderUnavailableError",
    "batches",
    "default_data_dir",
    "get_builder",
    "load",
    "load_arrays",
    "register",
    "resize",
    "subset_indices",
]
