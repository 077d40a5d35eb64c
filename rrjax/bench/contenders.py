"""The contenders: rrjax's ε grid as one program, rrjax called once per ε, and torchattacks
looping over ε; each as a zero-argument runner that returns its adversarial examples.

rrjax runs through its attack registry: :meth:`AttackDef.resolve` validates the configuration
once and :meth:`AttackDef.run` is the unvalidated fast path the sweep uses.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from rrjax import attacks
from rrjax.bench.config import PGD_REL_STEP, BenchConfig, eps_grid
from rrjax.bench.workload import Workload, from_torch_layout, to_torch_layout

__all__ = [
    "REGISTRY_NAMES", "rrjax_hparams", "attack_eps", "executed_steps", "executed_work", "make_runner", "warmup_for",
    "outputs_numpy", "robust_accuracy", "ra_match", "TorchCallCounter", "auto_eps_max",
]

# The benchmark's attack labels -> rrjax registry entries (CW: minimal-norm CW-L2).
REGISTRY_NAMES = {"fgsm": "fgsm", "pgd": "pgd", "cw": "cw_l2"}
# auto_eps_max searches this grid: the smallest ε where rrjax FGSM leaves at most half the samples.
AUTO_EPS_SEARCH = tuple(float(e) for e in np.geomspace(1e-4, 0.3, 12))
AUTO_EPS_RA = 0.5


def rrjax_hparams(attack: str, config: BenchConfig, *, eps_batch_size: int | None = None) -> dict[str, Any]:
    """The rrjax configuration matching torchattacks' (validated and completed by the registry)."""
    if attack == "fgsm":
        hp: dict[str, Any] = {}
    elif attack == "pgd":
        hp = dict(steps=config.pgd_steps, rel_step_size=PGD_REL_STEP / config.pgd_steps, random_start=False,
                  unroll=config.unroll, eps_batch_size=eps_batch_size)
    else:
        hp = dict(steps=config.cw_steps, binary_search_steps=1, initial_const=config.cw_c,
                  learning_rate=config.cw_lr, abort_early=False, unroll=config.unroll)
    return attacks.get_def(REGISTRY_NAMES[attack]).resolve(**hp)


def attack_eps(attack: str, count: int, config: BenchConfig, eps_max: float) -> list[float]:
    """The ε grid of ``attack``: L∞ up to ``eps_max``, CW's L2 up to ``config.cw_eps_max``."""
    return eps_grid(config.cw_eps_max if attack == "cw" else eps_max, count)


def executed_steps(attack: str, contender: str, n: int, e: int, steps: int) -> int:
    """Forward + input-gradient passes a contender executes for ``n`` samples and ``e`` budgets:
    FGSM's grid needs one gradient for all ε, CW's optimisation is ε-independent (except when
    called once per ε), everything else runs per ε."""
    if attack == "fgsm":
        return n if contender == "rrjax-grid" else n * e
    if attack == "cw":
        return n * steps * (e if contender == "rrjax-per-eps" else 1)
    return n * e * steps


def executed_work(row: dict[str, Any], config: BenchConfig, flops_per_step: float) -> tuple[int, float]:
    """``(passes, GFLOP/s)`` of a main-comparison row: the forward + input-gradient passes its
    contender executed (torchattacks' CW: the steps it ran) and their throughput."""
    steps = config.steps(row["attack"])
    if row["attack"] == "cw" and row["contender"] == "torchattacks":
        steps = row.get("cw_steps_run", steps)
    done = executed_steps(row["attack"], row["contender"], config.n, config.eps_count, steps)
    return done, done * flops_per_step / row["median_s"] / 1e9


def make_runner(contender: str, attack: str, w: Workload, eps: Sequence[float], n: int, config: BenchConfig,
                eps_batch_size: int | None = None) -> Callable[[], Any]:
    """A zero-argument callable that runs one contender on the first ``n`` samples and returns
    its adversarial examples (finished computing); :func:`outputs_numpy` converts them."""
    if contender == "torchattacks":
        return _torch_runner(attack, w, eps, n, config)
    definition = attacks.get_def(REGISTRY_NAMES[attack])
    grid_ebs = eps_batch_size if contender == "rrjax-grid" and attack == "pgd" else None
    hp = rrjax_hparams(attack, config, eps_batch_size=grid_ebs)
    x, y = jnp.asarray(w.x[:n]), jnp.asarray(w.y[:n])
    keys = attacks.sample_keys(jax.random.key(config.seed), n)
    grid = np.asarray(eps, np.float32)
    if contender == "rrjax-grid":
        return lambda: definition.run(w.logits_fn, x, y, grid, keys, **hp).block_until_ready()
    if contender != "rrjax-per-eps":
        raise ValueError(f"contender={contender!r}; expected one of rrjax-grid, rrjax-per-eps, torchattacks")

    def per_eps():
        return jax.block_until_ready([definition.run(w.logits_fn, x, y, grid[i:i + 1], keys, **hp)[0]
                                      for i in range(len(grid))])

    return per_eps


def warmup_for(contender: str, attack: str, w: Workload, eps: Sequence[float], n: int,
               config: BenchConfig) -> Callable[[], Any] | None:
    """The warm-up of a per-ε loop: the same loop over the first ε only (None for the grid)."""
    if contender == "rrjax-grid":
        return None
    return make_runner(contender, attack, w, eps[:1], n, config)


def _torch_runner(attack: str, w: Workload, eps: Sequence[float], n: int, config: BenchConfig) -> Callable[[], Any]:
    import torch
    import torchattacks

    if w.torch_model is None:
        raise ValueError(f"{w.model} has no PyTorch twin; torchattacks cannot run on it")
    xt, yt = to_torch_layout(w.x[:n]), torch.from_numpy(w.y[:n].astype("int64"))
    steps = config.pgd_steps
    if attack == "fgsm":
        return lambda: [torchattacks.FGSM(w.torch_model, eps=e)(xt, yt) for e in eps]
    if attack == "pgd":
        return lambda: [
            torchattacks.PGD(w.torch_model, eps=e, alpha=PGD_REL_STEP * e / steps, steps=steps, random_start=False)(xt, yt)
            for e in eps
        ]

    def cw():
        adv = torchattacks.CW(w.torch_model, c=config.cw_c, kappa=0, steps=config.cw_steps, lr=config.cw_lr)(xt, yt)
        flat = (adv - xt).flatten(1)
        found = flat.abs().amax(1) > 0  # torchattacks returns x itself where it found nothing
        dist = flat.norm(dim=1)
        keep = lambda e: (found & (dist <= e)).view(-1, *([1] * (xt.ndim - 1)))  # noqa: E731
        return [torch.where(keep(e), adv, xt) for e in eps]

    return cw


def outputs_numpy(contender: str, out: Any) -> np.ndarray:
    """Adversarial examples as numpy ``[E, N, ...]`` in the rrjax (channel-last) layout."""
    if contender == "torchattacks":
        return np.stack([from_torch_layout(t) for t in out])
    if contender == "rrjax-per-eps":
        return np.stack([np.asarray(o) for o in out])
    return np.asarray(out)


def robust_accuracy(w: Workload, x_adv: np.ndarray, n: int) -> list[float]:
    """RA per ε of ``x_adv[E, N, ...]`` judged by the rrjax detector (the same judge for all)."""
    y = w.y[:n]
    return [float(np.mean(np.asarray(w.judge(w.variables, xe)).argmax(-1) == y)) for xe in x_adv]


def ra_match(ra_a: Sequence[float], ra_b: Sequence[float], n: int) -> tuple[bool, int]:
    """Whether two robust-accuracy curves agree within one sample at every ε.

    Returns ``(ok, max_diff)`` with ``max_diff`` the largest disagreement in samples.
    """
    if len(ra_a) != len(ra_b):
        raise ValueError(f"RA curves have different lengths {len(ra_a)} and {len(ra_b)}")
    diff = max((abs(a - b) * n for a, b in zip(ra_a, ra_b)), default=0.0)
    samples = int(round(diff))
    return samples <= 1, samples


@dataclasses.dataclass
class TorchCallCounter:
    """Counts forward calls of a torch module (torchattacks' CW may stop the batch early)."""

    module: Any
    calls: int = 0

    def __post_init__(self) -> None:
        self.module.register_forward_hook(self._hook)

    def _hook(self, *_: Any) -> None:
        self.calls += 1


def auto_eps_max(w: Workload, config: BenchConfig) -> tuple[float, list[float]]:
    """The L∞ ε-grid end for a random detector: the smallest ε of :data:`AUTO_EPS_SEARCH` at which
    rrjax FGSM leaves RA ≤ 0.5 (the largest if none), so that the equivalence check sees RA fall.

    Random detectors differ widely in fragility (Meso4 at 128 px falls within 2/255, a calibrated
    Xception at 64 px within 0.5/255). The attacks' cost does not depend on ε.

    Returns:
      ``(eps_max, ra)`` with ``ra`` FGSM's RA over the search grid.
    """
    run = make_runner("rrjax-grid", "fgsm", w, AUTO_EPS_SEARCH, config.n, config)
    ra = robust_accuracy(w, outputs_numpy("rrjax-grid", run()), config.n)
    hit = [e for e, r in zip(AUTO_EPS_SEARCH, ra) if r <= AUTO_EPS_RA]
    eps_max = hit[0] if hit else AUTO_EPS_SEARCH[-1]
    return float(f"{eps_max:.3g}"), ra
