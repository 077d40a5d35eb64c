"""Shared pieces of the attacks: losses, projections, keys, the ε-grid helper and validation.

Conventions used by every attack:
  * ``x: f32[N, ...]`` in [0, 1] (images ``[N,H,W,C]`` or videos ``[N,T,H,W,C]``); all norms
    are per sample, over every non-batch axis.
  * Attacks *maximise* a per-sample loss; targeted attacks maximise the negated loss toward
    the target.
  * Per-sample randomness: sample ``i`` of a batch uses ``fold_in(key, i)`` unless the caller
    passes a batch of keys ``[N]`` — the sweep passes keys folded with each sample's global
    index, so results do not depend on how samples are chunked or sharded.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from jax.tree_util import Partial

from rrjax import _validation as V
from rrjax.metrics.robustness import SHIFT_NORMS, probability_shift

NORMS = ("linf", "l2")
LOSSES = ("ce", "margin", "prob_shift")

# Weight of the cross-entropy tie-breaker in the probability-shift loss. At x' = x every
# symmetric function of p(x') - p(x) has zero gradient, so the first step would not move;
# the tie-breaker supplies the direction away from the clean prediction (the direction that
# can move the probabilities furthest for two classes) and is negligible afterwards.
_SHIFT_TIEBREAK = 1e-3
# Shifts below this are float32 noise (the clean probabilities and those at an unmoved
# iterate can differ by an ulp when computed in differently batched programs); their
# gradient has an arbitrary sign and would override the tie-breaker, so it is dropped.
_SHIFT_FLOOR = 1e-5


# --------------------------------------------------------------------------- norms & boxes

def _axes(x: jax.Array) -> tuple[int, ...]:
    return tuple(range(1, x.ndim))


def _bcast(v: jax.Array, x: jax.Array) -> jax.Array:
    """Reshapes a per-sample ``[N]`` (or scalar) array to broadcast against ``x[N, ...]``."""
    v = jnp.asarray(v, x.dtype)
    return v.reshape(v.shape + (1,) * (x.ndim - v.ndim))


def l2_norm(d: jax.Array) -> jax.Array:
    """Per-sample Euclidean norm ``[N]`` of ``d[N, ...]``."""
    return jnp.sqrt(jnp.sum(jnp.square(d), axis=_axes(d)))


def linf_norm(d: jax.Array) -> jax.Array:
    """Per-sample max-abs norm ``[N]`` of ``d[N, ...]``."""
    return jnp.max(jnp.abs(d), axis=_axes(d))


def project(x_adv: jax.Array, x: jax.Array, eps: jax.Array, norm: str) -> jax.Array:
    """Projects ``x_adv`` onto the ε-ball around ``x`` intersected with the box [0, 1].

    Ball first, then box: since ``x`` lies in the box, clipping moves every coordinate toward
    ``x``, so the result stays inside the ball in either norm. ``eps`` is a scalar or ``[N]``.
    """
    eps = _bcast(eps, x)
    if norm == "linf":
        x_adv = jnp.clip(x_adv, x - eps, x + eps)
    else:
        d = x_adv - x
        n = _bcast(l2_norm(d), x)
        # Scale only when outside; the tiny shrink keeps the float32 norm <= eps after rounding.
        scale = jnp.where(n > eps, eps / jnp.maximum(n, 1e-30) * (1.0 - 1e-6), 1.0)
        x_adv = x + d * scale
    return jnp.clip(x_adv, 0.0, 1.0)


def enforce_linf(x_adv: jax.Array, x: jax.Array, eps: jax.Array) -> jax.Array:
    """Makes ``|x_adv - x| <= eps`` hold exactly in float32 arithmetic.

    ``clip(x_adv, x - eps, x + eps)`` can leave ``fl(x_adv - x)`` one ulp above ``eps`` because
    ``x + eps`` is rounded; stepping such entries one ulp toward ``x`` fixes that.
    """
    eps = _bcast(eps, x)
    over = jnp.abs(x_adv - x) > eps
    return jnp.where(over, jnp.nextafter(x_adv, x), x_adv)


def ascent_direction(g: jax.Array, norm: str) -> jax.Array:
    """Steepest-ascent direction of unit size in ``norm``: ``sign(g)`` or ``g / ||g||_2``.

    Non-finite gradient entries (a detector that returns NaN/inf for some inputs) count as 0:
    the attack then does not move along them, instead of turning the whole sample into NaN.
    """
    g = finite_or_zero(g)
    if norm == "linf":
        return jnp.sign(g)
    n = _bcast(l2_norm(g), g)
    return jnp.where(n > 0, g / jnp.maximum(n, 1e-30), 0.0)


def finite_or_zero(g: jax.Array) -> jax.Array:
    """``g`` with NaN/±inf entries replaced by 0 (an identity on finite arrays)."""
    return jnp.where(jnp.isfinite(g), g, jnp.zeros((), g.dtype))


def random_in_ball(keys: jax.Array, x: jax.Array, norm: str) -> jax.Array:
    """A point drawn uniformly from the *unit* ball of ``norm``, one per sample key.

    Scale by ε outside: the same draw then serves every ε of a grid, so a sample's start
    depends only on its key, never on the other values of the grid.
    """
    shape = x.shape[1:]
    if norm == "linf":
        return jax.vmap(lambda k: jax.random.uniform(k, shape, x.dtype, -1.0, 1.0))(keys)

    def one(k):
        k_dir, k_rad = jax.random.split(k)
        d = jax.random.normal(k_dir, shape, x.dtype)
        d = d / jnp.maximum(jnp.sqrt(jnp.sum(d * d)), 1e-30)
        # Radius U^(1/dim) makes the draw uniform in volume.
        r = jax.random.uniform(k_rad, (), x.dtype) ** (1.0 / d.size)
        return d * r

    return jax.vmap(one)(keys)


# --------------------------------------------------------------------------- losses

def other_class_max(logits: jax.Array, label: jax.Array) -> jax.Array:
    """``max_{j != label} logits[:, j]`` by masking (correct for negative logits, no ±inf maths)."""
    onehot = jax.nn.one_hot(label, logits.shape[-1], dtype=bool)
    lowest = jnp.finfo(logits.dtype).min
    return jnp.max(jnp.where(onehot, lowest, logits), axis=-1)


def true_class_logit(logits: jax.Array, label: jax.Array) -> jax.Array:
    return jnp.take_along_axis(logits, label[:, None], axis=-1)[:, 0]


def margin(logits: jax.Array, label: jax.Array) -> jax.Array:
    """CW margin ``max_{j != label} z_j - z_label`` per sample (> 0 means misclassified)."""
    return other_class_max(logits, label) - true_class_logit(logits, label)


@dataclasses.dataclass(frozen=True)
class LossSpec:
    """Static description of the objective an attack maximises."""

    name: str = "ce"
    targeted: bool = False
    confidence: float | None = None  # margin clipped at κ (CW); None = unclipped
    shift_norm: str = "linf"


def per_sample_loss(
    spec: LossSpec, logits: jax.Array, label: jax.Array, p_ref: jax.Array | None
) -> jax.Array:
    """The per-sample objective ``[N]`` to *maximise*.

    ``label`` is the true class (untargeted) or the target class (targeted); ``p_ref`` the
    clean probabilities (used by ``prob_shift``).
    """
    if spec.name == "ce":
        ce = -jnp.take_along_axis(jax.nn.log_softmax(logits), label[:, None], axis=-1)[:, 0]
        return -ce if spec.targeted else ce
    if spec.name == "margin":
        m = margin(logits, label)
        m = -m if spec.targeted else m
        return m if spec.confidence is None else jnp.minimum(m, spec.confidence)
    # prob_shift: move the probability vector as far as possible from the clean one.
    p = jax.nn.softmax(logits)
    pred_ref = jnp.argmax(p_ref, axis=-1)
    away = -jnp.take_along_axis(jax.nn.log_softmax(logits), pred_ref[:, None], axis=-1)[:, 0]
    shift = probability_shift(p_ref, p, spec.shift_norm)
    return jnp.where(shift > _SHIFT_FLOOR, shift, 0.0) + _SHIFT_TIEBREAK * away


def success(spec: LossSpec, logits: jax.Array, label: jax.Array) -> jax.Array:
    """Whether each sample is adversarial: misclassified (untargeted) or on target (targeted)."""
    pred = jnp.argmax(logits, axis=-1)
    return pred == label if spec.targeted else pred != label


def worse_case(spec: LossSpec, ok: jax.Array, loss: jax.Array, ok_ref: jax.Array, loss_ref: jax.Array) -> jax.Array:
    """Whether a candidate is a worse case for the model than the reference, per sample ``[N]``.

    For RA (``ce``, ``margin`` ...): a success beats a failure, then the higher loss wins. For
    ``prob_shift``: the higher loss (the larger probability shift), success aside. This is how
    restarts, best-iterate tracking and score-based searches keep each sample's worst case.
    """
    if spec.name == "prob_shift":
        return loss > loss_ref
    return (ok & ~ok_ref) | ((ok == ok_ref) & (loss > loss_ref))


# --------------------------------------------------------------------------- loops

# Why attacks accept ``unroll=True`` (jax/jaxlib 0.10.2, XLA:CPU; measured in BENCHMARKS.md):
# inside a while loop, XLA's CPU compiler leaves the input-gradient convolution that
# ``jax.grad`` emits with its kernel in a non-canonical layout (HLO dim_labels ``01oi``), which
# runs ~5x slower than the canonical form it produces outside loops (one 5x5 conv: 250 vs
# 50 ms); a PGD step on Meso4 is then 2-3x slower. Unrolling the static step loop removes the
# while loop. Under XLA:CPU's default concurrency-optimised scheduler the unrolled program keeps
# every step's activations alive (temp memory x steps); with
# XLA_FLAGS=--xla_cpu_enable_concurrency_optimized_scheduler=false it needs what the loop needs.


# --------------------------------------------------------------------------- ε grid

def over_eps(
    single: Callable[..., jax.Array],
    eps: jax.Array,
    *per_eps: jax.Array,
    batch_size: int | None = None,
) -> jax.Array:
    """The one place the ε-grid axis is added: ``single(eps_e, *per_eps_e) -> [N,...]``.

    Args:
      single: an attack written for one scalar ε.
      eps: f32[E] grid.
      per_eps: further ``[E]`` arrays mapped alongside ε (e.g. the step size).
      batch_size: ``None`` vectorises the whole grid (one big batch of E·N samples);
        an integer bounds memory by running ``batch_size`` grid points at a time
        (``lax.map``), still inside one compiled program.

    Returns:
      ``[E, N, ...]``.
    """
    fn = lambda args: single(*args)  # noqa: E731
    if batch_size is None or batch_size >= eps.shape[0]:
        return jax.vmap(fn)((eps, *per_eps))
    return jax.lax.map(fn, (eps, *per_eps), batch_size=batch_size)


# --------------------------------------------------------------------------- validation

def as_logits_fn(logits_fn: Any) -> Partial:
    """Wraps a callable as a ``jax.tree_util.Partial`` so it can be a (pytree) jit argument.

    A ``Partial(apply, variables)`` keeps the weights as traced leaves; a plain function
    becomes a leaf-less Partial whose identity keys the compilation cache.
    """
    if isinstance(logits_fn, Partial):
        return logits_fn
    if not callable(logits_fn):
        raise ValueError(f"logits_fn must be callable (x -> logits[N,C]), got {type(logits_fn).__name__}")
    return Partial(logits_fn)


def check_logits_shape(logits_fn: Partial, x: Any) -> int:
    """Abstractly evaluates ``logits_fn`` on ``x`` (no FLOPs) and returns the class count."""
    spec = jax.ShapeDtypeStruct(x.shape, jnp.float32)
    try:
        out = jax.eval_shape(logits_fn, spec)
    except ValueError:
        raise
    except Exception as e:  # a shape error inside the user's network
        raise ValueError(
            f"logits_fn failed on input of shape {tuple(x.shape)}: {type(e).__name__}: {e}"
        ) from e
    shape = getattr(out, "shape", None)
    if shape is None or len(shape) != 2 or shape[0] != x.shape[0] or shape[1] < 2:
        raise ValueError(
            f"logits_fn returned shape {shape} for input {tuple(x.shape)}; expected logits "
            f"[{x.shape[0]}, C] with C >= 2 classes (index 1 = fake)"
        )
    if not jnp.issubdtype(out.dtype, jnp.floating):
        raise ValueError(f"logits_fn returned dtype {out.dtype}; expected floating logits")
    return int(shape[1])


def sample_keys(key: Any, n: int) -> jax.Array:
    """Per-sample keys ``[N]``: ``fold_in(key, i)``, or ``key`` itself if it is already ``[N]``."""
    if key is None:
        raise ValueError("key is required (e.g. key=jax.random.key(0)); attacks are deterministic given a key")
    try:
        k = jnp.asarray(key) if not isinstance(key, jax.Array) else key
    except TypeError:
        raise ValueError(f"key must be a JAX PRNG key, got {type(key).__name__}") from None
    typed = jnp.issubdtype(k.dtype, jax.dtypes.prng_key)
    if not typed:
        if k.dtype != jnp.uint32 or k.ndim < 1 or k.shape[-1] != 2:
            raise ValueError(
                f"key has shape {tuple(k.shape)} and dtype {k.dtype}; expected a PRNG key "
                "(jax.random.key(seed)) or a batch of N keys"
            )
        k = jax.random.wrap_key_data(k)
    if k.ndim == 0:
        return jax.vmap(lambda i: jax.random.fold_in(k, i))(jnp.arange(n, dtype=jnp.uint32))
    if k.shape != (n,):
        raise ValueError(f"key is a batch of shape {tuple(k.shape)}; expected a single key or ({n},) keys")
    return k


@dataclasses.dataclass(frozen=True)
class Prepared:
    """Validated attack inputs."""

    logits_fn: Partial
    x: jax.Array
    y: jax.Array
    eps: jax.Array  # f32[E]
    scalar_eps: bool
    keys: jax.Array
    num_classes: int


def prepare(logits_fn: Any, x: Any, y: Any, eps: Any, key: Any, *, eps_upper: float | None = None) -> Prepared:
    """Host-side validation shared by all attacks (see ``rrjax._validation``)."""
    fn = as_logits_fn(logits_fn)
    x = jnp.asarray(V.as_pixels(x, name="x", ranks=(2, 3, 4, 5)))
    num_classes = check_logits_shape(fn, x)
    y = jnp.asarray(V.as_labels(y, x.shape[0], name="y", num_classes=num_classes))
    grid, scalar = V.as_grid(eps, name="eps", lower=0.0, upper=eps_upper)
    keys = sample_keys(key, x.shape[0])
    return Prepared(fn, x, y, jnp.asarray(grid), scalar, keys, num_classes)


def prepare_target(target: Any, prep: Prepared) -> jax.Array:
    """Validates targeted-attack labels against the batch and class count."""
    t = jnp.asarray(V.as_labels(target, prep.x.shape[0], name="target", num_classes=prep.num_classes))
    return t


def loss_spec(loss: str, *, targeted: bool, confidence: float | None, shift_norm: str) -> LossSpec:
    V.check_choice(loss, LOSSES, name="loss")
    V.check_choice(shift_norm, SHIFT_NORMS, name="shift_norm")
    if confidence is not None:
        confidence = V.check_number(confidence, name="confidence", lower=0.0)
        if loss != "margin":
            raise ValueError(f"confidence={confidence} applies to loss='margin' only; got loss={loss!r}")
    if targeted and loss == "prob_shift":
        raise ValueError("loss='prob_shift' has no target class; use loss='ce' or 'margin' with target=")
    return LossSpec(loss, targeted, confidence, shift_norm)


def recorded_checker(check_hparams: Callable[..., dict[str, Any]]) -> Callable[..., dict[str, Any]]:
    """An ``AttackDef.check`` from an attack's ``check_hparams``: the validated values, without
    ``shift_norm`` unless ``loss="prob_shift"`` (the only loss that reads it, so it stays out of
    the records and cell ids of other configurations)."""

    def check(**hparams: Any) -> dict[str, Any]:
        out = check_hparams(**hparams)
        if out["loss"] != "prob_shift":
            out.pop("shift_norm")
        return out

    return check


def finish(x_adv: jax.Array, scalar_eps: bool) -> jax.Array:
    return x_adv[0] if scalar_eps else x_adv

