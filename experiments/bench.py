r"""Benchmark: rrjax's ε-grid attacks against torchattacks looping over ε, and against the machine.

Contenders (same detector architecture, same weights, same inputs, same thread count):

1. ``rrjax-grid``: the whole ε grid as one compiled program (``attack(fn, x, y, eps_grid)``);
2. ``rrjax-per-eps``: the same rrjax attack called once per ε from Python;
3. ``torchattacks``: torchattacks 3.5.1 on the PyTorch reference network (weights exported
   with ``rrjax.models.to_torch``), one attack object and call per ε.

Attacks: FGSM, PGD (L∞, random start off, step 2.5·ε/steps) and CW-L2 (torchattacks' fixed-c
CW; rrjax ``cw_l2`` with one binary-search round, the same c, learning rate and steps, no early
abort). CW does not depend on ε: torchattacks runs once and each ε keeps the adversarial
example when its L2 distance is within ε (what ``rrjax.attacks.cw_l2`` does for a grid).

Before any timing, the first (warm-up) run of every contender is checked for equivalence: the
robust accuracy at every ε must agree with torchattacks within one sample.

Usage::

  PYTHONPATH=. python experiments/bench.py                       # full run (~20 min, 2 cores)
  PYTHONPATH=. python experiments/bench.py --quick               # smoke run (seconds)
  PYTHONPATH=. python experiments/bench.py --device [--bf16]     # accelerator table (rrjax only)

Results are printed as Markdown tables (and written with ``--markdown_out`` / ``--json_out``).
See BENCHMARKS.md for the recorded runs.
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
import json
import math
import os
import platform
import resource
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from absl import app, flags

FLAGS = flags.FLAGS


def define_flags() -> None:
    """Defines the flags (absl flags are global: only when run as a script, so that tests can
    import the helpers next to other scripts' flags)."""
    flags.DEFINE_enum("model", "meso4", ["meso4", "xception", "meso4_video"], "Detector to attack.")
    flags.DEFINE_integer("image_size", 128, "Square input side in pixels.")
    flags.DEFINE_integer("num_frames", 4, "Frames per clip (meso4_video).")
    flags.DEFINE_integer("n", 64, "Samples N.")
    flags.DEFINE_integer("eps_count", 16, "ε grid length E of the main comparison.")
    flags.DEFINE_list("attacks", ["fgsm", "pgd", "cw"], "Attacks of the main comparison.")
    flags.DEFINE_integer("pgd_steps", 10, "PGD iterations.")
    flags.DEFINE_integer("cw_steps", 10, "CW Adam iterations.")
    # c = 10, lr = 1e-3: torchattacks' batch-level early stop (summed cost rose at a check
    # step) then does not fire, so both frameworks run every step (lr = 1e-2 stops it after 2).
    flags.DEFINE_float("cw_c", 10.0, "CW constant c.")
    flags.DEFINE_float("cw_lr", 1e-3, "CW Adam learning rate.")
    flags.DEFINE_bool("cw_per_eps", False, "Also time rrjax cw_l2 called once per ε (E identical optimisations).")
    # The benchmark detector has random weights, which make it fragile: RA falls from 1 to 0
    # between ε = 0.5/255 and 2/255, so the grid spans that range (the cost does not depend on ε).
    flags.DEFINE_float("eps_max", 2 / 255, "Largest L∞ ε (grid: E evenly spaced values in (0, eps_max]).")
    flags.DEFINE_float("cw_eps_max", 1.0, "Largest L2 ε of the CW grid.")
    flags.DEFINE_integer("eps_batch_size", None, "rrjax grid points vectorised at once (None: all).")
    flags.DEFINE_bool("unroll", True, "rrjax PGD/CW with unroll=True (and XLA's memory-optimised CPU scheduler).")
    flags.DEFINE_integer("repeats", 3, "Timed repeats after the warm-up run (median reported).")
    flags.DEFINE_list("scale_e", ["1", "4", "16", "64"], "E values of the ε-scaling table.")
    flags.DEFINE_integer("scale_e_n", 16, "N of the ε-scaling table.")
    flags.DEFINE_list("scale_n", ["4", "16", "64"], "N values of the sample-scaling table.")
    flags.DEFINE_integer("scale_n_e", 4, "E of the sample-scaling table.")
    flags.DEFINE_integer("scale_repeats", 1, "Timed repeats per scaling cell (after a warm-up).")
    flags.DEFINE_bool("scale_torch", True, "Also time torchattacks (PGD) in the scaling tables.")
    flags.DEFINE_bool("memory", True, "Measure peak memory per contender in separate processes.")
    flags.DEFINE_bool("breakdown", True, "Time one attack step per framework and Meso4 layer (what limits it).")
    flags.DEFINE_integer("seed", 0, "Seed of weights, inputs and attack keys.")
    flags.DEFINE_bool("quick", False, "Smoke run: tiny sizes, one repeat (overrides the size flags).")
    flags.DEFINE_bool("device", False, "Accelerator variant: rrjax grid vs per-ε on jax.devices()[0].")
    flags.DEFINE_bool("bf16", False, "With --device: also run the detector in bfloat16.")
    flags.DEFINE_string("markdown_out", None, "Write the Markdown report here.")
    flags.DEFINE_string("json_out", None, "Write all measurements as JSON here.")
    flags.DEFINE_string("worker", None, "Internal: 'memory:<attack>:<contender>' runs one contender once.")


CONTENDERS = ("rrjax-grid", "rrjax-per-eps", "torchattacks")
ATTACK_STEPS = {"fgsm": lambda: 1, "pgd": lambda: FLAGS.pgd_steps, "cw": lambda: FLAGS.cw_steps}
PGD_REL_STEP = 2.5  # step = 2.5 ε / steps (Madry et al.; rrjax's default)
# 64 px: at 32 px the random Meso4 is nearly input-independent and no attack moves RA.
QUICK = dict(image_size=64, n=4, eps_count=2, eps_max=0.05, pgd_steps=2, cw_steps=2, repeats=1,
             scale_e=["1", "4"], scale_e_n=2, scale_n=["2", "4"], scale_n_e=2, scale_repeats=0)


# --------------------------------------------------------------------------- pure helpers

def eps_grid(eps_max: float, count: int) -> list[float]:
    """``count`` evenly spaced budgets in ``(0, eps_max]`` (ε = 0 is the clean accuracy)."""
    return [eps_max * (i + 1) / count for i in range(count)]


def ra_match(ra_a: Sequence[float], ra_b: Sequence[float], n: int) -> tuple[bool, int]:
    """Whether two robust-accuracy curves agree within one sample at every ε.

    Returns ``(ok, max_diff)`` with ``max_diff`` the largest disagreement in samples.
    """
    if len(ra_a) != len(ra_b):
        raise ValueError(f"RA curves have different lengths {len(ra_a)} and {len(ra_b)}")
    diff = max((abs(a - b) * n for a, b in zip(ra_a, ra_b)), default=0.0)
    samples = int(round(diff))
    return samples <= 1, samples


def executed_steps(attack: str, contender: str, n: int, e: int, steps: int) -> int:
    """Forward + input-gradient passes (per sample) a contender executes for ``n`` samples and
    ``e`` budgets: FGSM's grid needs one gradient for all ε, CW's optimisation is ε-independent
    (except when called once per ε), everything else runs per ε."""
    if attack == "fgsm":
        return n if contender == "rrjax-grid" else n * e
    if attack == "cw":
        return n * steps * (e if contender == "rrjax-per-eps" else 1)
    return n * e * steps


def median(values: Sequence[float]) -> float:
    v = sorted(values)
    k = len(v) // 2
    return v[k] if len(v) % 2 else 0.5 * (v[k - 1] + v[k])


def md_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    def fmt(v):
        if isinstance(v, float):
            return f"{v:.3g}" if abs(v) < 1000 else f"{v:,.0f}"
        return str(v)

    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


_T0 = time.perf_counter()


def say(msg: str) -> None:
    print(f"[{time.perf_counter() - _T0:6.1f}s] {msg}", flush=True)


def load() -> float:
    return os.getloadavg()[0]


def maxrss_mb() -> float:
    """The process's peak resident memory. /proc's VmHWM belongs to this process's address space
    (reset by exec); getrusage's ru_maxrss is not: a child started by fork+exec inherits the
    parent's high-water mark, so every memory worker reported the parent's 9 GB."""
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 1024.0  # KiB
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_rss_during(fn: Callable[[], Any], interval_s: float = 0.002) -> tuple[float, float]:
    """``(rss before, peak rss while fn runs)`` in MB, sampled from /proc by a thread (XLA and
    PyTorch release the GIL while they compute, so the sampler keeps running)."""
    import threading

    before = rss_mb()
    peak = [before]
    done = threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], rss_mb())
            time.sleep(interval_s)

    t = threading.Thread(target=sample, daemon=True)
    t.start()
    try:
        fn()
    finally:
        done.set()
        t.join()
    return before, max(peak[0], rss_mb())


# --------------------------------------------------------------------------- workload

@dataclasses.dataclass
class Workload:
    """Everything the contenders share: detector, weights, inputs, labels, both frameworks."""

    detector: Any
    variables: Any
    logits_fn: Any  # jax Partial
    torch_model: Any
    x: Any  # np f32[N, *input_shape] in [0, 1]
    y: Any  # np int32[N]
    offset: float
    flops_per_step: float  # one forward + input-gradient pass, one sample


def _shifted_apply(detector, offset, variables, x):
    return detector.apply(variables, x) + offset


def logit_offset(logits) -> float:
    """A power of two that keeps every logit positive (softmax, CE, margin and argmax are
    invariant to a common shift; torchattacks' CW masks classes with ``(1-onehot)*logits``,
    which is only correct for non-negative logits)."""
    import numpy as np

    span = 4.0 * float(np.max(np.abs(logits))) + 16.0
    return float(2.0 ** math.ceil(math.log2(span)))


def build_workload(model: str, image_size: int, num_frames: int, n: int, seed: int) -> Workload:
    import jax
    import jax.numpy as jnp
    import numpy as np
    import torch
    from jax.tree_util import Partial

    from rrjax import models
    from rrjax.models import torch_refs as R

    if model == "meso4":
        config = dict(image_size=image_size, batchnorm="shared")
        frame = R.Meso4Ref(image_size)
    elif model == "meso4_video":
        config = dict(image_size=image_size, batchnorm="shared", num_frames=num_frames, aggregation="mean")
        frame = R.Meso4Ref(image_size)
    else:
        config = dict(image_size=image_size)
        frame = R.XceptionRef()
    detector = models.get_model(model, **config)
    variables = jax.jit(detector.init)(jax.random.key(seed))  # one program, not one per initializer
    frame.load_state_dict(models.to_torch(model, variables, **config), strict=True)
    net = R.PixelInput(frame)
    if model == "meso4_video":
        net = R.MeanProbVideo(net)
    net.eval()
    for p in net.parameters():
        p.requires_grad_(False)  # attacks differentiate the input only (as jax.grad w.r.t. x)

    x = np.random.default_rng(seed).uniform(size=(n,) + tuple(detector.input_shape)).astype(np.float32)
    clean = np.asarray(jax.jit(detector.apply)(variables, x))
    offset = logit_offset(clean)
    logits_fn = Partial(functools.partial(_shifted_apply, detector, offset), variables)
    y = clean.argmax(-1).astype(np.int32)  # labels = clean predictions: clean RA is 100 %

    class Shift(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, t):
            return self.inner(t) + offset

    torch_model = Shift(net).eval()
    with torch.no_grad():
        ref = torch_model(to_torch_layout(x[: min(n, 4)])).numpy()
    np.testing.assert_allclose(ref, clean[: min(n, 4)] + offset, rtol=1e-4, atol=1e-3 * offset)

    x1, y1 = jnp.asarray(x[:1]), jnp.asarray(y[:1])

    def ce_grad(v, xa, ya):  # one PGD/FGSM step's work for one sample: forward + input gradient
        fn = Partial(functools.partial(_shifted_apply, detector, offset), v)
        return jax.grad(lambda z: -jnp.sum(jax.nn.log_softmax(fn(z))[jnp.arange(1), ya]))(xa)

    cost = jax.jit(ce_grad).lower(variables, x1, y1).compile().cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    return Workload(detector, variables, logits_fn, torch_model, x, y, offset, float(cost["flops"]))


def to_torch_layout(x):
    """NHWC (NTHWC) numpy -> NCHW (NTCHW) torch tensor."""
    import torch

    perm = (0, 3, 1, 2) if x.ndim == 4 else (0, 1, 4, 2, 3)
    return torch.from_numpy(x.transpose(perm).copy())


def from_torch_layout(t):
    perm = (0, 2, 3, 1) if t.ndim == 4 else (0, 1, 3, 4, 2)
    return t.detach().numpy().transpose(perm)


# --------------------------------------------------------------------------- contenders

def attack_eps(attack: str, count: int) -> list[float]:
    return eps_grid(FLAGS.cw_eps_max if attack == "cw" else FLAGS.eps_max, count)


def make_runner(contender: str, attack: str, w: Workload, eps: list[float], n: int,
                eps_batch_size: int | None = None) -> Callable[[], Any]:
    """A zero-argument callable that runs one contender on the first ``n`` samples and returns
    its adversarial examples (finished computing); :func:`outputs_numpy` converts them."""
    if contender == "torchattacks":
        return _torch_runner(attack, w, eps, n)
    import jax
    import jax.numpy as jnp
    import numpy as np

    from rrjax import attacks

    x, y = jnp.asarray(w.x[:n]), jnp.asarray(w.y[:n])
    key = jax.random.key(FLAGS.seed)
    if attack == "fgsm":
        fn, kw = attacks.fgsm, {}
    elif attack == "pgd":
        fn = attacks.pgd
        kw = dict(steps=FLAGS.pgd_steps, rel_step_size=PGD_REL_STEP / FLAGS.pgd_steps, random_start=False,
                  unroll=FLAGS.unroll)
    else:
        fn = attacks.cw_l2
        kw = dict(steps=FLAGS.cw_steps, binary_search_steps=1, initial_const=FLAGS.cw_c,
                  learning_rate=FLAGS.cw_lr, abort_early=False, unroll=FLAGS.unroll)
    if contender == "rrjax-grid":
        grid = np.asarray(eps, np.float32)
        if attack == "pgd":
            kw["eps_batch_size"] = eps_batch_size
        return lambda: fn(w.logits_fn, x, y, grid, key=key, **kw).block_until_ready()

    def per_eps():
        outs = [fn(w.logits_fn, x, y, float(e), key=key, **kw) for e in eps]
        return jax.block_until_ready(outs)

    return per_eps


class _Counter:
    """Counts forward calls of the torch model (torchattacks' CW may stop early)."""

    def __init__(self, module):
        self.calls = 0
        module.register_forward_hook(self._hook)

    def _hook(self, *_):
        self.calls += 1


def _torch_runner(attack: str, w: Workload, eps: list[float], n: int) -> Callable[[], Any]:
    import torch
    import torchattacks

    xt, yt = to_torch_layout(w.x[:n]), torch.from_numpy(w.y[:n].astype("int64"))
    steps = FLAGS.pgd_steps
    if attack == "fgsm":
        return lambda: [torchattacks.FGSM(w.torch_model, eps=e)(xt, yt) for e in eps]
    if attack == "pgd":
        return lambda: [
            torchattacks.PGD(w.torch_model, eps=e, alpha=PGD_REL_STEP * e / steps, steps=steps, random_start=False)(xt, yt)
            for e in eps
        ]

    def cw():
        adv = torchattacks.CW(w.torch_model, c=FLAGS.cw_c, kappa=0, steps=FLAGS.cw_steps, lr=FLAGS.cw_lr)(xt, yt)
        flat = (adv - xt).flatten(1)
        found = flat.abs().amax(1) > 0  # torchattacks returns x itself where it found nothing
        dist = flat.norm(dim=1)
        keep = lambda e: (found & (dist <= e)).view(-1, *([1] * (xt.ndim - 1)))  # noqa: E731
        return [torch.where(keep(e), adv, xt) for e in eps]

    return cw


def outputs_numpy(contender: str, out: Any):
    """Adversarial examples as numpy ``[E, N, ...]`` in the rrjax (channel-last) layout."""
    import numpy as np

    if contender == "torchattacks":
        return np.stack([from_torch_layout(t) for t in out])
    if contender == "rrjax-per-eps":
        return np.stack([np.asarray(o) for o in out])
    return np.asarray(out)


def robust_accuracy(w: Workload, x_adv, n: int) -> list[float]:
    """RA per ε of ``x_adv[E, N, ...]`` judged by the rrjax detector (the same judge for all)."""
    import jax
    import numpy as np

    apply = jax.jit(w.detector.apply)
    y = w.y[:n]
    return [float(np.mean(np.asarray(apply(w.variables, xe)).argmax(-1) == y)) for xe in x_adv]


def time_runner(run: Callable[[], Any], repeats: int,
                warmup: Callable[[], Any] | None = None) -> tuple[Any, float, list[float]]:
    """Warms up, then times ``repeats`` runs; returns ``(output, warm-up seconds, run times)``.

    Without ``warmup`` the first full run is the warm-up (compilation for the grid program) and
    its output is returned. A per-ε loop warms up on its first ε alone (``warmup``: the program
    it compiles serves every ε), then at least one full run is timed and its output returned.
    """
    t0 = time.perf_counter()
    out = (warmup or run)()
    first = time.perf_counter() - t0
    times = []
    for _ in range(repeats if warmup is None else max(repeats, 1)):
        t0 = time.perf_counter()
        result = run()
        times.append(time.perf_counter() - t0)
        if warmup is not None:
            out = result
    return out, first, times


def warmup_for(contender: str, attack: str, w: "Workload", eps: list[float], n: int) -> Callable[[], Any] | None:
    """The warm-up of a per-ε loop: the same loop over the first ε only (None for the grid)."""
    if contender == "rrjax-grid":
        return None
    return make_runner(contender, attack, w, eps[:1], n)


# --------------------------------------------------------------------------- sections

def machine_peak() -> dict[str, float]:
    """Measured f32 matmul throughput (GFLOP/s) of both frameworks: the machine's practical peak."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    import torch

    size = 1024 if FLAGS.quick else 2048
    a = np.random.default_rng(0).normal(size=(size, size)).astype(np.float32)
    aj = jnp.asarray(a)
    mm = jax.jit(lambda m: m @ m)
    at = torch.from_numpy(a)
    out = {}
    for name, f in (("jax", lambda: mm(aj).block_until_ready()), ("torch", lambda: at @ at)):
        _, _, times = time_runner(f, 5)
        out[name] = 2 * size**3 / min(times) / 1e9
    out["peak"] = max(out["jax"], out["torch"])
    return out


def main_comparison(w: Workload, report: dict) -> list[dict]:
    rows = []
    n, count = FLAGS.n, FLAGS.eps_count
    for attack in FLAGS.attacks:
        eps = attack_eps(attack, count)
        results = {}
        counter = _Counter(w.torch_model) if attack == "cw" else None
        for contender in CONTENDERS:
            if attack == "cw" and contender == "rrjax-per-eps" and not FLAGS.cw_per_eps:
                continue
            load0 = load()
            if counter:
                counter.calls = 0
            run = make_runner(contender, attack, w, eps, n, FLAGS.eps_batch_size)
            out, first, times = time_runner(run, FLAGS.repeats, warmup_for(contender, attack, w, eps, n))
            res = dict(attack=attack, contender=contender, first_s=first, times_s=times,
                       median_s=median(times) if times else first, load=(load0 + load()) / 2,
                       ra=robust_accuracy(w, outputs_numpy(contender, out), n))
            if counter:  # the warm-up runs the same attack once (one ε), as does every timed run
                res["torch_forward_calls_per_run"] = counter.calls / (1 + len(times))
            results[contender] = res
            say(f"  {attack:5s} {contender:14s} warm-up {first:8.2f}s  median {res['median_s']:8.2f}s  "
                  f"load {res['load']:.1f}")
        ref = results["torchattacks"]
        for contender, res in results.items():
            res["equivalent"], res["max_ra_diff_samples"] = ra_match(res["ra"], ref["ra"], n)
        if attack == "cw":
            _cw_equivalence_note(w, results, eps, n)
        rows.extend(results.values())
    report["main"] = rows
    return rows


def _cw_equivalence_note(w: Workload, results: dict, eps: list[float], n: int) -> None:
    """torchattacks' CW stops the whole batch when the summed cost rises at a check step; when it
    did, rrjax with the same number of steps (no abort) is the equivalent computation."""
    calls = results["torchattacks"].get("torch_forward_calls_per_run", FLAGS.cw_steps)
    ran = int(round(calls))
    results["torchattacks"]["cw_steps_run"] = ran
    if ran < FLAGS.cw_steps and ran > 0:
        saved = FLAGS.cw_steps
        FLAGS.cw_steps = ran
        try:
            out = make_runner("rrjax-grid", "cw", w, eps, n)()
        finally:
            FLAGS.cw_steps = saved
        ra = robust_accuracy(w, outputs_numpy("rrjax-grid", out), n)
        ok, diff = ra_match(ra, results["torchattacks"]["ra"], n)
        results["rrjax-grid"]["equivalent_at_torch_steps"] = ok
        results["rrjax-grid"]["max_ra_diff_at_torch_steps"] = diff


def scaling(w: Workload, report: dict) -> None:
    e_rows, n_rows = [], []
    for attack in ("fgsm", "pgd"):
        for count in map(int, FLAGS.scale_e):
            eps = attack_eps(attack, count)
            contenders = ["rrjax-grid"] + (["torchattacks"] if FLAGS.scale_torch and attack == "pgd" else [])
            for contender in contenders:
                run = make_runner(contender, attack, w, eps, FLAGS.scale_e_n, FLAGS.eps_batch_size)
                warm = warmup_for(contender, attack, w, eps, FLAGS.scale_e_n)
                _, first, times = time_runner(run, FLAGS.scale_repeats, warm)
                e_rows.append(dict(attack=attack, contender=contender, E=count, N=FLAGS.scale_e_n,
                                   median_s=median(times) if times else first, load=load()))
                say(f"  scale-E {attack} {contender} E={count}: {e_rows[-1]['median_s']:.2f}s")
    for count_n in map(int, FLAGS.scale_n):
        eps = attack_eps("pgd", FLAGS.scale_n_e)
        for contender in ["rrjax-grid"] + (["torchattacks"] if FLAGS.scale_torch else []):
            run = make_runner(contender, "pgd", w, eps, count_n, FLAGS.eps_batch_size)
            _, first, times = time_runner(run, FLAGS.scale_repeats, warmup_for(contender, "pgd", w, eps, count_n))
            n_rows.append(dict(attack="pgd", contender=contender, E=FLAGS.scale_n_e, N=count_n,
                               median_s=median(times) if times else first, load=load()))
            say(f"  scale-N pgd {contender} N={count_n}: {n_rows[-1]['median_s']:.2f}s")
    report["scale_e"], report["scale_n"] = e_rows, n_rows


def _meso4_window_pool(variables, x, offset):
    """rrjax's Meso4 (shared BatchNorm, eval mode) with XLA's reduce-window max pooling (what
    ``rrjax.models`` used before ``max_pool_2d``; its gradient is a select-and-scatter).

    The same function as ``meso4`` (checked below); the breakdown shows what the pooling's
    gradient costs.
    """
    import flax.linen as nn
    import jax
    import jax.numpy as jnp
    from jax import lax

    p, st = variables["params"], variables["batch_stats"]

    def bn(h, name):
        scale = p[name]["scale"] * lax.rsqrt(st[name]["var"] + 1e-5)
        return h * scale + (p[name]["bias"] - st[name]["mean"] * scale)

    def pool(h, k):
        return nn.max_pool(h, (k, k), strides=(k, k))

    h = (x - 0.5) / 0.5
    for i, (norm, k) in enumerate((("bn1", 2), ("bn1", 2), ("bn2", 2), ("bn2", 4))):
        w = p[f"conv{i + 1}"]["kernel"]
        pad = (w.shape[0] - 1) // 2
        h = lax.conv_general_dilated(h, w, (1, 1), [(pad, pad)] * 2, dimension_numbers=("NHWC", "HWIO", "NHWC"))
        h = pool(bn(jax.nn.relu(h), norm), k)
    h = jnp.transpose(h, (0, 3, 1, 2)).reshape(h.shape[0], -1)
    head = p["head"]
    h = jax.nn.leaky_relu(h @ head["fc1"]["kernel"] + head["fc1"]["bias"], 0.1)
    return h @ head["fc2"]["kernel"] + head["fc2"]["bias"] + offset


def breakdown(w: Workload, report: dict) -> None:
    """One attack step (forward + input gradient of the CE loss) per framework, at the batch a
    per-ε loop runs (N) and the one the grid program runs (E·N), plus Meso4's convolutions alone."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    import torch
    from jax import lax
    from jax.tree_util import Partial

    rows = []
    # The grid program's batch is E·N (or eps_batch_size·N); capped at 512, past which the
    # per-sample cost no longer changes, to keep this section short.
    n, big = FLAGS.n, FLAGS.n * (FLAGS.eps_batch_size or FLAGS.eps_count)
    big = min(big, max(n, 512))
    reps = max(min(FLAGS.repeats, 2), 1)

    def jax_step(fn):
        return jax.jit(lambda f, xa, ya: jax.grad(
            lambda z: -jnp.sum(jnp.take_along_axis(jax.nn.log_softmax(f(z)), ya[:, None], axis=1)))(xa))

    fns = {"rrjax": w.logits_fn}
    if FLAGS.model == "meso4":
        twin = Partial(_meso4_window_pool, w.variables, offset=w.offset)
        np.testing.assert_allclose(np.asarray(twin(w.x[:4])), np.asarray(w.logits_fn(w.x[:4])), rtol=1e-4, atol=1e-4)
        fns["rrjax with reduce-window max pooling (before)"] = twin
    for batch in sorted({n, big}):
        idx = np.arange(batch) % len(w.x)
        xb, yb = jnp.asarray(w.x[idx]), jnp.asarray(w.y[idx])
        for name, fn in fns.items():
            step = jax_step(fn)
            _, _, ts = time_runner(lambda: step(fn, xb, yb).block_until_ready(), reps)
            rows.append(dict(what=f"step: {name}", batch=batch, ms_per_sample=1e3 * median(ts) / batch, load=load()))
        xt, yt = to_torch_layout(w.x[idx]), torch.from_numpy(w.y[idx].astype("int64"))

        def torch_step():
            xa = xt.clone().requires_grad_(True)
            loss = torch.nn.functional.cross_entropy(w.torch_model(xa), yt, reduction="sum")
            return torch.autograd.grad(loss, xa)[0]

        _, _, ts = time_runner(torch_step, reps)
        rows.append(dict(what="step: torch", batch=batch, ms_per_sample=1e3 * median(ts) / batch, load=load()))
        say(f"  breakdown batch {batch}: " + ", ".join(f"{r['what']} {r['ms_per_sample']:.2f}" for r in rows if r["batch"] == batch))
    rows += _loop_vs_unrolled(w, n)
    if FLAGS.model == "meso4":
        rows += _conv_layers(w, n)
    report["breakdown"] = rows


def _loop_vs_unrolled(w: Workload, n: int) -> list[dict]:
    """rrjax PGD (one ε, N samples) with its step loop compiled as a while loop vs unrolled."""
    import jax
    import jax.numpy as jnp

    from rrjax import attacks

    x, y = jnp.asarray(w.x[:n]), jnp.asarray(w.y[:n])
    steps = FLAGS.pgd_steps
    rows = []
    for unroll in (False, True):
        run = lambda: attacks.pgd(w.logits_fn, x, y, FLAGS.eps_max, key=jax.random.key(0), steps=steps,  # noqa: E731
                                  rel_step_size=PGD_REL_STEP / steps, random_start=False,
                                  unroll=unroll).block_until_ready()
        _, _, ts = time_runner(run, 1)
        rows.append(dict(what=f"step: rrjax PGD-{steps}, {'unrolled' if unroll else 'while loop'}", batch=n,
                         ms_per_sample=1e3 * median(ts) / (n * steps), load=load()))
    say(f"  breakdown PGD loop vs unrolled: {rows[0]['ms_per_sample']:.2f} vs {rows[1]['ms_per_sample']:.2f} ms/sample-step")
    return rows


def _conv_layers(w: Workload, n: int) -> list[dict]:
    """Each Meso4 convolution alone, forward and input gradient, XLA vs PyTorch."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    import torch
    from jax import lax

    rows, s = [], FLAGS.image_size
    rng = np.random.default_rng(0)
    reps = max(FLAGS.repeats, 1)
    for i, side in enumerate((s, s // 2, s // 4, s // 8)):
        kernel = np.asarray(w.variables["params"][f"conv{i + 1}"]["kernel"])
        k, cin = kernel.shape[0], kernel.shape[2]
        pad = (k - 1) // 2
        x = rng.uniform(size=(n, side, side, cin)).astype(np.float32)
        conv = lambda a, b: lax.conv_general_dilated(a, b, (1, 1), [(pad, pad)] * 2,  # noqa: E731
                                                     dimension_numbers=("NHWC", "HWIO", "NHWC"))
        both = jax.jit(lambda a, b: jax.vjp(lambda z: conv(z, b), a)[1](conv(a, b))[0])
        xj, kj = jnp.asarray(x), jnp.asarray(kernel)
        _, _, ts = time_runner(lambda: both(xj, kj).block_until_ready(), reps)
        xt = torch.from_numpy(x.transpose(0, 3, 1, 2).copy())
        kt = torch.from_numpy(kernel.transpose(3, 2, 0, 1).copy())

        def tboth():
            out = torch.nn.functional.conv2d(xt, kt, padding=pad)
            return torch.nn.grad.conv2d_input(xt.shape, kt, out, padding=pad)

        _, _, tt = time_runner(tboth, reps)
        flops = 2 * 2 * n * side * side * cin * kernel.shape[3] * k * k
        rows.append(dict(what=f"conv{i + 1} {cin}->{kernel.shape[3]} {k}x{k} at {side}px, fwd + input grad",
                         batch=n, xla_ms=1e3 * median(ts), torch_ms=1e3 * median(tt),
                         xla_gflops=flops / median(ts) / 1e9, torch_gflops=flops / median(tt) / 1e9, load=load()))
    return rows


def memory(report: dict) -> None:
    """Peak resident memory of a warm run per contender, each in a fresh process (PGD with one
    step: the loop carries the same arrays whatever the step count, so the peak is PGD-10's)."""
    rows = []
    if FLAGS.quick:  # the smoke run checks the mechanism once per framework
        configs = [("pgd", "rrjax-grid", None)]
    else:
        configs = [(a, c, FLAGS.eps_batch_size) for a in ("fgsm", "pgd") for c in CONTENDERS]
        configs.append(("pgd", "rrjax-grid", 4 if FLAGS.eps_count > 4 else 1))
    for attack, contender, ebs in configs:
        argv = [sys.executable, os.path.abspath(__file__), f"--worker=memory:{attack}:{contender}",
                f"--model={FLAGS.model}", f"--image_size={FLAGS.image_size}", f"--num_frames={FLAGS.num_frames}",
                f"--n={FLAGS.n}", f"--eps_count={FLAGS.eps_count}", "--pgd_steps=1", f"--seed={FLAGS.seed}",
                f"--eps_max={FLAGS.eps_max}"] + ([f"--eps_batch_size={ebs}"] if ebs else [])
        proc = subprocess.run(argv, capture_output=True, text=True, check=False,
                              env={**os.environ, "PYTHONPATH": _repo_root()})
        line = [ln for ln in proc.stdout.splitlines() if ln.startswith("MEMORY ")]
        if proc.returncode != 0 or not line:
            raise RuntimeError(f"memory worker {attack}/{contender} failed:\n{proc.stderr[-3000:]}")
        res = json.loads(line[-1][len("MEMORY "):])
        res.update(attack=attack, contender=contender, eps_batch_size=ebs)
        rows.append(res)
        say(f"  memory {attack} {contender} ebs={ebs}: +{res['delta_mb']:.0f} MB")
    report["memory"] = rows


def _repo_root() -> str:
    return os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def memory_worker(spec: str) -> None:
    _, attack, contender = spec.split(":")
    w = build_workload(FLAGS.model, FLAGS.image_size, FLAGS.num_frames, FLAGS.n, FLAGS.seed)
    run = make_runner(contender, attack, w, attack_eps(attack, FLAGS.eps_count), FLAGS.n, FLAGS.eps_batch_size)
    run()  # compilation and first-touch allocations happen here, outside the measured run
    before, peak = peak_rss_during(run)
    print("MEMORY " + json.dumps(dict(before_mb=before, peak_mb=peak, delta_mb=peak - before,
                                      maxrss_mb=maxrss_mb())), flush=True)


def device_table(report: dict) -> str:
    """rrjax grid vs per-ε on the default JAX device, float32 and optionally bfloat16."""
    import jax
    import jax.numpy as jnp
    from jax.tree_util import Partial

    w = build_workload(FLAGS.model, FLAGS.image_size, FLAGS.num_frames, FLAGS.n, FLAGS.seed)
    dev = jax.devices()[0]
    dtypes = ["float32"] + (["bfloat16"] if FLAGS.bf16 else [])
    rows, out = [], []
    for dtype in dtypes:
        wd = w
        if dtype == "bfloat16":
            v16 = jax.tree_util.tree_map(lambda a: a.astype(jnp.bfloat16), w.variables)
            wd = dataclasses.replace(w, logits_fn=Partial(functools.partial(_bf16_apply, w.detector, w.offset), v16))
        for attack in ("fgsm", "pgd"):
            eps = attack_eps(attack, FLAGS.eps_count)
            times = {}
            for contender in ("rrjax-grid", "rrjax-per-eps"):
                run = make_runner(contender, attack, wd, eps, FLAGS.n, FLAGS.eps_batch_size)
                _, first, ts = time_runner(run, FLAGS.repeats, warmup_for(contender, attack, wd, eps, FLAGS.n))
                times[contender] = median(ts) if ts else first
            work = executed_steps(attack, "rrjax-grid", FLAGS.n, len(eps), ATTACK_STEPS[attack]()) * w.flops_per_step
            rows.append(dict(attack=attack, dtype=dtype, **{k + "_s": v for k, v in times.items()}))
            out.append([attack, dtype, times["rrjax-grid"], times["rrjax-per-eps"],
                        FLAGS.n * len(eps) / times["rrjax-grid"], work / times["rrjax-grid"] / 1e9])
    report["device"] = dict(device=str(dev), platform=dev.platform, rows=rows)
    title = f"### Device table: {dev.device_kind} ({dev.platform}), {FLAGS.model} {FLAGS.image_size}px, N={FLAGS.n}, E={FLAGS.eps_count}\n\n"
    return title + md_table(["attack", "dtype", "grid s", "per-ε s", "samples·ε/s (grid)", "GFLOP/s (grid)"], out)


def _bf16_apply(detector, offset, variables, x):
    import jax.numpy as jnp

    return detector.module.apply(variables, x.astype(jnp.bfloat16), train=False).astype(jnp.float32) + offset


# --------------------------------------------------------------------------- report

def render(report: dict) -> str:
    env, peak, w_flops = report["env"], report["peak"], report["flops_per_step"]
    n, count = FLAGS.n, FLAGS.eps_count
    parts = [f"### Run {env['date']} — {env['command']}",
             f"Machine: {env['machine']}; load average at start {env['load_start']:.2f}, end {env.get('load_end', 0):.2f}. "
             f"Versions: {env['versions']}. XLA_FLAGS={env['xla_flags'] or '(none)'}; rrjax PGD/CW unroll={FLAGS.unroll}.",
             f"Workload: {FLAGS.model} {FLAGS.image_size}px (PyTorch twin via rrjax.models.to_torch), N={n}, "
             f"E={count}, L∞ ε in (0, {FLAGS.eps_max:.4g}], PGD-{FLAGS.pgd_steps} (step 2.5ε/{FLAGS.pgd_steps}, no random "
             f"start), CW-L2 c={FLAGS.cw_c} lr={FLAGS.cw_lr} steps={FLAGS.cw_steps}, L2 ε in (0, {FLAGS.cw_eps_max:g}]; "
             f"labels = clean predictions; logits shifted by +{report['offset']:g} in both frameworks.",
             f"Measured matmul peak (f32, 2 cores): JAX {peak['jax']:.1f} GFLOP/s, PyTorch {peak['torch']:.1f} GFLOP/s. "
             f"XLA cost analysis: one attack step (forward + input gradient) = {w_flops / 1e6:.1f} MFLOP per sample."]
    main = report.get("main", [])
    if main:
        rows = []
        by = {(r["attack"], r["contender"]): r for r in main}
        for r in main:
            steps = ATTACK_STEPS[r["attack"]]()
            if r["attack"] == "cw" and r["contender"] == "torchattacks":
                steps = r.get("cw_steps_run", steps)
            t = r["median_s"]
            done = executed_steps(r["attack"], r["contender"], n, count, steps)
            torch_t = by[(r["attack"], "torchattacks")]["median_s"]
            eq = "ref" if r["contender"] == "torchattacks" else ("PASS" if r["equivalent"] else f"FAIL ({r['max_ra_diff_samples']})")
            rows.append([r["attack"], r["contender"], t, n * count / t, done / t, torch_t / t,
                         done * w_flops / t / 1e9, 100 * done * w_flops / t / 1e9 / peak["peak"], f"{r['load']:.1f}", eq])
        parts.append(md_table(["attack", "contender", "median s", "samples·ε/s", "attack-steps/s (executed)",
                               "speed-up vs torch", "GFLOP/s", "% of peak", "load", "RA equivalent"], rows))
        ra_rows = [[r["attack"], r["contender"], " ".join(f"{v:.2f}" for v in r["ra"])] for r in main]
        parts.append("Robust accuracy per ε (equivalence check):\n\n" + md_table(["attack", "contender", "RA(ε₁…ε_E)"], ra_rows))
        notes = []
        cw_t = by.get(("cw", "torchattacks"))
        if cw_t is not None:
            notes.append(f"torchattacks CW ran {cw_t.get('cw_steps_run')} of {FLAGS.cw_steps} steps (its batch-level early stop).")
            g = by[("cw", "rrjax-grid")]
            if "equivalent_at_torch_steps" in g:
                notes.append(f"rrjax CW with the same {cw_t.get('cw_steps_run')} steps: RA equivalent "
                             f"{'PASS' if g['equivalent_at_torch_steps'] else 'FAIL'} (max diff {g['max_ra_diff_at_torch_steps']} samples).")
        if notes:
            parts.append(" ".join(notes))
    e_rows = report.get("scale_e", [])
    if e_rows:
        rows = []
        for r in e_rows:
            prev = [q for q in e_rows if q["attack"] == r["attack"] and q["contender"] == r["contender"] and q["E"] * 4 == r["E"]]
            ratio = r["median_s"] / prev[0]["median_s"] if prev else float("nan")
            rows.append([r["attack"], r["contender"], r["E"], r["N"], r["median_s"], r["N"] * r["E"] / r["median_s"],
                         "" if math.isnan(ratio) else f"{ratio:.2f}", f"{r['load']:.1f}"])
        parts.append("Scaling in E:\n\n" + md_table(["attack", "contender", "E", "N", "median s", "samples·ε/s",
                                                    "t(E)/t(E/4)", "load"], rows))
    n_rows = report.get("scale_n", [])
    if n_rows:
        rows = [[r["attack"], r["contender"], r["E"], r["N"], r["median_s"], r["N"] * r["E"] / r["median_s"], f"{r['load']:.1f}"]
                for r in n_rows]
        parts.append("Scaling in N:\n\n" + md_table(["attack", "contender", "E", "N", "median s", "samples·ε/s", "load"], rows))
    bd = report.get("breakdown", [])
    if bd:
        steps = [r for r in bd if r["what"].startswith("step")]
        rows = [[r["what"][len("step: "):], r["batch"], r["ms_per_sample"], w_flops / r["ms_per_sample"] / 1e6,
                 f"{r['load']:.1f}"] for r in steps]
        parts.append("One attack step (CE forward + input gradient), per sample:\n\n"
                     + md_table(["implementation", "batch", "ms/sample", "GFLOP/s", "load"], rows))
        convs = [r for r in bd if not r["what"].startswith("step")]
        if convs:
            rows = [[r["what"], r["batch"], r["xla_ms"], r["torch_ms"], r["xla_gflops"], r["torch_gflops"], f"{r['load']:.1f}"]
                    for r in convs]
            parts.append("Meso4's convolutions alone (XLA vs PyTorch, same shapes):\n\n"
                         + md_table(["layer", "batch", "XLA ms", "PyTorch ms", "XLA GFLOP/s", "PyTorch GFLOP/s", "load"], rows))
    mem = report.get("memory", [])
    if mem:
        rows = [[r["attack"], r["contender"], r["eps_batch_size"] or "all", r["before_mb"], r["peak_mb"], r["delta_mb"],
                 r["maxrss_mb"]] for r in mem]
        parts.append(f"Peak memory (N={n}, E={count}; each contender in a fresh process; resident memory before and "
                     "at the peak of a warm run, sampled every 2 ms; max RSS of the process including compilation):\n\n"
                     + md_table(["attack", "contender", "eps_batch_size", "RSS before MB", "peak MB", "run adds MB",
                                 "process max RSS MB"], rows))
    targets = report.get("targets", [])
    if targets:
        parts.append("Targets:\n\n" + md_table(["target", "measured", "result"], targets))
    return "\n\n".join(parts) + "\n"


def check_targets(report: dict) -> list[list[str]]:
    out = []
    by = {(r["attack"], r["contender"]): r for r in report.get("main", [])}
    if ("fgsm", "rrjax-grid") in by:
        s = by[("fgsm", "torchattacks")]["median_s"] / by[("fgsm", "rrjax-grid")]["median_s"]
        out.append([f"FGSM over {FLAGS.eps_count} ε ≥ 8× faster than torchattacks", f"{s:.1f}×", "PASS" if s >= 8 else "FAIL"])
    if ("pgd", "rrjax-grid") in by:
        s = by[("pgd", "torchattacks")]["median_s"] / by[("pgd", "rrjax-grid")]["median_s"]
        out.append([f"PGD-{FLAGS.pgd_steps} over {FLAGS.eps_count} ε, {FLAGS.model}, N={FLAGS.n}: faster than torchattacks",
                    f"{s:.2f}×", "PASS" if s > 1 else "FAIL"])
    e = {r["E"]: r["median_s"] for r in report.get("scale_e", []) if r["attack"] == "pgd" and r["contender"] == "rrjax-grid"}
    hi = max(e, default=None)
    if hi is not None and hi // 4 in e:
        ratio = e[hi] / e[hi // 4]
        out.append([f"rrjax PGD time(E={hi}) / time(E={hi // 4}) ≤ 4.4", f"{ratio:.2f}", "PASS" if ratio <= 4.4 else "FAIL"])
    return out


def environment() -> dict:
    import flax
    import jax
    import torch
    import torchattacks

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return dict(
        date=datetime.datetime.now().strftime("%Y-%m-%d %H:%M"),
        command="PYTHONPATH=. python " + " ".join(["experiments/bench.py"] + sys.argv[1:]),
        machine=f"{cpu}, {os.cpu_count()} cores, {platform.system()} {platform.release()}",
        versions=f"python {platform.python_version()}, jax {jax.__version__}, flax {flax.__version__}, "
                 f"torch {torch.__version__} ({torch.get_num_threads()} threads), torchattacks {torchattacks.__version__}",
        load_start=load(),
        xla_flags=os.environ.get("XLA_FLAGS", ""),
    )


def apply_quick() -> None:
    """Smoke-run sizes, except for flags given explicitly on the command line."""
    for k, v in QUICK.items():
        if not FLAGS[k].present:
            setattr(FLAGS, k, v)


def main(argv: Sequence[str]) -> None:
    del argv
    import torch

    torch.set_num_threads(os.cpu_count() or 1)  # XLA's CPU client uses every core as well
    if FLAGS.quick:
        apply_quick()
    xla_flags = os.environ.get("XLA_FLAGS", "").split()
    if FLAGS.unroll and not any("concurrency_optimized_scheduler" in f for f in xla_flags):
        # Unrolled attack loops keep every step's activations alive under XLA:CPU's default
        # scheduler; the memory-optimised one frees them (rrjax.attacks._common).
        xla_flags.append("--xla_cpu_enable_concurrency_optimized_scheduler=false")
    if FLAGS.quick and not any("optimization_level" in f for f in xla_flags):
        # A smoke run executes each program once or twice: LLVM's optimisations cost more
        # compile time than they save.
        xla_flags.append("--xla_backend_optimization_level=0")
    os.environ["XLA_FLAGS"] = " ".join(xla_flags)  # read when jax starts its backend, below
    if FLAGS.worker:
        memory_worker(FLAGS.worker)
        return
    report: dict[str, Any] = {"env": environment()}
    if FLAGS.device:
        text = device_table(report)
        text = f"{report['env']['command']}\n\n{text}\n"
    else:
        say("machine peak ...")
        report["peak"] = machine_peak()
        w = build_workload(FLAGS.model, FLAGS.image_size, FLAGS.num_frames, FLAGS.n, FLAGS.seed)
        report["flops_per_step"], report["offset"] = w.flops_per_step, w.offset
        say("main comparison ...")
        main_comparison(w, report)
        if FLAGS.scale_e or FLAGS.scale_n:
            say("scaling ...")
            scaling(w, report)
        if FLAGS.breakdown:
            say("breakdown ...")
            breakdown(w, report)
        if FLAGS.memory:
            say("memory ...")
            memory(report)
        report["targets"] = check_targets(report)
        report["env"]["load_end"] = load()
        text = render(report)
    print(text)
    if FLAGS.markdown_out:
        with open(FLAGS.markdown_out, "w") as f:
            f.write(text)
    if FLAGS.json_out:
        with open(FLAGS.json_out, "w") as f:
            json.dump(report, f, indent=1, default=str)


if __name__ == "__main__":
    define_flags()
    app.run(main)
