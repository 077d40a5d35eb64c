"""Per-layer breakdown: forward pass + input gradient of every layer of a detector, alone, in
XLA and in PyTorch, grouped by layer type (stem conv, conv, depthwise, pointwise, SE, BN,
activation, pooling, dense).

The layers are the model's own: an eval forward pass is traced with a Flax method interceptor
that records every ``Conv``, ``BatchNorm`` and ``Dense`` call (module, parameters, input shape),
and each recorded module is timed through its own ``apply``. Activations, pooling and
squeeze-excitation are functions, not modules; :func:`functional_layers` lists them per model
family from the recorded calls.

**Lowering hook.** :func:`layer_breakdown` takes ``variants``, a mapping from a column label to
a detector with the same parameters (default ``{"XLA": detector}``). A detector whose modules
carry a lowering (a CPU-specific convolution, say) records modules that run under it, so a
"lax lowering vs fast lowering" comparison is ``variants={"lax": with_lowering(d, "xla"),
"fast": with_lowering(d, "cpu-fast")}``; the table gets one XLA column per variant.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from rrjax.bench.config import BenchConfig
from rrjax.bench.measure import load, median, time_runner
from rrjax.bench.workload import Workload
from rrjax.models import meso

__all__ = ["KINDS", "Call", "LayerCase", "record_calls", "functional_layers", "layer_cases", "layer_breakdown",
           "summarise_by_kind"]

log = logging.getLogger("rrjax.bench")

KINDS = ("stem conv", "conv", "depthwise", "pointwise", "SE", "BN", "activation", "pooling", "dense")


@dataclasses.dataclass(frozen=True)
class Call:
    """One recorded module call: path, unbound module, its variables, input and output shapes
    (``rows`` = leading size for one detector sample: T for a video detector's frame layers)."""

    path: tuple[str, ...]
    module: nn.Module
    variables: Any
    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...]
    rows: int


@dataclasses.dataclass(frozen=True)
class LayerCase:
    """A layer to time: ``apply(params, x)`` in JAX and ``torch_fn(x)`` in PyTorch (None: XLA only).

    ``shape`` is the per-row input shape, ``rows`` the rows per detector sample (T for a video
    detector's frame layers, else 1) and ``count`` the identical instances (same ``sig``) in the
    detector; ``name`` is the first instance's path.
    """

    kind: str
    sig: str
    name: str
    shape: tuple[int, ...]
    rows: int
    count: int
    apply: Callable[[Any, jax.Array], jax.Array]
    params: Any
    torch_fn: Callable[[Any], Any] | None


def _subtree(variables: Mapping[str, Any], path: tuple[str, ...]) -> dict[str, Any]:
    out = {}
    for col, tree in variables.items():
        for p in path:
            tree = tree.get(p) if isinstance(tree, Mapping) else None
        if tree is not None:
            out[col] = tree
    return out


def record_calls(detector: Any, variables: Any) -> list[Call]:
    """Every ``Conv``/``BatchNorm``/``Dense`` call of an eval forward pass on one sample, in order
    (traced with ``jax.eval_shape``: nothing is computed)."""
    calls: list[Call] = []

    def record(next_fun, args, kwargs, context):
        out = next_fun(*args, **kwargs)
        m = context.module
        if context.method_name == "__call__" and isinstance(m, (nn.Conv, nn.BatchNorm, nn.Dense)):
            path = tuple(m.path)
            calls.append(Call(path, m.clone(parent=None, name=None), _subtree(variables, path),
                              tuple(args[0].shape[1:]), tuple(out.shape[1:]), int(args[0].shape[0])))
        return out

    x = jax.ShapeDtypeStruct((1,) + tuple(detector.input_shape), jnp.float32)
    with nn.intercept_methods(record):
        jax.eval_shape(lambda v, xa: detector.module.apply(v, xa, train=False), variables, x)
    return calls


# --------------------------------------------------------------------------- PyTorch twins of one layer

def _tensor(a: Any) -> Any:
    import torch

    return torch.from_numpy(np.array(a, np.float32, copy=True))


def _tuple(v: Any, n: int) -> tuple[int, ...]:
    if v is None:
        return (1,) * n
    return (v,) * n if isinstance(v, int) else tuple(v)


def _conv_pads(call: Call) -> tuple[tuple[int, int], ...]:
    m = call.module
    k = tuple(m.kernel_size)
    if isinstance(m.padding, str):
        window = tuple((kk - 1) * d + 1 for kk, d in zip(k, _tuple(m.kernel_dilation, len(k))))
        return tuple(tuple(p) for p in lax.padtype_to_pads(call.in_shape[:-1], window, _tuple(m.strides, len(k)),
                                                           m.padding))
    if isinstance(m.padding, int):
        return ((m.padding, m.padding),) * len(k)
    return tuple(tuple(p) for p in m.padding)


def _torch_conv(call: Call) -> Callable[[Any], Any]:
    import torch.nn.functional as F

    m = call.module
    n = len(m.kernel_size)
    strides, dil, pads = _tuple(m.strides, n), _tuple(m.kernel_dilation, n), _conv_pads(call)
    w = _tensor(np.transpose(call.variables["params"]["kernel"], (3, 2, 0, 1)))
    b = _tensor(call.variables["params"]["bias"]) if m.use_bias else None
    groups = m.feature_group_count
    if all(lo == hi for lo, hi in pads):  # as the reference networks: padding inside the conv
        same = tuple(lo for lo, _ in pads)
        return lambda t: F.conv2d(t, w, b, strides, same, dil, groups)
    flat = tuple(v for lo, hi in reversed(pads) for v in (lo, hi))  # asymmetric: F.pad first, as SamePadConv
    return lambda t: F.conv2d(F.pad(t, flat), w, b, strides, 0, dil, groups)


def _torch_module(call: Call) -> Callable[[Any], Any] | None:
    import torch.nn.functional as F

    m, v = call.module, call.variables
    if isinstance(m, nn.Conv):
        return _torch_conv(call) if len(m.kernel_size) == 2 else None
    if isinstance(m, nn.BatchNorm):
        scale, bias = _tensor(v["params"]["scale"]), _tensor(v["params"]["bias"])
        mean, var = _tensor(v["batch_stats"]["mean"]), _tensor(v["batch_stats"]["var"])
        return lambda t: F.batch_norm(t, mean, var, scale, bias, False, 0.0, m.epsilon)
    w, b = _tensor(np.asarray(v["params"]["kernel"]).T), _tensor(v["params"]["bias"])
    return lambda t: F.linear(t, w, b)


def _module_kind(call: Call) -> str:
    m = call.module
    if isinstance(m, nn.BatchNorm):
        return "BN"
    if isinstance(m, nn.Dense):
        return "dense"
    if m.feature_group_count > 1:
        return "depthwise"
    if all(k == 1 for k in m.kernel_size):
        return "pointwise"
    return "stem conv" if call.in_shape[-1] <= 3 else "conv"


def _module_case(call: Call, with_torch: bool) -> LayerCase:
    module = call.module
    shapes = jax.tree_util.tree_map(lambda a: tuple(a.shape), call.variables)
    sig = f"{module.__class__.__name__}{_describe(module)} {shapes} {call.in_shape}->{call.out_shape}"
    return LayerCase(_module_kind(call), sig, "/".join(call.path), call.in_shape, call.rows, 1,
                     lambda p, x: module.apply(p, x), call.variables, _torch_module(call) if with_torch else None)


def _describe(m: nn.Module) -> str:
    if isinstance(m, nn.Conv):
        return f"(k={tuple(m.kernel_size)}, s={m.strides}, p={m.padding}, d={m.kernel_dilation}, g={m.feature_group_count})"
    return ""


# --------------------------------------------------------------------------- functional layers

def _strip(path: tuple[str, ...]) -> tuple[str, ...]:
    return path[1:] if path and path[0] == "frame_model" else path


def _fn_case(kind: str, sig: str, call: Call, fn: Callable[[jax.Array], jax.Array],
             torch_fn: Callable[[], Callable[[Any], Any]], with_torch: bool, *, on_input: bool = False) -> LayerCase:
    """A parameter-free layer applied to ``call``'s output (``on_input``: its input)."""
    shape = call.in_shape if on_input else call.out_shape
    where = f"{'before' if on_input else 'after'} {'/'.join(call.path)}"
    return LayerCase(kind, f"{sig} {shape}", f"{sig} {where}", shape, call.rows, 1,
                     lambda p, x: fn(x), {}, torch_fn() if with_torch else None)


def _relu():
    import torch.nn.functional as F

    return F.relu


def _silu():
    import torch.nn.functional as F

    return F.silu


def _torch_max_pool(k: int, s: int, p: int):
    import torch.nn.functional as F

    return lambda: (lambda t: F.max_pool2d(t, k, s, p))


def _global_avg():
    import torch.nn.functional as F

    return lambda t: F.adaptive_avg_pool2d(t, 1)


def _jax_global_avg(x: jax.Array) -> jax.Array:
    return jnp.mean(x, axis=(1, 2), keepdims=True)


def _meso_functional(calls: list[Call], with_torch: bool) -> list[LayerCase]:
    """MesoNets: ReLU after each plain conv (none inside inception branches); max pooling after
    every BatchNorm use, by 2 and by 4 after the last (``rrjax.models.meso``)."""
    out = [_fn_case("activation", "relu", c, jax.nn.relu, _relu, with_torch)
           for c in calls if isinstance(c.module, nn.Conv) and len(_strip(c.path)) == 1]
    bns = [c for c in calls if isinstance(c.module, nn.BatchNorm)]
    for i, c in enumerate(bns):
        k = 4 if i == len(bns) - 1 else 2
        # meso's own pooling (reshape + max with a first-maximum gradient).
        out.append(_fn_case("pooling", f"max_pool {k}x{k}/{k}", c,
                            lambda x, k=k: meso._pool(x, k), _torch_max_pool(k, k, 0), with_torch))
    return out


def _xception_functional(calls: list[Call], with_torch: bool) -> list[LayerCase]:
    """Xception: ReLU before every block's separable conv but block 1's first and after bn1..bn4;
    3x3/2 max pooling ending each strided block; global average pooling."""
    out = []
    for i, c in enumerate(calls):
        p = _strip(c.path)
        if isinstance(c.module, nn.Conv) and c.module.feature_group_count > 1 and p[0].startswith("block") \
                and p[:2] != ("block1", "sep0"):
            out.append(_fn_case("activation", "relu", c, jax.nn.relu, _relu, with_torch, on_input=True))
        elif isinstance(c.module, nn.BatchNorm) and len(p) == 1:
            out.append(_fn_case("activation", "relu", c, jax.nn.relu, _relu, with_torch))
        elif p[-1] == "skip" and tuple(c.module.strides or (1, 1)) != (1, 1):
            bn = next(b for b in reversed(calls[:i]) if isinstance(b.module, nn.BatchNorm))
            # HOOK: rrjax.models.layers.max_pool(x, 3, 2, 1, lowering=...) once models carry a lowering.
            out.append(_fn_case("pooling", "max_pool 3x3/2", bn,
                                lambda x: nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1))),
                                _torch_max_pool(3, 2, 1), with_torch))
    last = _last_bn(calls)  # bn4, before the dense head
    out.append(_fn_case("pooling", "global average", last, _jax_global_avg, _global_avg, with_torch))
    return out


def _last_bn(calls: list[Call]) -> Call:
    return next(c for c in reversed(calls) if isinstance(c.module, nn.BatchNorm))


def _se_case(block: str, calls: list[Call], with_torch: bool) -> LayerCase:
    """EfficientNet's squeeze-excitation on the depthwise output: mean -> 1x1 reduce -> swish ->
    1x1 expand -> sigmoid gate (``rrjax.models.efficientnet.MBConv``)."""
    get = {_strip(c.path)[-1]: c for c in calls if _strip(c.path)[0] == block}
    red, exp, bn = get["se_reduce"], get["se_expand"], get["bn1"]

    def apply(p, x):
        g = red.module.apply(p["reduce"], jnp.mean(x, axis=(1, 2), keepdims=True))
        return jax.nn.sigmoid(exp.module.apply(p["expand"], jax.nn.silu(g))) * x

    def torch_fn():
        import torch
        import torch.nn.functional as F

        conv_r, conv_e = _torch_conv(red), _torch_conv(exp)
        return lambda t: torch.sigmoid(conv_e(F.silu(conv_r(t.mean((2, 3), keepdim=True))))) * t

    shapes = (red.variables["params"]["kernel"].shape, bn.out_shape)
    return LayerCase("SE", f"SE {shapes}", f"{block}/se", bn.out_shape, bn.rows, 1, apply,
                     {"reduce": red.variables, "expand": exp.variables}, torch_fn() if with_torch else None)


def _effnet_functional(calls: list[Call], with_torch: bool) -> list[LayerCase]:
    """EfficientNet-B4: swish after every BatchNorm but each block's last (``bn2``); one
    squeeze-excitation per block; global average pooling."""
    out = [_fn_case("activation", "swish", c, jax.nn.silu, _silu, with_torch) for c in calls
           if isinstance(c.module, nn.BatchNorm) and not (len(_strip(c.path)) > 1 and _strip(c.path)[-1] == "bn2")]
    blocks = dict.fromkeys(_strip(c.path)[0] for c in calls if _strip(c.path)[-1] == "se_reduce")
    out += [_se_case(b, calls, with_torch) for b in blocks]
    last = _last_bn(calls)  # the head's bn1, before the dense layer
    out.append(_fn_case("pooling", "global average", last, _jax_global_avg, _global_avg, with_torch))
    return out


def functional_layers(model: str, calls: list[Call], with_torch: bool) -> list[LayerCase]:
    """The parameter-free layers of ``model`` (and squeeze-excitation), located by the recorded
    module calls; empty for families without a list (I3D)."""
    family = model.removesuffix("_video")
    if family in ("meso4", "meso_inception4"):
        return _meso_functional(calls, with_torch)
    if family == "xception":
        return _xception_functional(calls, with_torch)
    if family == "efficientnet_b4":
        return _effnet_functional(calls, with_torch)
    return []


def layer_cases(model: str, detector: Any, variables: Any, *, with_torch: bool) -> list[LayerCase]:
    """Every layer of ``detector`` once per distinct configuration (``count`` instances), in
    network order; squeeze-excitation convolutions are timed inside their SE unit."""
    calls = record_calls(detector, variables)
    cases = [_module_case(c, with_torch) for c in calls if _strip(c.path)[-1] not in ("se_reduce", "se_expand")]
    cases += functional_layers(model, calls, with_torch)
    grouped: dict[tuple, LayerCase] = {}
    for c in cases:
        key = (c.kind, c.sig, c.rows)
        grouped[key] = dataclasses.replace(grouped[key], count=grouped[key].count + 1) if key in grouped else c
    return sorted(grouped.values(), key=lambda c: KINDS.index(c.kind))


# --------------------------------------------------------------------------- timing

def _fwd_bwd(apply: Callable[[Any, jax.Array], jax.Array], params: Any, x: jax.Array) -> jax.Array:
    """Forward pass and input gradient (cotangent: the output itself), as one attack step does."""
    y, vjp = jax.vjp(lambda z: apply(params, z), x)
    return vjp(y)[0]


def _torch_fwd_bwd(fn: Callable[[Any], Any], x: np.ndarray) -> Callable[[], Any]:
    import torch

    xt = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2) if x.ndim == 4 else x))

    def run():
        xa = xt.clone().requires_grad_(True)
        y = fn(xa)
        return torch.autograd.grad(y, xa, y.detach())[0]

    return run


def _time_xla(case: LayerCase, x: np.ndarray, reps: int) -> tuple[float, float]:
    """``(ms, flops)`` of the case's forward + input gradient on ``x``."""
    xj = jnp.asarray(x)
    f = jax.jit(lambda p, xa: _fwd_bwd(case.apply, p, xa))
    cost = f.lower(case.params, xj).cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    _, _, ts = time_runner(lambda: f(case.params, xj).block_until_ready(), reps)
    return 1e3 * median(ts), float(cost.get("flops", 0.0))


def layer_breakdown(w: Workload, config: BenchConfig, peak: float,
                    variants: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Each distinct layer of the workload's detector, alone, forward + input gradient at the
    main comparison's batch (N rows; N·T for video frame layers), in XLA and PyTorch.

    Args:
      w: the workload (its detector, variables and whether a PyTorch twin exists).
      config: batch size ``n`` and ``repeats``.
      peak: the measured matmul peak (GFLOP/s) that ``% of peak`` refers to.
      variants: column label -> detector with ``w``'s parameters (see the module docstring,
        "Lowering hook"); default ``{"XLA": w.detector}``.

    Returns:
      ``{"labels": [...], "rows": [...], "kinds": [...]}``: per distinct layer (kind, name,
      count, shape, batch, flops, ``xla_ms`` per label, ``torch_ms``) and per layer type
      (:func:`summarise_by_kind`).
    """
    variants = dict(variants or {"XLA": w.detector})
    with_torch = w.torch_model is not None
    per_variant = {label: layer_cases(w.model, d, w.variables, with_torch=with_torch) for label, d in variants.items()}
    first = next(iter(per_variant.values()))
    rng = np.random.default_rng(config.seed)
    reps = max(config.repeats, 1)
    rows = []
    for i, case in enumerate(first):
        batch = config.n * case.rows
        x = rng.normal(size=(batch,) + case.shape).astype(np.float32)
        xla = {}
        for label, cases in per_variant.items():
            xla[label], flops = _time_xla(cases[i], x, reps)
        torch_ms = None
        if case.torch_fn is not None:
            _, _, tt = time_runner(_torch_fwd_bwd(case.torch_fn, x), reps)
            torch_ms = 1e3 * median(tt)
        rows.append(dict(kind=case.kind, name=case.name, count=case.count, shape=list(case.shape), batch=batch,
                         flops=flops, xla_ms=xla, torch_ms=torch_ms, load=load()))
        log.info("  layer %-10s %-40s x%-3d %s ms, torch %s ms", case.kind, case.name[:40], case.count,
                 {k: round(v, 3) for k, v in xla.items()}, None if torch_ms is None else round(torch_ms, 3))
    return {"labels": list(variants), "rows": rows, "kinds": summarise_by_kind(rows, list(variants), peak)}


def summarise_by_kind(rows: list[dict[str, Any]], labels: list[str], peak: float) -> list[dict[str, Any]]:
    """Per layer type: summed time of every instance (ms × count) per XLA label and PyTorch, and
    GFLOP/s and % of ``peak`` from the summed FLOPs; plus an ``all layers`` row."""
    out = []
    for kind in [*KINDS, "all layers"]:
        sel = [r for r in rows if kind == "all layers" or r["kind"] == kind]
        if not sel:
            continue
        flops = sum(r["flops"] * r["count"] for r in sel)
        xla = {lb: sum(r["xla_ms"][lb] * r["count"] for r in sel) for lb in labels}
        has_torch = all(r["torch_ms"] is not None for r in sel)
        torch_ms = sum(r["torch_ms"] * r["count"] for r in sel) if has_torch else None
        row = dict(kind=kind, instances=sum(r["count"] for r in sel), flops=flops, xla_ms=xla, torch_ms=torch_ms,
                   xla_gflops={lb: flops / v / 1e6 if v > 0 else 0.0 for lb, v in xla.items()},
                   torch_gflops=None if torch_ms is None else flops / torch_ms / 1e6)
        row["xla_pct_peak"] = {lb: 100 * g / peak for lb, g in row["xla_gflops"].items()}
        row["torch_pct_peak"] = None if torch_ms is None else 100 * row["torch_gflops"] / peak
        out.append(row)
    return out
