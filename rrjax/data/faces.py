"""Procedural faces for the synthetic benchmark: identities, poses, lights, scenes, skin
texture, and the rendering of a face and a whole person (NumPy, float32, vectorised over the
pixel grid). The forgeries, the camera and the encoders are in :mod:`rrjax.data.render`.

Coordinates: ``x, y`` in [-1, 1] over the image (pixel centres), face-local ``(u, v)``
in head half-heights, ``v`` pointing to the chin.

References:
  Lee, Mumford & Huang, "Occlusion models for natural images" (dead leaves), IJCV 2001.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from scipy import fft as sfft
from scipy import ndimage

__all__ = ["Identity", "Pose", "Light", "Scene", "sample_identity", "similar_identity", "sample_pose",
           "sample_light", "sample_scene", "skin_texture", "render_face", "render_person"]

_F = np.float32

# Skin reflectances from very light to very dark; a tone is a point on this polyline.
_SKIN = np.array(
    [[0.98, 0.84, 0.74], [0.92, 0.74, 0.62], [0.80, 0.60, 0.46],
     [0.66, 0.46, 0.32], [0.48, 0.32, 0.22], [0.30, 0.20, 0.14]], _F)
_HAIR = np.array(
    [[0.05, 0.04, 0.04], [0.18, 0.11, 0.07], [0.34, 0.22, 0.12],
     [0.72, 0.58, 0.34], [0.52, 0.22, 0.10], [0.62, 0.62, 0.62]], _F)
_IRIS = np.array(
    [[0.34, 0.20, 0.10], [0.14, 0.09, 0.06], [0.30, 0.45, 0.65],
     [0.33, 0.45, 0.30], [0.50, 0.40, 0.20]], _F)


# --------------------------------------------------------------------------- parameters


@dataclasses.dataclass
class Identity:
    """What stays fixed for a person: shape, colours, feature geometry."""

    skin: np.ndarray          # f32[3] reflectance
    hair: np.ndarray          # f32[3]
    iris: np.ndarray          # f32[3]
    hair_style: int           # 0 bald, 1 short, 2 long
    width: float              # head half-width / half-height
    jaw: float                # chin taper
    hairline: float           # v of the hairline at the centre
    temple: float             # how much lower the hairline sits at the sides
    fringe: float             # fringe depth (0 = none)
    eye_x: float
    eye_y: float
    eye_w: float
    eye_h: float
    brow_gap: float
    brow_arch: float
    brow_th: float
    nose_y: float
    nose_w: float
    mouth_y: float
    mouth_w: float
    lip_h: float
    smile: float
    lip_tint: np.ndarray      # f32[3] multiplies the skin
    blush: float
    strand_freq: float


@dataclasses.dataclass
class Pose:
    """Where the head is: centre and half-height in image units, roll (rad), yaw."""

    cx: float
    cy: float
    scale: float
    roll: float
    yaw: float
    gaze_x: float
    gaze_y: float


@dataclasses.dataclass
class Light:
    direction: np.ndarray     # f32[3], unit, z toward the camera
    ambient: float
    tint: np.ndarray          # f32[3]
    specular: float


def _pick(rng, table):
    i = rng.integers(len(table))
    return table[i]


def sample_identity(rng: np.random.Generator) -> Identity:
    t = rng.uniform(0, len(_SKIN) - 1)
    i = min(int(t), len(_SKIN) - 2)
    skin = _SKIN[i] + (t - i) * (_SKIN[i + 1] - _SKIN[i])
    skin = np.clip(skin + rng.normal(0, 0.02, 3), 0.05, 1).astype(_F)
    return Identity(
        skin=skin,
        hair=np.clip(_pick(rng, _HAIR) * rng.uniform(0.8, 1.2) + rng.normal(0, 0.02, 3), 0.02, 0.95).astype(_F),
        iris=np.clip(_pick(rng, _IRIS) + rng.normal(0, 0.03, 3), 0.02, 0.9).astype(_F),
        hair_style=int(rng.choice(3, p=[0.1, 0.5, 0.4])),
        width=rng.uniform(0.66, 0.82),
        jaw=rng.uniform(0.05, 0.28),
        hairline=rng.uniform(-0.68, -0.42),
        temple=rng.uniform(0.15, 0.6),
        fringe=rng.uniform(0.0, 0.25) if rng.random() < 0.35 else 0.0,
        eye_x=rng.uniform(0.26, 0.36),
        eye_y=rng.uniform(-0.16, -0.04),
        eye_w=rng.uniform(0.10, 0.14),
        eye_h=rng.uniform(0.040, 0.065),
        brow_gap=rng.uniform(0.09, 0.15),
        brow_arch=rng.uniform(0.01, 0.05),
        brow_th=rng.uniform(0.018, 0.04),
        nose_y=rng.uniform(0.22, 0.32),
        nose_w=rng.uniform(0.06, 0.10),
        mouth_y=rng.uniform(0.48, 0.60),
        mouth_w=rng.uniform(0.18, 0.30),
        lip_h=rng.uniform(0.03, 0.06),
        smile=rng.uniform(-0.4, 1.2),
        lip_tint=np.array([rng.uniform(0.78, 0.92), rng.uniform(0.45, 0.62), rng.uniform(0.48, 0.65)], _F),
        blush=rng.uniform(0.0, 0.08),
        strand_freq=rng.uniform(35, 80),
    )


def similar_identity(rng: np.random.Generator, target: Identity) -> Identity:
    """Another person, picked the way face-swap pipelines pick sources: close skin tone."""
    other = sample_identity(rng)
    other.skin = np.clip(target.skin + rng.normal(0, 0.035, 3), 0.05, 1).astype(_F)
    other.width, other.jaw = target.width, target.jaw  # the outline stays the target's
    return other


def sample_pose(rng: np.random.Generator) -> Pose:
    # Framed like the face crops detectors are trained on (DeepfakeBench, FF++ pipelines):
    # the head fills most of the frame, with some background, hair and shoulders.
    return Pose(
        cx=rng.uniform(-0.1, 0.1),
        cy=rng.uniform(-0.1, 0.06),
        scale=rng.uniform(0.52, 0.66),
        roll=rng.uniform(-0.25, 0.25),
        yaw=rng.uniform(-0.35, 0.35),
        gaze_x=rng.uniform(-0.3, 0.3),
        gaze_y=rng.uniform(-0.2, 0.2),
    )


def sample_light(rng: np.random.Generator) -> Light:
    d = np.array([rng.uniform(-0.8, 0.8), rng.uniform(-0.7, 0.5), rng.uniform(0.5, 1.0)], _F)
    return Light(
        direction=(d / np.linalg.norm(d)).astype(_F),
        ambient=rng.uniform(0.30, 0.55),
        tint=np.clip(1 + rng.normal(0, 0.05, 3), 0.85, 1.15).astype(_F),
        specular=rng.uniform(0.0, 0.12),
    )


# --------------------------------------------------------------------------- primitives


def _grid(size: int):
    c = ((np.arange(size, dtype=_F) + 0.5) / size * 2 - 1).astype(_F)
    return c[None, :], c[:, None]


def _box(size: int, x0: float, x1: float, y0: float, y1: float):
    """Pixel slices (rows, cols) covering the image-coordinate box, or None if empty."""
    def span(a, b):
        lo = max(int(np.floor((a + 1) / 2 * size)) - 1, 0)
        hi = min(int(np.ceil((b + 1) / 2 * size)) + 1, size)
        return slice(lo, hi) if hi > lo else None
    rows, cols = span(y0, y1), span(x0, x1)
    return None if rows is None or cols is None else (rows, cols)


def _local(x, y, pose: Pose, du: float = 0.0, dv: float = 0.0, zoom: float = 1.0):
    """Image coords -> face-local (u, v); ``du, dv, zoom`` jitter the face (SBI)."""
    dx, dy = x - pose.cx, y - pose.cy
    c, s = np.cos(pose.roll), np.sin(pose.roll)
    k = 1.0 / (pose.scale * zoom)
    u = (dx * c + dy * s) * k - du
    v = (-dx * s + dy * c) * k - dv
    return u.astype(_F), v.astype(_F)


def _cover(d, aa):
    """Anti-aliased coverage of the region ``d <= 0`` (``aa`` = one pixel in d's units)."""
    return np.clip(0.5 - d / aa, 0.0, 1.0)


def _ellipse(u, v, cu, cv, au, av, aa):
    r = np.sqrt(((u - cu) / au) ** 2 + ((v - cv) / av) ** 2)
    return _cover((r - 1.0) * min(au, av), aa)


def _over(canvas, colour, alpha):
    """Paints ``colour`` (f32[3] or f32[H,W,3]) over ``canvas`` with coverage ``alpha``.

    Only the bounding box of the coverage is touched: most features are small.
    """
    rows = np.flatnonzero(alpha.any(1))
    if rows.size == 0:
        return
    cols = np.flatnonzero(alpha.any(0))
    box = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
    a = alpha[box][..., None]
    c = colour[box] if np.ndim(colour) == 3 else colour
    canvas[box] = canvas[box] * (1.0 - a) + a * c


def _spectral_noise(rng, size: int, channels: int, amp: np.ndarray) -> np.ndarray:
    """Unit-variance Gaussian fields f32[size,size,channels] with amplitude spectrum ``amp``."""
    white = rng.standard_normal((channels, size, size), dtype=_F)
    field = sfft.irfft2(sfft.rfft2(white) * amp.astype(_F), s=(size, size))
    field /= field.std(axis=(1, 2), keepdims=True) + 1e-8
    return np.moveaxis(field, 0, -1)


def _freqs(size: int) -> np.ndarray:
    fy = np.fft.fftfreq(size)[:, None]
    fx = np.fft.rfftfreq(size)[None, :]
    return np.sqrt(fx**2 + fy**2)


def _smooth_noise(rng, size: int, sigma: float) -> np.ndarray:
    """Unit-variance noise f32[size,size] low-passed by a Gaussian of ``sigma`` pixels."""
    amp = np.exp(-2 * (np.pi * sigma * _freqs(size)) ** 2)
    return _spectral_noise(rng, size, 1, amp)[..., 0]


def _pink_noise(rng, size: int, channels: int, beta: float) -> np.ndarray:
    """Gaussian field with amplitude spectrum ~ 1/f**beta (natural images: beta ~ 1)."""
    f = _freqs(size)
    f[0, 0] = 1.0
    amp = f ** -beta
    amp[0, 0] = 0.0
    return _spectral_noise(rng, size, channels, amp)


# --------------------------------------------------------------------------- scene


@dataclasses.dataclass
class Scene:
    background: np.ndarray    # f32[H,W,3]
    shirt: np.ndarray         # f32[3]
    shirt_texture: float
    neck_w: float
    texture: np.ndarray       # f32[K,K] face-local skin texture map
    hair_noise: np.ndarray    # f32[H,W] low-frequency warp of the hair strands


def sample_scene(rng: np.random.Generator, size: int) -> Scene:
    """Background with natural-image statistics: 1/f colour noise under dead leaves."""
    x, y = _grid(size)
    beta = rng.uniform(0.9, 1.3)
    field = _pink_noise(rng, size, 3, beta)
    grey = rng.uniform(0.15, 0.85)
    base = np.clip(grey + rng.normal(0, 0.12, 3), 0.05, 0.95).astype(_F)
    mix = np.array([[1, 1, 1], [1, -1, 0], [0.5, 0.5, -1]], _F) * np.array([[0.10], [0.025], [0.025]], _F)
    bg = base + field @ mix * rng.uniform(0.6, 1.6)
    # Dead leaves: occluding discs with power-law radii give edges at every scale.
    for _ in range(int(rng.integers(6, 18))):
        r = 0.08 * rng.pareto(1.5) + 0.08
        cx, cy = rng.uniform(-1.2, 1.2, 2)
        colour = np.clip(base + rng.normal(0, 0.08, 3) + rng.normal(0, 0.15), 0, 1).astype(_F)
        k = rng.uniform(0.5, 2.0)
        box = _box(size, cx - r, cx + r, cy - r / k, cy + r / k)
        if box is None:
            continue
        d = np.sqrt((x[:, box[1]] - cx) ** 2 + ((y[box[0]] - cy) * k) ** 2) - r
        leaf = _cover(d, 2.0 / size)
        sub = bg[box]
        _over(sub, colour + 0.06 * field[box][..., :1], leaf)
    # A gradient from the room's light, then defocus (portrait backgrounds are soft).
    g = rng.normal(0, 0.12, 2)
    bg *= (1 + g[0] * x + g[1] * y)[..., None]
    sigma = rng.uniform(0.0, 3.0) * size / 256
    if sigma > 0.3:
        bg = ndimage.gaussian_filter(bg, (sigma, sigma, 0), mode="nearest")
    return Scene(
        background=np.clip(bg, 0, 1).astype(_F),
        shirt=rng.uniform(0.05, 0.9, 3).astype(_F),
        shirt_texture=rng.uniform(0.0, 0.08),
        neck_w=rng.uniform(0.30, 0.42),
        texture=skin_texture(rng, size),
        hair_noise=_smooth_noise(rng, size, size / 24),
    )


_TEX_EXTENT = 1.6  # texture maps cover u, v in [-1.6, 1.6]


def skin_texture(rng: np.random.Generator, size: int) -> np.ndarray:
    """A face-local texture map f32[size,size]: pores (about one output pixel) and mottling.

    The map is indexed by face-local coordinates, so the texture moves with the head.
    A map of ``size`` cells is about 1.4 cells per output pixel at the default head size;
    a swapped face renders from a map ``factor`` times coarser.
    """
    fine = ndimage.uniform_filter(rng.standard_normal((size, size), dtype=_F), 2)
    return (0.12 * fine + 0.03 * _smooth_noise(rng, size, size / 40)).astype(_F)


def _sample_texture(tex: np.ndarray, u, v) -> np.ndarray:
    k = tex.shape[0]
    scale = (k - 1) / (2 * _TEX_EXTENT)
    rows = np.broadcast_to((v + _TEX_EXTENT) * scale, np.broadcast_shapes(u.shape, v.shape))
    cols = np.broadcast_to((u + _TEX_EXTENT) * scale, rows.shape)
    return ndimage.map_coordinates(tex, [rows.ravel(), cols.ravel()], order=1, mode="wrap").reshape(rows.shape)


# --------------------------------------------------------------------------- the face


def _head_alpha(u, v, ident: Identity, aa):
    w = ident.width * (1 - ident.jaw * np.maximum(v, 0) ** 2)
    r = np.sqrt((u / w) ** 2 + v**2)
    return _cover((r - 1) * w, aa), w


def _shade(u, v, w, light: Light, roll: float):
    """Lambert + Phong on the head ellipsoid; light rotated into the face frame."""
    nu, nv = u / w, v
    nz = np.sqrt(np.clip(1 - nu**2 - nv**2, 0.02, 1))
    c, s = np.cos(roll), np.sin(roll)
    lx, ly, lz = light.direction
    lu, lv = lx * c + ly * s, -lx * s + ly * c
    ndotl = np.clip(nu * lu + nv * lv + nz * lz, 0, 1)
    hz = lz + 1
    hn = np.sqrt(lu**2 + lv**2 + hz**2)
    spec = np.clip((nu * lu + nv * lv + nz * hz) / hn, 0, 1) ** 24
    return light.ambient + (1 - light.ambient) * ndotl, light.specular * spec


def render_face(x, y, ident: Identity, pose: Pose, light: Light, texture, aa_px: float,
                du: float = 0.0, dv: float = 0.0, zoom: float = 1.0):
    """The face layer: shaded skin with eyes, brows, nose, mouth (no hair, no neck).

    Args:
      x, y: image coordinates of the pixel centres (broadcastable to [H,W]).
      texture: f32[K,K] face-local skin texture map (:func:`skin_texture`).
      aa_px: one pixel in image units (2 / size).
      du, dv, zoom: face-local jitter of the features (used by self-blending).

    Returns:
      ``(rgb f32[H,W,3], head_alpha f32[H,W], u, v)``.
    """
    u, v = _local(x, y, pose, du, dv, zoom)
    aa = aa_px / (pose.scale * zoom)
    head, w = _head_alpha(u, v, ident, aa)
    shade, spec = _shade(u, v, w, light, pose.roll)
    skin = ident.skin * (1 + _sample_texture(texture, u, v))[..., None]
    rgb = np.broadcast_to(skin, u.shape + (3,)).astype(_F).copy()
    shift = pose.yaw * 0.35  # features slide toward the turned side
    # Cheeks, socket shadows, nose shadow: soft tints on the skin.
    for side in (-1, 1):
        ex = side * ident.eye_x + shift
        cheek = np.exp(-(((u - ex) / 0.16) ** 2 + ((v - 0.28) / 0.12) ** 2))
        rgb *= 1 - ident.blush * cheek[..., None] * np.array([0.0, 1.0, 0.8], _F)
        socket = np.exp(-(((u - ex) / (ident.eye_w * 1.6)) ** 2 + ((v - ident.eye_y + 0.02) / 0.1) ** 2))
        rgb *= (1 - 0.12 * socket)[..., None]
    side = 1.0 if light.direction[0] < 0 else -1.0
    nose_shadow = _cover(np.abs(u - shift - side * ident.nose_w * 0.8) - 0.03, aa) * _cover(
        np.abs(v - 0.1) - 0.16, aa)
    rgb *= (1 - 0.18 * nose_shadow)[..., None]
    # Eyes: sclera, iris, pupil, catch-light, lash line.
    for s_ in (-1, 1):
        ex = s_ * ident.eye_x + shift
        ew = ident.eye_w * (1 - s_ * pose.yaw * 0.5)
        sclera = _ellipse(u, v, ex, ident.eye_y, ew, ident.eye_h, aa)
        _over(rgb, np.array([0.90, 0.88, 0.85], _F) * ident.skin.mean() ** 0.1, sclera)
        ix, iy = ex + pose.gaze_x * ew * 0.5, ident.eye_y + pose.gaze_y * ident.eye_h * 0.4
        ri = ident.eye_h * 1.05
        iris = _ellipse(u, v, ix, iy, ri, ri, aa) * sclera
        _over(rgb, ident.iris, iris)
        _over(rgb, np.array([0.03, 0.03, 0.03], _F), _ellipse(u, v, ix, iy, ri * 0.45, ri * 0.45, aa) * sclera)
        glint = _ellipse(u, v, ix - 0.3 * ri * light.direction[0], iy - 0.3 * ri, ri * 0.18, ri * 0.18, aa)
        _over(rgb, np.array([1.0, 1.0, 1.0], _F), 0.8 * glint * sclera)
        lash = np.clip(_ellipse(u, v, ex, ident.eye_y - ident.eye_h * 0.15, ew * 1.08, ident.eye_h * 1.25, aa)
                       - sclera, 0, 1) * (v < ident.eye_y)
        _over(rgb, ident.hair * 0.4, 0.85 * lash)
        # Brows: a thick arc above each eye.
        bw = ew * 1.35
        t = np.clip((u - ex) / bw, -1.5, 1.5)
        vb = ident.eye_y - ident.eye_h - ident.brow_gap - ident.brow_arch * (1 - t**2)
        brow = _cover(np.abs(v - vb) - ident.brow_th * (1 - 0.4 * np.abs(t)), aa) * _cover(np.abs(u - ex) - bw, aa)
        _over(rgb, ident.hair * 0.75, 0.9 * brow)
    # Nose: nostrils and a highlight on the tip.
    for s_ in (-1, 1):
        nostril = _ellipse(u, v, shift + s_ * ident.nose_w * 0.55, ident.nose_y, ident.nose_w * 0.35, 0.022, aa)
        _over(rgb, ident.skin * 0.35, 0.8 * nostril)
    tip = np.exp(-(((u - shift) / 0.05) ** 2 + ((v - ident.nose_y + 0.06) / 0.05) ** 2))
    rgb *= (1 + 0.08 * tip)[..., None]
    # Mouth: lips curved by the smile, then the dark line between them.
    mu = u - shift
    curve = -ident.smile * 0.25 * (mu / ident.mouth_w) ** 2 * ident.mouth_w
    lips = _ellipse(mu, v - curve, 0.0, ident.mouth_y, ident.mouth_w, ident.lip_h, aa)
    _over(rgb, ident.skin * ident.lip_tint, lips)
    line = _cover(np.abs(v - curve - ident.mouth_y) - 0.006, aa) * _cover(np.abs(mu) - ident.mouth_w * 0.95, aa)
    _over(rgb, ident.skin * ident.lip_tint * 0.35, 0.9 * line)
    rgb *= shade[..., None] * light.tint
    rgb += spec[..., None]
    return rgb, head, u, v


def render_person(size: int, ident: Identity, pose: Pose, light: Light, scene: Scene):
    """A full "real" frame: background, hair, neck, shirt, ears, face.

    Returns:
      ``(rgb f32[H,W,3], u, v)`` with ``u, v`` the face-local coordinates.
    """
    x, y = _grid(size)
    aa_px = 2.0 / size
    u, v = _local(x, y, pose)
    aa = aa_px / pose.scale
    rgb = scene.background.copy()
    strands = 0.82 + 0.18 * np.sin(ident.strand_freq * 2.5 * np.arctan2(v + 2.2, u) + 2.5 * scene.hair_noise)
    hair_rgb = ident.hair * strands[..., None]
    if ident.hair_style == 2:
        back = _ellipse(u, v, 0.0, 0.45, ident.width * 1.32, 1.45, aa)
        _over(rgb, hair_rgb * 0.8, back)
    # Neck and shoulders.
    neck = _cover(np.abs(u) - scene.neck_w, aa) * _cover(0.4 - v, aa)
    shade_neck = 0.55 + 0.25 * np.clip(v - 0.9, 0, 1)
    _over(rgb, ident.skin * shade_neck[..., None], neck)
    shirt = _ellipse(u, v, 0.0, 2.55, 1.9, 1.15, aa)
    weave = 1 + scene.shirt_texture * np.sin(40 * u)[..., None] * np.sin(40 * v)[..., None]
    _over(rgb, scene.shirt * weave * (0.7 + 0.3 * light.ambient), shirt)
    # Ears sit behind the head outline.
    for s_ in (-1, 1):
        ear = _ellipse(u, v, s_ * ident.width * 0.97, ident.eye_y + 0.14, 0.09, 0.17, aa)
        _over(rgb, ident.skin * 0.8 * light.tint, ear)
    reach = 1.15 * pose.scale  # the head (and ears) fit in this radius around its centre
    box = _box(size, pose.cx - reach, pose.cx + reach, pose.cy - reach, pose.cy + reach)
    if box is not None:
        face, head, _, _ = render_face(x[:, box[1]], y[box[0]], ident, pose, light, scene.texture, aa_px)
        _over(rgb[box], face, head)
    if ident.hair_style:
        hl = ident.hairline + ident.temple * (u / ident.width) ** 2
        if ident.fringe:
            hl = hl + ident.fringe * np.exp(-(((u - 0.2) / 0.35) ** 2))
        cap = _ellipse(u, v, 0.0, -0.04, ident.width * 1.1, 1.1, aa) * _cover(v - hl, aa)
        if ident.hair_style == 2:  # long hair also frames the face down the sides
            sides = (_ellipse(u, v, 0.0, 0.25, ident.width * 1.15, 1.25, aa)
                     * np.clip((np.abs(u) - ident.width * 0.86) / (4 * aa) + 0.5, 0, 1)
                     * _cover(v - 0.35, aa))
            cap = np.maximum(cap, sides)
        _over(rgb, hair_rgb * (0.55 + 0.45 * light.ambient + 0.3 * light.direction[2]), cap)
    return rgb, u, v
