"""Reading frame and video files from a tree the user downloaded (``manual_dir``), safely.

A downloaded dataset is untrusted input: a frame path may be a FIFO (reading blocks
forever), a device or a link to one (``/dev/zero`` never ends), a symlink out of the
dataset, or a small file that declares an enormous image (a decompression bomb). Every
file goes through :func:`open_regular`, which opens it without blocking and without
following a final symlink, and then checks what was actually opened (``fstat``), so a
file swapped between the check and the read is caught too. What the readers refuse they
report by raising :class:`FileSkipped` with a reason; the builders count the reasons in a
``SkippedFilesWarning``.

Limits (:class:`Limits`, set from the builder config):

* ``max_pixels`` (default 4096 x 4096): an image or a video stream whose header declares
  more pixels per frame is refused before anything is decoded. Pillow's own
  ``Image.MAX_IMAGE_PIXELS`` (89,478,485) only *warns* between 1x and 2x and can be
  switched off or hidden by warning filters; this check does not depend on warnings.
* ``max_file_bytes`` (default 64 MiB): frame files larger than this are refused, and at
  most that many bytes (plus one, to detect more) are ever read from one frame file.
* ``max_video_frames`` (default 18,000 = 10 min at 30 fps): longer videos are refused;
  counting stops at the limit, so a stream that never ends cannot stall the builder.
* ``follow_symlinks`` (default False): a file whose real path (symlinks resolved) lies
  outside ``manual_dir`` is refused; True reads it.
"""

from __future__ import annotations

import dataclasses
import io
import os
import stat
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from rrjax.data import _base

__all__ = [
    "DEFAULT_MAX_FILE_BYTES",
    "DEFAULT_MAX_PIXELS",
    "DEFAULT_MAX_VIDEO_FRAMES",
    "FileSkipped",
    "Limits",
    "VideoDecoderUnavailableError",
    "open_regular",
    "read_bytes",
    "read_frame",
    "read_video",
]

DEFAULT_MAX_PIXELS = 4096 * 4096            # 16,777,216: 4K UHD frames (3840 x 2160) fit with room
DEFAULT_MAX_FILE_BYTES = 64 * 2**20         # > an uncompressed 8-bit RGB frame of DEFAULT_MAX_PIXELS
DEFAULT_MAX_VIDEO_FRAMES = 10 * 60 * 30     # 10 minutes at 30 frames per second

REASONS = ("unreadable", "special", "outside", "bytes", "pixels", "frames")
IMAGE_FORMATS = ("PNG", "JPEG", "BMP", "WEBP")  # what frame folders hold; no plugin that runs tools
_OPEN_FLAGS = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
_UNDECODABLE = (OSError, ValueError, SyntaxError, EOFError)


class VideoDecoderUnavailableError(ImportError):
    """Videos were requested but no video decoder (PyAV) can be imported."""


class FileSkipped(Exception):
    """A file was refused or could not be decoded; ``reason`` is one of :data:`REASONS`."""

    def __init__(self, reason: str, path: Path | str):
        super().__init__(f"{path}: {reason}")
        self.reason = reason
        self.path = str(path)


@dataclasses.dataclass(frozen=True)
class Limits:
    """What may be read: the root files must stay under, and the size limits.

    Attributes:
      root: real path of ``manual_dir``; None = no containment check (a file the caller
        named itself).
      follow_symlinks: read files whose real path is outside ``root``.
      max_pixels: most pixels (width x height) of an image or of one video frame.
      max_file_bytes: most bytes of one frame file.
      max_video_frames: most frames of one video.
    """

    root: Path | None = None
    follow_symlinks: bool = False
    max_pixels: int = DEFAULT_MAX_PIXELS
    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES
    max_video_frames: int = DEFAULT_MAX_VIDEO_FRAMES

    @classmethod
    def under(cls, manual_dir: str | os.PathLike, config) -> "Limits":
        """The limits of a builder ``config`` for files under ``manual_dir``."""
        return cls(root=Path(os.path.realpath(manual_dir)), follow_symlinks=config.follow_symlinks,
                   max_pixels=config.max_pixels, max_file_bytes=config.max_file_bytes,
                   max_video_frames=config.max_video_frames)


def open_regular(path: Path | str, limits: Limits, *, max_bytes: int | None = None) -> io.BufferedReader:
    """Opens ``path`` for reading if it is a regular file inside ``limits.root``.

    The real path is checked against the root, then opened with ``O_NONBLOCK`` (a FIFO
    cannot block the open) and ``O_NOFOLLOW``, and the opened descriptor is checked with
    ``fstat``: what is read is what was checked.

    Raises:
      FileSkipped: ``outside`` (leaves the root), ``special`` (FIFO, device, socket,
        directory), ``bytes`` (larger than ``max_bytes``) or ``unreadable``.
    """
    real = os.path.realpath(path)
    if limits.root is not None and not limits.follow_symlinks and not Path(real).is_relative_to(limits.root):
        raise FileSkipped("outside", path)
    try:
        if not stat.S_ISREG(os.stat(real).st_mode):
            raise FileSkipped("special", path)
        fd = os.open(real, _OPEN_FLAGS)
    except OSError:
        raise FileSkipped("unreadable", path) from None
    f = os.fdopen(fd, "rb")
    info = os.fstat(fd)
    reason = ("special" if not stat.S_ISREG(info.st_mode)
              else "bytes" if max_bytes is not None and info.st_size > max_bytes else None)
    if reason:
        f.close()
        raise FileSkipped(reason, path)
    return f


def read_bytes(path: Path | str, limits: Limits) -> bytes:
    """The bytes of a regular file, at most ``limits.max_file_bytes`` of them (else FileSkipped)."""
    with open_regular(path, limits, max_bytes=limits.max_file_bytes) as f:
        try:
            data = f.read(limits.max_file_bytes + 1)  # a file that grew after fstat is caught too
        except OSError:
            raise FileSkipped("unreadable", path) from None
    if len(data) > limits.max_file_bytes:
        raise FileSkipped("bytes", path)
    return data


def fit(pixels: np.ndarray, size: int) -> np.ndarray:
    """Resizes the shorter side of ``u8[H,W,3]`` to ``size`` (antialiased bicubic), centre-crops.

    Returns:
      ``u8[size,size,3]``.
    """
    h, w = pixels.shape[:2]
    if (h, w) == (size, size):
        return pixels
    im = Image.fromarray(pixels)
    scale = size / min(h, w)
    nh, nw = max(size, round(h * scale)), max(size, round(w * scale))
    im = im.resize((nw, nh), Image.BICUBIC)
    top, left = (nh - size) // 2, (nw - size) // 2
    return np.asarray(im.crop((left, top, left + size, top + size)))


def read_frame(path: Path | str, size: int, limits: Limits = Limits()) -> bytes:
    """Stored bytes of one frame file: PNG of ``u8[size,size,3]`` (see :func:`fit`).

    A PNG that already is RGB at ``size x size`` is returned byte for byte. The image
    size in the header is checked against ``limits.max_pixels`` before decoding.

    Raises:
      FileSkipped: see :func:`open_regular`; ``pixels`` for an image above the limit;
        ``unreadable`` when the bytes are not a PNG/JPEG/BMP/WebP image.
    """
    data = read_bytes(path, limits)
    try:
        with warnings.catch_warnings():
            # Pillow warns (and still decodes) between 1x and 2x its global limit; our own
            # limit below decides instead, whatever the warning filters say.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=IMAGE_FORMATS) as im:
                width, height = im.size
                if width * height > limits.max_pixels:
                    raise FileSkipped("pixels", path)
                im.load()
                if im.format == "PNG" and im.mode == "RGB" and im.size == (size, size):
                    return data
                pixels = np.asarray(im.convert("RGB"))
    except Image.DecompressionBombError:  # above 2x Pillow's global limit: refused at open
        raise FileSkipped("pixels", path) from None
    except _UNDECODABLE:
        raise FileSkipped("unreadable", path) from None
    return _base.encode_png(fit(pixels, size))


def _video_backend():
    try:
        import av  # noqa: PLC0415 - optional at import time, needed only for videos
    except ImportError:
        raise VideoDecoderUnavailableError(
            "reading videos needs a video decoder and none is installed: install PyAV "
            "(`pip install av`), or extract frames first and use source='frames'") from None
    return av


def _count_frames(container, stream, limits: Limits, path) -> int:
    """Frames of ``stream`` by demuxing (packets, not decoding), refused past the limit."""
    total = 0
    for packet in container.demux(stream):
        if packet.size:
            total += 1
            if total > limits.max_video_frames:
                raise FileSkipped("frames", path)
    return total


def _decode(container, stream, wanted: Sequence[int], size: int, limits: Limits, path) -> dict[int, np.ndarray]:
    want = set(wanted)
    last = max(want) if want else -1
    out = {}
    for i, frame in enumerate(container.decode(stream)):
        if frame.width * frame.height > limits.max_pixels:  # a stream may change size mid-way
            raise FileSkipped("pixels", path)
        if i in want:
            out[i] = fit(frame.to_ndarray(format="rgb24"), size)
        if i >= last:
            break
    return out


def read_video(path: Path | str, wanted: Sequence[int] | None, size: int,
               limits: Limits = Limits()) -> tuple[int, dict[int, np.ndarray]]:
    """Decodes the frames ``wanted`` (None = count only) of a video with PyAV.

    The stream's declared frame size and frame count are checked before decoding
    (``max_pixels``, ``max_video_frames``), and each decoded frame's size again.

    Returns:
      ``(num_frames, {index: u8[size,size,3]})``.

    Raises:
      FileSkipped: see :func:`open_regular`; ``pixels``, ``frames``; ``unreadable``
        when the file is not a decodable video.
      VideoDecoderUnavailableError: PyAV is not installed.
    """
    av = _video_backend()
    with open_regular(path, limits) as f:
        try:
            with av.open(f) as container:
                stream = container.streams.video[0]
                width, height = stream.codec_context.width, stream.codec_context.height
                if width * height > limits.max_pixels:
                    raise FileSkipped("pixels", path)
                if stream.frames > limits.max_video_frames:
                    raise FileSkipped("frames", path)
                total = stream.frames
                if total <= 0 or wanted is None:
                    total = _count_frames(container, stream, limits, path)
                    if wanted is None:
                        return total, {}
                    container.seek(0)
                return total, _decode(container, stream, wanted, size, limits, path)
        except (av.error.FFmpegError, OSError, ValueError, IndexError):
            raise FileSkipped("unreadable", path) from None
