"""Face-swap forgeries, the camera and the encoders: the synthetic benchmark's renderer
(the faces themselves are drawn by :mod:`rrjax.data.faces`).

A "real" sample is a face rendered at the output resolution: 1/f-noise and dead-leaves
background, hair, neck and shirt, a shaded head with eyes, brows, nose and mouth, skin
texture. A "fake" sample starts from a real render (the target) and replaces its inner
face with a face rendered at a lower resolution, up-sampled (bilinear, nearest or a
transposed convolution whose uneven kernel overlap leaves a checkerboard), colour
mismatched and alpha-blended with a blurred, deformed mask: the recipe of FWA
(Li & Lyu, 2019) and self-blended images (Shiohara & Yamasaki, 2022). Half of the fakes
swap in another identity (a face swap), half re-blend the target's own face (SBI), so
identity is never the cue: the blending boundary and the resampled texture are.

Both classes then go through the same camera (global blur, signal-dependent sensor
noise) and the same JPEG compression, and every scene parameter is drawn from the same
distribution for both, so global colour statistics do not separate them (tested).

Coordinates: ``x, y`` in [-1, 1] over the image (pixel centres), face-local ``(u, v)``
in head half-heights, ``v`` pointing to the chin. Everything is float32 and vectorised
over the pixel grid; one 256x256 image costs tens of milliseconds on one core.

References:
  Li & Lyu, "Exposing DeepFake Videos By Detecting Face Warping Artifacts", CVPRW 2019.
  Shiohara & Yamasaki, "Detecting Deepfakes with Self-Blended Images", CVPR 2022.
  Odena et al., "Deconvolution and Checkerboard Artifacts", Distill 2016.
  Lee, Mumford & Huang, "Occlusion models for natural images" (dead leaves), IJCV 2001.
"""

from __future__ import annotations

import dataclasses
import io

import numpy as np
from PIL import Image
from scipy import ndimage

from rrjax.data.faces import (
    _F,
    Identity,
    Light,
    Pose,
    _cover,
    _head_alpha,
    render_face,
    render_person,
    sample_identity,
    sample_light,
    sample_pose,
    sample_scene,
    similar_identity,
    skin_texture,
)

__all__ = [
    "UPSAMPLERS",
    "FAKE_KINDS",
    "render_image",
    "render_clip",
    "encode_jpeg",
    "decode_image",
]

UPSAMPLERS = ("bilinear", "nearest", "checkerboard")
FAKE_KINDS = ("swap", "sbi")




# --------------------------------------------------------------------------- the forgery


def _upsample_matrix(n_out: int, n_in: int, factor: int, method: str, rng) -> np.ndarray:
    """Separable 1-D resampling operator f32[n_out, n_in] for an integer ``factor``.

    ``checkerboard`` is a stride-``factor`` transposed convolution whose kernel length is
    not a multiple of the stride, so output phases receive uneven sums of taps and the
    2-D product of two such operators leaves a period-``factor`` checkerboard
    (Odena et al., 2016).
    """
    j = np.arange(n_out)
    a = np.zeros((n_out, n_in), _F)
    if method == "nearest":
        a[j, np.minimum(j // factor, n_in - 1)] = 1
    elif method == "bilinear":
        t = (j + 0.5) / factor - 0.5  # half-pixel centres, as in jax.image / PIL
        i0 = np.floor(t).astype(int)
        f = (t - i0).astype(_F)
        np.add.at(a, (j, np.clip(i0, 0, n_in - 1)), 1 - f)
        np.add.at(a, (j, np.clip(i0 + 1, 0, n_in - 1)), f)
    elif method == "checkerboard":
        k = 2 * factor + (1 if rng.random() < 0.5 else -1)
        taps = 1 - np.abs(np.arange(k) - (k - 1) / 2) / ((k + 1) / 2)
        w = np.abs(taps + rng.normal(0, 0.1, k)).astype(_F)
        off = (k - factor) // 2
        for i in range(n_in):
            for m in range(k):
                jj = factor * i + m - off
                if 0 <= jj < n_out:
                    a[jj, i] += w[m]
        # A trained transposed conv mostly learns to even out its phases; keep a residual.
        sums = a.sum(1, keepdims=True)
        a *= sums ** (rng.uniform(0.05, 0.2) - 1)
        a /= a.sum(1).mean()
    else:
        raise ValueError(f"method={method!r} is not valid; expected one of {UPSAMPLERS}")
    return a


def _taps(a: np.ndarray):
    """A banded operator as gather indices and weights, both [n_out, taps]."""
    t = int((a != 0).sum(1).max())
    idx = np.argsort(a == 0, axis=1, kind="stable")[:, :t]
    return idx, np.take_along_axis(a, idx, 1)


def _resample(img: np.ndarray, idx: np.ndarray, w: np.ndarray, axis: int) -> np.ndarray:
    """Applies a banded 1-D operator along ``axis`` by gathering taps.

    Elementwise on purpose: a dense matmul would be as cheap in flops, but a
    multi-threaded BLAS on a busy machine makes it orders of magnitude slower.
    """
    img = np.moveaxis(img, axis, 0)
    out = np.zeros((idx.shape[0],) + img.shape[1:], _F)
    for t in range(idx.shape[1]):
        out += w[:, t].reshape((-1,) + (1,) * (img.ndim - 1)) * img[idx[:, t]]
    return np.moveaxis(out, 0, axis)


def _blend_mask(u, v, ident: Identity, pose: Pose, head, size: int, rng, jitter: float = 1.0):
    """Blurred, randomly deformed inner-face mask (eyebrows to chin, cheek to cheek)."""
    shift = pose.yaw * 0.35
    cu = shift + rng.normal(0, 0.02 * jitter)
    cv = 0.22 + rng.normal(0, 0.02 * jitter)
    au = ident.width * 0.78 * rng.uniform(0.86, 1.06)
    av = 0.74 * rng.uniform(0.88, 1.05)
    theta = np.arctan2(v - cv, u - cu)
    wobble = 1 + rng.uniform(0, 0.06) * np.sin(rng.integers(2, 5) * theta + rng.uniform(0, 2 * np.pi))
    r = np.sqrt(((u - cu) / au) ** 2 + ((v - cv) / av) ** 2) / wobble
    hard = _cover((r - 1) * min(au, av), 2.0 / (size * pose.scale)) * head
    sigma = rng.uniform(1.5, 7.0) * size / 256 * pose.scale / 0.45
    # Blurred, then kept inside the face outline: the swap never paints the background.
    mask = ndimage.gaussian_filter(hard, sigma, mode="constant") * head
    return np.clip(mask * rng.uniform(0.85, 1.0), 0, 1).astype(_F)


@dataclasses.dataclass
class Forgery:
    """How one fake (image or clip) is made; fixed over a clip's frames."""

    kind: str                 # "swap" or "sbi"
    upsampler: str
    factor: int
    source: Identity
    texture_seed: int
    du: float
    dv: float
    zoom: float
    gain: np.ndarray          # f32[3] colour mismatch
    offset: np.ndarray        # f32[3]

    @property
    def method(self) -> str:
        return f"{self.kind}-{self.upsampler}"


def sample_forgery(rng: np.random.Generator, target: Identity) -> Forgery:
    kind = FAKE_KINDS[int(rng.integers(len(FAKE_KINDS)))]
    if kind == "swap":
        source, du, dv, zoom = similar_identity(rng, target), 0.0, 0.0, 1.0
    else:  # self-blended: the target's own face, slightly moved and recoloured
        source = dataclasses.replace(target)
        du, dv = rng.uniform(-0.04, 0.04, 2)
        zoom = rng.uniform(0.96, 1.04)
    return Forgery(
        kind=kind,
        upsampler=UPSAMPLERS[int(rng.integers(len(UPSAMPLERS)))],
        factor=int(rng.integers(2, 5)),
        source=source,
        texture_seed=int(rng.integers(2**31)),
        du=float(du), dv=float(dv), zoom=float(zoom),
        # Colour correction never matches exactly; the sign is random, so the mismatch
        # moves no global colour statistic, only the contrast across the blend boundary.
        gain=(1 + rng.choice([-1, 1], 3) * rng.uniform(0.05, 0.14, 3)).astype(_F),
        offset=rng.normal(0, 0.02, 3).astype(_F),
    )


def _swap_face(target_rgb, u, v, head, pose: Pose, light: Light, target: Identity,
               forgery: Forgery, size: int, rng, jitter: float = 1.0):
    """Renders the source face at 1/factor resolution, up-samples, recolours, blends."""
    s = forgery.factor
    lo = -(-size // s)
    coords = (((np.arange(lo) + 0.5) * s) / size * 2 - 1).astype(_F)
    tex_lo = skin_texture(np.random.default_rng(forgery.texture_seed), lo)
    face_lo, _, _, _ = render_face(
        coords[None, :], coords[:, None], forgery.source, pose, light, tex_lo, 2.0 * s / size,
        du=forgery.du, dv=forgery.dv, zoom=forgery.zoom)
    idx, w = _taps(_upsample_matrix(size, lo, s, forgery.upsampler, np.random.default_rng(forgery.texture_seed + 1)))
    face = _resample(_resample(face_lo, idx, w, axis=0), idx, w, axis=1)
    flicker = 1 + rng.normal(0, 0.02 * (jitter - 1), 3) if jitter > 1 else 1.0
    face = face * forgery.gain * flicker + forgery.offset
    mask = _blend_mask(u, v, target, pose, head, size, rng, jitter)[..., None]
    return target_rgb * (1 - mask) + face * mask


def _camera(rgb, rng, size: int) -> np.ndarray:
    """Shared by both classes: optical blur, signal-dependent sensor noise, 8-bit."""
    sigma = rng.uniform(0.0, 0.8) * size / 256 if rng.random() < 0.5 else 0.0
    if sigma > 0.2:
        rgb = ndimage.gaussian_filter(rgb, (sigma, sigma, 0))
    read, shot = rng.uniform(0.001, 0.005), rng.uniform(0.0, 0.010)
    rgb = np.clip(rgb, 0, 1)
    rgb = rgb + rng.standard_normal(rgb.shape, dtype=_F) * (read + shot * np.sqrt(rgb))
    return np.clip(np.rint(rgb * 255), 0, 255).astype(np.uint8)


def encode_jpeg(pixels: np.ndarray, quality: int) -> bytes:
    """JPEG bytes of ``u8[H,W,3]`` (Pillow / libjpeg, 4:2:0 chroma subsampling)."""
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG", quality=int(quality), subsampling=2)
    return buf.getvalue()


def decode_image(data: bytes) -> np.ndarray:
    """``u8[H,W,3]`` from encoded image bytes (any format Pillow reads)."""
    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im.convert("RGB"))


# --------------------------------------------------------------------------- samples


def render_image(rng: np.random.Generator, size: int, fake: bool) -> tuple[bytes, str]:
    """One synthetic sample: JPEG bytes of a ``size x size`` RGB image and its method.

    Args:
      rng: the sample's own generator (seed it per sample for order-free determinism).
      size: output height = width in pixels (>= 32).
      fake: False renders a real face; True swaps in a resampled face (module docstring).

    Returns:
      ``(jpeg_bytes, method)`` with method ``"real"`` or ``"<swap|sbi>-<upsampler>"``.
    """
    ident, pose, light = sample_identity(rng), sample_pose(rng), sample_light(rng)
    scene = sample_scene(rng, size)
    forgery = sample_forgery(rng, ident)  # drawn for both classes to keep streams aligned
    quality = int(rng.integers(75, 96))
    rgb, u, v = render_person(size, ident, pose, light, scene)
    method = "real"
    if fake:
        head, _ = _head_alpha(u, v, ident, 2.0 / (size * pose.scale))
        rgb = _swap_face(rgb, u, v, head, pose, light, ident, forgery, size, rng)
        method = forgery.method
    return encode_jpeg(_camera(rgb, rng, size), quality), method


def _trajectory(rng, n: int, amp: float) -> np.ndarray:
    """Smooth zero-mean motion: two sinusoids with random periods longer than the clip."""
    t = np.arange(n) / max(n, 1)
    out = np.zeros(n)
    for _ in range(2):
        out += amp * rng.uniform(0.3, 1.0) * np.sin(2 * np.pi * rng.uniform(0.2, 1.0) * t + rng.uniform(0, 2 * np.pi))
    return out


def render_clip(rng: np.random.Generator, size: int, num_frames: int, fake: bool) -> tuple[list[bytes], str]:
    """One synthetic clip: ``num_frames`` JPEG frames of one person moving smoothly.

    Real and fake clips share identity, scene and motion statistics; a fake clip swaps the
    face in every frame with one method but re-draws its mask (position, shape, blur)
    and a small colour flicker per frame, the temporal inconsistency of frame-wise
    face-swap pipelines.

    Returns:
      ``(frames, method)``: a list of JPEG bytes and ``"real"`` or ``"<kind>-<upsampler>"``.
    """
    ident, pose0, light = sample_identity(rng), sample_pose(rng), sample_light(rng)
    pose0.scale *= 0.9  # leave room to move
    scene = sample_scene(rng, size)
    forgery = sample_forgery(rng, ident)
    quality = int(rng.integers(75, 96))
    motion = {
        "cx": _trajectory(rng, num_frames, 0.06), "cy": _trajectory(rng, num_frames, 0.03),
        "roll": _trajectory(rng, num_frames, 0.08), "yaw": _trajectory(rng, num_frames, 0.15),
        "scale": _trajectory(rng, num_frames, 0.03), "gaze_x": _trajectory(rng, num_frames, 0.3),
    }
    frames = []
    for t in range(num_frames):
        pose = dataclasses.replace(
            pose0, cx=pose0.cx + motion["cx"][t], cy=pose0.cy + motion["cy"][t],
            roll=pose0.roll + motion["roll"][t], yaw=float(np.clip(pose0.yaw + motion["yaw"][t], -0.45, 0.45)),
            scale=pose0.scale * (1 + motion["scale"][t]),
            gaze_x=float(np.clip(pose0.gaze_x + motion["gaze_x"][t], -0.4, 0.4)))
        rgb, u, v = render_person(size, ident, pose, light, scene)
        if fake:
            head, _ = _head_alpha(u, v, ident, 2.0 / (size * pose.scale))
            rgb = _swap_face(rgb, u, v, head, pose, light, ident, forgery, size, rng, jitter=2.0)
        frames.append(encode_jpeg(_camera(rgb, rng, size), quality))
    return frames, (forgery.method if fake else "real")
