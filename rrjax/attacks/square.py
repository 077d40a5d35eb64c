"""The Square Attack (Andriushchenko et al., ECCV 2020): score-based random search, L∞ and L2.

It queries the model's outputs only — never a gradient — so it measures robustness that
gradient masking (quantisation, non-differentiable preprocessing, saturated softmax) hides
from PGD/APGD. Each query changes one random square window of the current best perturbation
(at the ε-ball's vertices for L∞, a redistribution of the L2 mass for L2) and keeps the
change if the loss rose. The window's area is a fraction ``p`` of the image that shrinks on
the paper's piecewise-constant schedule. Written for one ε and batched over the grid by
``_common.over_eps``; each sample draws its own windows from its own key.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.tree_util import Partial
from jax.typing import ArrayLike

from rrjax import _validation as V
from rrjax.attacks import _common as C
from rrjax.attacks.base import AttackDef, keyword_defaults

__all__ = ["square", "p_schedule", "check_hparams", "DEFINITION"]

# Where p halves, in units of 1/10 000 of the budget (the paper's schedule for 10 000 queries,
# rescaled to the budget as in the AutoAttack implementation).
_HALVINGS = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)
_TINY = 1e-12  # norm floor, as the reference implementation


def p_schedule(queries: int, p_init: float) -> np.ndarray:
    """``p`` at each iteration ``[queries]``: ``p_init`` halved at 10, 50, 200, 500, 1000, 2000,
    4000, 6000 and 8000 ten-thousandths of the budget."""
    it = (np.arange(queries) * 10000) // queries
    return p_init / 2.0 ** np.searchsorted(_HALVINGS, it, side="left")


def _sides(queries: int, p_init: float, h: int, w: int, norm: str) -> np.ndarray:
    """Window side per iteration ``int32[queries]``: ``round(√(p·H·W))``, ≥ 1 (L∞) or odd ≥ 3 (L2)."""
    s = np.round(np.sqrt(p_schedule(queries, p_init) * h * w)).astype(np.int64)
    if norm == "linf":
        s = np.maximum(s, 1)
    else:
        s = np.maximum(s, 3)
        s = s + (s % 2 == 0)
    return np.minimum(s, min(h, w)).astype(np.int32)


def _eta_rect(a: int, b: int) -> np.ndarray:
    """Nested rectangles around the centre of an ``a × b`` block, ring k weighted 1/(k+1)², unit norm."""
    d = np.zeros((a, b))
    r0, c0 = a // 2, b // 2
    for k in range(max(r0, c0) + 1):
        d[max(r0 - k, 0): r0 + k + 1, max(c0 - k, 0): c0 + k + 1] += 1.0 / (k + 1) ** 2
    n = np.sqrt(np.sum(d * d))
    return d / n if n > 0 else d


def _eta(s: int) -> np.ndarray:
    """The L2 update pattern of an ``s × s`` window: +rings on the top half, −rings below, unit norm."""
    d = np.zeros((s, s))
    d[: s // 2] = _eta_rect(s // 2, s)
    d[s // 2:] = -_eta_rect(s - s // 2, s)
    return d / np.sqrt(np.sum(d * d))


def _masks(v: jax.Array, s: jax.Array, size: int) -> jax.Array:
    """``[N, size]``: whether each position lies in ``[v_i, v_i + s)``."""
    pos = jnp.arange(size)
    return (pos >= v[:, None]) & (pos < v[:, None] + s)


def _window(vh: jax.Array, vw: jax.Array, s: jax.Array, h: int, w: int) -> jax.Array:
    """Square windows ``bool[N,1,H,W,1]`` (x is held as ``[N,T,H,W,C]``)."""
    return (_masks(vh, s, h)[:, None, :, None, None]) & (_masks(vw, s, w)[:, None, None, :, None])


def _uniforms(keys: jax.Array, i: jax.Array | int, m: int) -> jax.Array:
    """``m`` uniforms per sample ``[N, m]`` for iteration ``i``: one draw serves every choice
    of a query (fewer PRNG calls keep the compiled loop small)."""
    return jax.vmap(lambda k: jax.random.uniform(jax.random.fold_in(k, i), (m,)))(keys)


def _position(u: jax.Array, s: jax.Array, size: int) -> jax.Array:
    """A window start uniform in ``{0, ..., size − s}`` from uniforms ``u``."""
    return jnp.minimum(jnp.floor(u * (size - s + 1)).astype(jnp.int32), size - s)


def _signs(u: jax.Array, shape: tuple[int, ...], dtype: Any) -> jax.Array:
    return jnp.where(u < 0.5, -1.0, 1.0).astype(dtype).reshape(shape)


def _l2_norm(d: jax.Array) -> jax.Array:
    return C._bcast(C.l2_norm(d), d)


def _linf_init(keys, x, eps, i):
    """Vertical stripes: every column of every channel (and frame) at ``x ± ε``."""
    n, t, _, w, c = x.shape
    sign = _signs(_uniforms(keys, i, t * w * c), (n, t, 1, w, c), x.dtype)
    return jnp.clip(x + eps * sign, 0.0, 1.0)


def _linf_step(keys, x, x_best, eps, s, _, i):
    """Sets a random window of each sample to a vertex ``x ± ε`` (one sign per channel and frame)."""
    n, t, h, w, c = x.shape
    u = _uniforms(keys, i, 2 + t * c)
    m = _window(_position(u[:, 0], s, h), _position(u[:, 1], s, w), s, h, w)
    return jnp.clip(jnp.where(m, x + eps * _signs(u[:, 2:], (n, t, 1, 1, c), x.dtype), x_best), 0.0, 1.0)


def _l2_init(keys, x, eps, i):
    """A grid of ``⌊H/5⌋``-sized blocks, each an η pattern with a random sign per channel."""
    n, t, h, w, c = x.shape
    s0 = max(h // 5, 1)
    nh, nw = h // s0, w // s0
    eta = jnp.asarray(_eta(s0), x.dtype)
    u = _uniforms(keys, i, nh * nw * (1 + t * c))
    flip = u[:, : nh * nw].reshape(n, nh, nw) < 0.5
    pattern = jnp.where(flip[..., None, None], eta.T, eta)  # [n, nh, nw, s0, s0]
    sign = _signs(u[:, nh * nw:], (n, t, nh, nw, c), x.dtype)
    blocks = pattern[:, None, :, :, :, :, None] * sign[:, :, :, :, None, None, :]  # [n,t,nh,nw,s0,s0,c]
    delta = blocks.transpose(0, 1, 2, 4, 3, 5, 6).reshape(n, t, nh * s0, nw * s0, c)
    top, left = (h - nh * s0) // 2, (w - nw * s0) // 2
    delta = jnp.pad(delta, ((0, 0), (0, 0), (top, h - nh * s0 - top), (left, w - nw * s0 - left), (0, 0)))
    return jnp.clip(x + eps * delta / (_l2_norm(delta) + _TINY), 0.0, 1.0)


def _l2_step(keys, x, x_best, eps, s, eta, i):
    """Moves L2 mass into a random window (an η pattern) from a second one, keeping ‖δ‖₂ = ε."""
    n, t, h, w, c = x.shape
    size = eta.shape[-1]
    delta = x_best - x
    u = _uniforms(keys, i, 5 + t * c)
    vh, vw = _position(u[:, 0], s, h), _position(u[:, 1], s, w)
    m1, m2 = _window(vh, vw, s, h, w), _window(_position(u[:, 2], s, h), _position(u[:, 3], s, w), s, h, w)

    def place(flip, vh, vw):
        e = jnp.where(flip, eta.T, eta)
        return jax.lax.dynamic_update_slice(jnp.zeros((h + size, w + size), x.dtype), e, (vh, vw))[:h, :w]

    pattern = jax.vmap(place)(u[:, 4] < 0.5, vh, vw)[:, None, :, :, None]
    per_channel = lambda d: jnp.sqrt(jnp.sum(d * d, axis=(2, 3), keepdims=True))  # noqa: E731
    old = jnp.where(m1, delta, 0.0)
    new = pattern * _signs(u[:, 5:], (n, t, 1, 1, c), x.dtype) + old / (_TINY + per_channel(old))
    room = jnp.maximum(eps ** 2 - _l2_norm(delta) ** 2, 0.0) / (t * c) + _l2_norm(jnp.where(m1 | m2, delta, 0.0)) ** 2
    new = new / (_TINY + per_channel(new)) * jnp.sqrt(room)
    delta = jnp.where(m1, new, jnp.where(m2, 0.0, delta))
    return jnp.clip(x + eps * delta / (_l2_norm(delta) + _TINY), 0.0, 1.0)


def _eta_table(sides: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The η pattern of each distinct side, zero-padded to the largest ``[K,S,S]``, and each
    iteration's index into it."""
    distinct, index = np.unique(sides, return_inverse=True)
    size = int(distinct.max())
    table = np.zeros((len(distinct), size, size), np.float32)
    for j, s in enumerate(distinct):
        table[j, :s, :s] = _eta(int(s))
    return table, index.astype(np.int32)


def _square_one(
    logits_fn: Partial, x: jax.Array, label: jax.Array, p_ref: jax.Array | None, keys: jax.Array, eps: jax.Array,
    *, sample_shape: tuple[int, ...], queries: int, p_init: float, norm: str, spec: C.LossSpec,
) -> jax.Array:
    """Square Attack for one scalar ε over ``x[N,T,H,W,C]`` (frames fold into channels)."""
    init, step = (_linf_init, _linf_step) if norm == "linf" else (_l2_init, _l2_step)
    sides = _sides(queries, p_init, x.shape[2], x.shape[3], norm)
    table, index = _eta_table(sides) if norm == "l2" else (np.zeros((1, 1, 1), np.float32), np.zeros_like(sides))
    sides, table, index = jnp.asarray(sides), jnp.asarray(table, x.dtype), jnp.asarray(index)

    def score(xa):
        logits = logits_fn(xa.reshape(xa.shape[:1] + sample_shape))
        return C.per_sample_loss(spec, logits, label, p_ref), C.success(spec, logits, label)

    # Untargeted ce/margin and targeted searches stop per sample at the first success (RA is
    # settled); the probability shift can always grow, so prob_shift searches the whole budget.
    searching = (lambda ok: jnp.ones_like(ok)) if spec.name == "prob_shift" else (lambda ok: ~ok)

    def cond(state):
        return (state[0] < queries) & jnp.any(searching(state[3]))

    def body(state):
        i, x_best, loss_best, ok_best = state
        x_new = step(keys, x, x_best, eps, sides[i], table[index[i]], i)
        loss, ok = score(x_new)
        take = searching(ok_best) & C.worse_case(spec, ok, loss, ok_best, loss_best)
        return (i + 1, jnp.where(C._bcast(take, x_new), x_new, x_best), jnp.where(take, loss, loss_best),
                jnp.where(take, ok, ok_best))

    x0 = init(keys, x, eps, queries)  # a draw no iteration uses
    x_best = jax.lax.while_loop(cond, body, (jnp.int32(0), x0, *score(x0)))[1]
    return C.project(x_best, x, eps, norm) if norm == "l2" else x_best


@functools.partial(jax.jit, static_argnames=("queries", "p_init", "norm", "spec", "eps_batch_size"))
def _square_grid(
    logits_fn: Partial, x: jax.Array, label: jax.Array, keys: jax.Array, eps: jax.Array, *, queries: int,
    p_init: float, norm: str, spec: C.LossSpec, eps_batch_size: int | None,
) -> jax.Array:
    p_ref = jax.nn.softmax(logits_fn(x)) if spec.name == "prob_shift" else None
    canonical = x.reshape((x.shape[0], -1) + x.shape[-3:])  # [N,T,H,W,C], T = 1 for images
    single = functools.partial(
        _square_one, logits_fn, canonical, label, p_ref, keys, sample_shape=x.shape[1:], queries=queries,
        p_init=p_init, norm=norm, spec=spec,
    )
    x_adv = C.over_eps(single, eps, batch_size=eps_batch_size).reshape(eps.shape + x.shape)
    if norm == "linf":
        x_adv = C.enforce_linf(x_adv, x[None], eps.reshape((-1,) + (1,) * x.ndim))
    return x_adv


def square(
    logits_fn: Any,
    x: ArrayLike,
    y: ArrayLike,
    eps: ArrayLike,
    *,
    key: ArrayLike,
    queries: int = 5000,
    p_init: float = 0.8,
    norm: str = "linf",
    loss: str = "margin",
    target: ArrayLike | None = None,
    shift_norm: str = "linf",
    eps_batch_size: int | None = None,
) -> jax.Array:
    """Square Attack: random search over square windows using the model's outputs only.

    L∞: the start sets every pixel column of every channel to ``x ± ε`` (vertical stripes);
    each query sets one random ``s × s`` window to ``x ± ε``, one random sign per channel.
    L2: the start is a grid of η patterns (nested squares, positive on one half and negative
    on the other) scaled to ‖δ‖₂ = ε; each query redistributes the perturbation's mass from a
    second window into a new η pattern in the first, keeping ‖δ‖₂ = ε. A change is kept if it
    raises the loss (or, for RA, makes the sample adversarial). The window side is
    ``round(√(p·H·W))`` (L2: odd, ≥ 3) with ``p`` from :func:`p_schedule`. For videos a window
    spans every frame, with a sign per frame and channel.

    Args:
      logits_fn: pure ``x -> logits[N,C]``; only evaluated, never differentiated.
      x: f32[N,H,W,C] images or f32[N,T,H,W,C] videos in [0,1]. y: int[N] true labels.
      eps: scalar or f32[E] grid (≥ 0) in pixel units.
      key: PRNG key (sample ``i`` uses ``fold_in(key, i)``) or a batch of ``N`` keys; the
        windows and signs of a sample depend only on its key (not on ε or the batch).
      queries: iterations, one model query each, after the query at the start point (static;
        5000 in AutoAttack). Untargeted ``ce``/``margin`` and targeted searches stop per
        sample at the first success; ``prob_shift`` uses the whole budget.
      p_init: initial fraction of the image a window covers, in (0, 1] (static; 0.8 for L∞
        in the paper, AutoAttack uses 0.8 for both norms).
      norm: ``"linf"`` or ``"l2"`` (static).
      loss: ``"margin"`` (the CW margin, the paper's choice), ``"ce"``, or ``"prob_shift"``
        (‖p(x')−p(x)‖ in ``shift_norm``, the worst case for RR).
      target: optional int[N]; the search maximises the targeted loss and stops on target.
      shift_norm: ``"linf"``, ``"l1"`` or ``"l2"`` for ``loss="prob_shift"``.
      eps_batch_size: grid points vectorised at once (``None`` = all); bounds memory.

    Returns:
      f32[N,...] for scalar ``eps``, else f32[E,N,...]; ``‖x_adv − x‖_∞ ≤ ε`` exactly in
      float32, ``‖x_adv − x‖₂ ≤ ε`` up to float32 rounding of the norm; ``x_adv = x`` at ε = 0.

    Raises:
      ValueError: inputs that are not images or videos, invalid hyperparameters (each names
        the argument and the valid choices), ``prob_shift`` with ``target``.

    References:
      Andriushchenko, Croce, Flammarion & Hein, "Square Attack: a query-efficient black-box
      adversarial attack via random search", ECCV 2020.
    """
    prep = C.prepare(logits_fn, x, y, eps, key)
    hp = check_hparams(queries=queries, p_init=p_init, norm=norm, loss=loss, shift_norm=shift_norm,
                       eps_batch_size=eps_batch_size, targeted=target is not None)
    label = prep.y if target is None else C.prepare_target(target, prep)
    x_adv = _core(prep.logits_fn, prep.x, label, prep.eps, prep.keys, targeted=target is not None, **hp)
    return C.finish(x_adv, prep.scalar_eps)


def _core(
    logits_fn: Partial, x: jax.Array, label: jax.Array, eps: Any, keys: jax.Array, *, queries: int = 5000,
    p_init: float = 0.8, norm: str = "linf", loss: str = "margin", shift_norm: str = "linf",
    eps_batch_size: int | None = None, targeted: bool = False,
) -> jax.Array:
    """The Square Attack on validated inputs: ``x_adv[E,N,...]`` (``keys``: one typed key per sample)."""
    if x.ndim not in (4, 5):
        raise ValueError(f"square needs images [N,H,W,C] or videos [N,T,H,W,C] (its windows are squares "
                         f"in H x W); got x of shape {tuple(x.shape)}")
    spec = C.loss_spec(loss, targeted=targeted, confidence=None, shift_norm=shift_norm)
    return _square_grid(logits_fn, x, label, keys, jnp.asarray(eps, jnp.float32), queries=queries,
                        p_init=float(p_init), norm=norm, spec=spec, eps_batch_size=eps_batch_size)


def check_hparams(
    *, queries: Any, p_init: Any, norm: Any, loss: Any, shift_norm: Any, eps_batch_size: Any,
    targeted: bool = False,
) -> dict[str, Any]:
    """Validates the Square Attack's hyperparameters on the host (ValueError naming the argument)."""
    V.check_choice(norm, C.NORMS, name="norm")
    C.loss_spec(loss, targeted=targeted, confidence=None, shift_norm=shift_norm)
    p = V.check_number(p_init, name="p_init", lower=0.0, upper=1.0, strict=True)
    return {
        "queries": V.check_int(queries, name="queries", minimum=1),
        "p_init": p,
        "norm": norm,
        "loss": loss,
        "shift_norm": shift_norm,
        "eps_batch_size": None if eps_batch_size is None else V.check_int(eps_batch_size, name="eps_batch_size", minimum=1),
    }


_recorded = C.recorded_checker(check_hparams)


DEFINITION = AttackDef(
    "square", square, check=_recorded, defaults=lambda: keyword_defaults(square), core=_core,
    # x, the best point, the candidate, and the L2 step's δ, windows and pattern.
    buffers=6, gradient_free=True,
)
