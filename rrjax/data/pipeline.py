"""Loading and batching: dataset registry, random-access sources, deterministic batches.

``load`` returns a random-access source (``len(src)``, ``src[i]`` -> a record dict) for a
split, building the dataset first when needed; ``batches`` turns any such source into
the batch dicts the rest of rrjax consumes::

    {"x": f32[B,H,W,3] or f32[B,T,H,W,3] in [0,1], "y": i32[B],
     "index": i64[B] (position in the split), "video_id": i64[B]}

Data location: ``data_dir`` if given, else ``$RRJAX_DATA_DIR``, else tfds's own default
(``$TFDS_DATA_DIR`` or ``~/tensorflow_datasets``), so datasets built here are found by
plain ``tfds.data_source(name, data_dir=...)`` too.
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image

from rrjax._validation import check_choice, check_int
from rrjax.data.registry import DATASETS, default_data_dir, get_builder

__all__ = [
    "RESIZE_METHODS",
    "load",
    "batches",
    "load_arrays",
    "subset_indices",
]

# Pillow filters; every one but "nearest" is antialiased when down-sampling (the filter
# support grows with the scale factor), so shrinking 256 -> 64 averages, not aliases.
RESIZE_METHODS = {
    "bilinear": Image.BILINEAR,
    "bicubic": Image.BICUBIC,
    "area": Image.BOX,
    "lanczos": Image.LANCZOS,
    "nearest": Image.NEAREST,
}


def load(name: str, split: str, *, data_dir: str | os.PathLike | None = None,
         manual_dir: str | os.PathLike | None = None, prepare: bool = True, **config: Any) -> Sequence[dict]:
    """A random-access source over one split, preparing the dataset if it is not yet built.

    Args:
      name: a key of :data:`DATASETS`.
      split: "train", "validation" or "test" (whichever the dataset has).
      data_dir: see :func:`default_data_dir`.
      manual_dir: for real datasets, the folder with the files you downloaded (only
        needed the first time; the prepared array_record files are reused after).
      prepare: False raises instead of building a missing dataset.
      **config: builder config fields (:func:`get_builder`).

    Returns:
      A ``tfds`` ArrayRecord data source: ``len(src)``, ``src[i]`` and
      ``src.__getitems__(list)`` return decoded record dicts (``u8`` pixels).

    Raises:
      ValueError: unknown dataset, config or split, or a real dataset that is not
        prepared and has no ``manual_dir``.
      rrjax.data.LayoutError: ``manual_dir`` does not hold the expected layout.
    """
    builder = get_builder(name, data_dir=data_dir, **config)
    if not builder.is_prepared():
        if not prepare:
            raise ValueError(f"{name} ({builder.builder_config.name}) is not prepared in {builder.data_dir} "
                             "and prepare=False")
        download_config = None
        if getattr(builder, "MANUAL_DOWNLOAD_INSTRUCTIONS", None):
            if manual_dir is None or not Path(manual_dir).is_dir():
                raise ValueError(
                    f"manual_dir={manual_dir!r} is not a folder; {name} is not prepared in "
                    f"{builder.data_dir} and needs the files you downloaded: "
                    f"{builder.MANUAL_DOWNLOAD_INSTRUCTIONS}")
            if not any(Path(manual_dir).iterdir()):
                builder.check_layout(Path(manual_dir))  # tfds's own check would say only "empty"
            download_config = tfds.download.DownloadConfig(manual_dir=os.fspath(manual_dir))
        builder.download_and_prepare(download_config=download_config)
    splits = sorted(builder.info.splits)
    if split not in splits:
        raise ValueError(f"split={split!r} is not valid for {name} ({builder.builder_config.name}); "
                         f"expected one of {splits}")
    return builder.as_data_source(split)


def subset_indices(n_available: int, n: int | None, seed: int) -> np.ndarray:
    """The one sample subset rrjax draws: sorted positions of ``n`` of ``n_available`` samples.

    ``np.random.default_rng(seed).permutation(n_available)[:n]``, sorted, so the subset of a seed
    is the same in the sweep (``--num_samples``), in training (``--max_train_examples``) and in
    :func:`load_arrays`, and on every host. ``n=None`` or ``n >= n_available`` gives every
    position (callers that must not silently shrink a request check ``n`` against
    ``n_available`` first).

    Args:
      n_available: samples in the split (>= 0).
      n: samples wanted (>= 1) or None for all.
      seed: the subset's seed (>= 0).

    Returns:
      int64[min(n, n_available)] increasing positions.
    """
    n_available = check_int(n_available, name="n_available", minimum=0)
    seed = check_int(seed, name="seed", minimum=0)
    if n is None or n >= n_available:
        return np.arange(n_available, dtype=np.int64)
    n = check_int(n, name="n", minimum=1)
    return np.sort(np.random.default_rng(seed).permutation(n_available)[:n]).astype(np.int64)


def _pixels(record: dict) -> np.ndarray:
    if "clip" in record:
        frames = np.stack([np.asarray(f) for f in record["clip"]])
    elif "image" in record:
        frames = np.asarray(record["image"])
    else:
        raise ValueError(f"record has keys {sorted(record)}; expected an 'image' or a 'clip'")
    if frames.dtype != np.uint8:
        raise ValueError(f"record pixels have dtype {frames.dtype}; expected uint8")
    if frames.shape[-1] == 1:
        frames = np.repeat(frames, 3, axis=-1)
    elif frames.shape[-1] == 4:
        frames = frames[..., :3]
    return frames


def resize(frames: np.ndarray, size: int, method: str = "bilinear") -> np.ndarray:
    """Resizes ``u8[..., H, W, 3]`` to ``u8[..., size, size, 3]`` with Pillow.

    Square inputs are resized directly; others are first centre-cropped to a square, so
    faces keep their aspect ratio. The result stays 8-bit (a real image the model could
    have been given), and 'bilinear'/'bicubic'/'area'/'lanczos' antialias when shrinking.
    """
    h, w = frames.shape[-3:-1]
    if (h, w) == (size, size):
        return frames
    flat = frames.reshape((-1, h, w, 3))
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    out = np.empty((len(flat), size, size, 3), np.uint8)
    for i, f in enumerate(flat):
        im = Image.fromarray(f[top:top + side, left:left + side])
        out[i] = np.asarray(im.resize((size, size), RESIZE_METHODS[method]))
    return out.reshape(frames.shape[:-3] + (size, size, 3))


def _prefetched(make: Callable[[], Iterator], size: int) -> Iterator:
    """Runs ``make()`` in one background thread, ``size`` items ahead of the consumer.

    Decoding (Pillow) and array_record reads release the GIL, so one thread overlaps
    input with the consumer's device work; stopping early stops the thread.
    """
    if size == 0:
        yield from make()
        return
    q: queue.Queue = queue.Queue(maxsize=size)
    stop = threading.Event()
    done = object()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def work():
        try:
            for item in make():
                if not put(item):
                    return
            put(done)
        except BaseException as e:  # re-raised in the consumer, with its traceback
            put(_Failure(e))

    thread = threading.Thread(target=work, daemon=True, name="rrjax-prefetch")
    thread.start()
    try:
        while True:
            item = q.get()
            if item is done:
                return
            if isinstance(item, _Failure):
                raise item.error
            yield item
    finally:
        stop.set()


class _Failure:
    def __init__(self, error: BaseException):
        self.error = error


def batches(
    source: Sequence[dict],
    batch_size: int,
    *,
    shuffle: bool = False,
    seed: int = 0,
    epoch: int = 0,
    drop_remainder: bool = False,
    image_size: int | None = None,
    resize_method: str = "bilinear",
    indices: Sequence[int] | np.ndarray | None = None,
    prefetch: int = 2,
) -> Iterator[dict[str, np.ndarray]]:
    """Deterministic batches ``{"x", "y", "index", "video_id"}`` from a random-access source.

    Args:
      source: ``len`` + ``__getitem__`` returning record dicts with ``"image"``
        (``u8[H,W,C]``) or ``"clip"`` (``T`` frames), ``"label"`` and optionally
        ``"video_id"`` (the output of :func:`load`, or any list of such dicts).
      batch_size: samples per batch.
      shuffle: visit samples in the order of a permutation drawn from ``(seed, epoch)``;
        the same ``(seed, epoch)`` gives the same order on every run and host.
      seed, epoch: see ``shuffle``; change ``epoch`` for a new order each epoch.
      drop_remainder: drop the last, smaller batch.
      image_size: resize frames to ``image_size x image_size`` (:func:`resize`); None
        keeps the stored size.
      resize_method: one of :data:`RESIZE_METHODS` (default "bilinear").
      indices: restrict to these positions of ``source`` (e.g. a host's shard);
        ``index`` in the batches still reports positions in ``source``.
      prefetch: batches prepared ahead in a background thread (0 = none).

    Yields:
      ``x: f32[B,H,W,3]`` (frames) or ``f32[B,T,H,W,3]`` (clips) in [0, 1] (``u8 / 255``),
      ``y: i32[B]`` (0 real, 1 fake), ``index: i64[B]``, ``video_id: i64[B]`` (the
      record's video id, or ``index`` when the record has none).
    """
    batch_size = check_int(batch_size, name="batch_size", minimum=1)
    seed = check_int(seed, name="seed", minimum=0)
    epoch = check_int(epoch, name="epoch", minimum=0)
    prefetch = check_int(prefetch, name="prefetch", minimum=0)
    check_choice(resize_method, RESIZE_METHODS, name="resize_method")
    if image_size is not None:
        image_size = check_int(image_size, name="image_size", minimum=1)
    n = len(source)
    if indices is None:
        order = np.arange(n, dtype=np.int64)
    else:
        order = np.asarray(indices, dtype=np.int64).reshape(-1)
        if order.size and (order.min() < 0 or order.max() >= n):
            raise ValueError(f"indices span [{order.min()}, {order.max()}]; expected positions in [0, {n})")
    if shuffle:
        order = order[np.random.default_rng([seed, epoch]).permutation(len(order))]
    stop = len(order) - len(order) % batch_size if drop_remainder else len(order)
    getitems = getattr(source, "__getitems__", None)

    def make():
        for start in range(0, stop, batch_size):
            idx = order[start:start + batch_size]
            records = getitems(idx.tolist()) if getitems else [source[int(i)] for i in idx]
            frames = [_pixels(r) for r in records]
            if image_size is not None:
                frames = [resize(f, image_size, resize_method) for f in frames]
            shapes = {f.shape for f in frames}
            if len(shapes) > 1:
                raise ValueError(f"records have different shapes {sorted(shapes)}; pass image_size= to resize them")
            x = np.stack(frames).astype(np.float32) / np.float32(255)
            y = np.asarray([int(r["label"]) for r in records], np.int32)
            vid = np.asarray([int(r.get("video_id", i)) for r, i in zip(records, idx)], np.int64)
            yield {"x": x, "y": y, "index": idx.copy(), "video_id": vid}

    return _prefetched(make, prefetch)


def load_arrays(
    name: str,
    split: str,
    *,
    n: int | None = None,
    resize_to: int | None = None,
    shuffle: bool = True,
    seed: int = 0,
    data_dir: str | os.PathLike | None = None,
    manual_dir: str | os.PathLike | None = None,
    **config: Any,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(x, y, video_id)`` of ``n`` samples of a split, for evaluation code.

    Args:
      name, split, data_dir, manual_dir, **config: as for :func:`load`.
      n: number of samples (None = the whole split; larger than the split = all of it).
      resize_to: resize frames to this size (:func:`resize`, bilinear). Not called
        ``image_size``: that keyword selects the dataset config (the stored size).
      shuffle: take a seeded random subset of ``n`` samples (:func:`subset_indices`, in
        split order) rather than the first ``n``; real datasets store frames video by video,
        so a prefix covers few videos. (Synthetic splits alternate real/fake, so their
        prefixes are exactly balanced.)
      seed: the subset's seed.

    Returns:
      ``x: f32[n,H,W,3]`` or ``f32[n,T,H,W,3]`` in [0,1], ``y: i32[n]``, ``video_id: i64[n]``.
    """
    seed = check_int(seed, name="seed", minimum=0)
    source = load(name, split, data_dir=data_dir, manual_dir=manual_dir, **config)
    total = len(source)
    if n is not None:
        n = min(check_int(n, name="n", minimum=1), total)
    else:
        n = total
    if total == 0:
        raise ValueError(f"split {split!r} of {name} is empty")
    order = subset_indices(total, n, seed) if shuffle else np.arange(n)
    parts = list(batches(source, 256, indices=order, image_size=resize_to, prefetch=1))
    return (np.concatenate([b["x"] for b in parts]), np.concatenate([b["y"] for b in parts]),
            np.concatenate([b["video_id"] for b in parts]))
