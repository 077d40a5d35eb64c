"""The samples a sweep attacks: the same samples for every model, so comparisons are paired."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from rrjax import _validation as V

__all__ = ["SweepData", "load_data", "select_samples", "to_float"]


@dataclasses.dataclass(frozen=True)
class SweepData:
    """The samples: ``x`` uint8 or float32 in [0,1] ``[N,...]``, labels and split positions.

    ``source`` identifies how the pixels were produced beyond the dataset name and split (the
    builder config with all its values, the resize); it is part of every cell id, so changing
    e.g. the compression level never reuses results.
    """

    dataset: str
    split: str
    x: np.ndarray
    y: np.ndarray
    index: np.ndarray
    source: str = ""  # everything else that defines the pixels: builder config, resize

    def __post_init__(self):
        n = len(self.x)
        if n == 0:
            raise ValueError("the sweep has no samples (x is empty); expected at least one sample")
        if self.x.dtype != np.uint8:
            V.as_pixels(self.x, name="data.x", ranks=(4, 5))
        V.as_labels(self.y, n, name="data.y")
        if np.shape(self.index) != (n,) or len(np.unique(self.index)) != n:
            raise ValueError(f"data.index must hold {n} distinct sample positions, got shape {np.shape(self.index)}")


def select_samples(n_available: int, n: int | None, seed: int) -> np.ndarray:
    """The sorted positions of ``n`` samples drawn without replacement (all when ``n`` is None);
    ``rrjax.data.subset_indices``."""
    from rrjax.data.pipeline import subset_indices

    return subset_indices(n_available, n, seed)


def to_float(x: np.ndarray) -> np.ndarray:
    """Pixels as float32 in [0, 1] (uint8 samples are exact values / 255)."""
    return x.astype(np.float32) / 255.0 if x.dtype == np.uint8 else x.astype(np.float32)


def load_data(
    dataset: str,
    split: str,
    input_shape: Sequence[int],
    *,
    num_samples: int | None = None,
    sample_seed: int = 0,
    data_dir: str | os.PathLike | None = None,
    manual_dir: str | os.PathLike | None = None,
    **dataset_config: Any,
) -> SweepData:
    """The sweep's samples from an ``rrjax.data`` dataset, resized to a detector's input.

    Args:
      dataset, split, data_dir, manual_dir, **dataset_config: as for ``rrjax.data.load``.
      input_shape: the detector's per-sample shape ``(H, W, C)`` or ``(T, H, W, C)``; frames
        are resized to ``H × W``; clips must have ``T`` frames.
      num_samples: how many samples (a seeded random subset; all when None); more than the
        split holds is an error (never silently fewer).
      sample_seed: seed of the subset.
    """
    from rrjax import data as D

    builder = D.get_builder(dataset, data_dir=data_dir, **dataset_config)
    source = D.load(dataset, split, data_dir=data_dir, manual_dir=manual_dir, **dataset_config)
    if num_samples is not None and num_samples > len(source):
        raise ValueError(
            f"num_samples={num_samples} but {dataset}/{split} ({builder.builder_config.name}) has only {len(source)} "
            f"samples; ask for at most {len(source)} or build a larger split (for the synthetic datasets: "
            f"--dataset_config={split}_size={num_samples})")
    index = select_samples(len(source), num_samples, sample_seed)
    size = int(input_shape[-3])
    parts = list(D.batches(source, 64, indices=index, image_size=size, prefetch=1))
    # The pipeline's pixels are 8-bit values / 255 (resizing included), so uint8 holds them
    # exactly in a quarter of the host memory.
    x = np.concatenate([np.rint(b["x"] * 255.0).astype(np.uint8) for b in parts])
    if x.shape[1:] != tuple(input_shape):
        raise ValueError(
            f"{dataset}/{split} gives samples of shape {x.shape[1:]} but the detector expects {tuple(input_shape)}; "
            "for clips, build the dataset with the detector's number of frames (e.g. --dataset_config=num_frames=8)"
        )
    y = np.concatenate([b["y"] for b in parts]).astype(np.int32)
    got = np.concatenate([b["index"] for b in parts])
    if not np.array_equal(got, index):
        raise RuntimeError("the data pipeline returned samples out of order")
    return SweepData(dataset, split, x, y, index, source=f"{builder.builder_config.name}|resize={size}|bilinear")
