"""What one benchmark run measures: :class:`BenchConfig`, its smoke-run sizes and the ε grids.

The script (``experiments/bench.py``) turns its flags into a :class:`BenchConfig`; every other
module of :mod:`rrjax.bench` reads only this record.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection
from typing import Any

from rrjax import _validation as V

__all__ = [
    "BENCH_MODELS", "IMAGE_MODELS", "TORCH_FREE_MODELS", "ATTACKS", "CONTENDERS", "PGD_REL_STEP", "QUICK",
    "BenchConfig", "quick_config", "eps_grid",
]

# The zoo's detectors the benchmark runs. I3D has no PyTorch reference network in
# rrjax.models.torch_refs, so it runs rrjax's contenders only (the tables say so).
IMAGE_MODELS = ("meso4", "meso_inception4", "xception", "efficientnet_b4")
TORCH_FREE_MODELS = ("i3d",)
BENCH_MODELS = IMAGE_MODELS + tuple(f"{m}_video" for m in IMAGE_MODELS) + TORCH_FREE_MODELS
ATTACKS = ("fgsm", "pgd", "cw")
CONTENDERS = ("rrjax-grid", "rrjax-per-eps", "torchattacks")
PGD_REL_STEP = 2.5  # PGD step = 2.5 ε / steps (Madry et al.; rrjax's default)

# Smoke-run sizes (``--quick``); flags given explicitly win. 64 px: at 32 px the random Meso4 is
# nearly input-independent and no attack moves RA.
QUICK: dict[str, Any] = dict(
    image_size=64, n=4, eps_count=2, pgd_steps=2, cw_steps=2, repeats=1, scale_e=(1, 4), scale_e_n=2,
    scale_n=(2, 4), scale_n_e=2, scale_repeats=0, matmul_size=512,
)


@dataclasses.dataclass(frozen=True)
class BenchConfig:
    """One benchmark run (the flags of ``experiments/bench.py``, same names).

    Attributes:
      model: a name of :data:`BENCH_MODELS`.
      image_size, num_frames: input side in pixels; frames per clip (video detectors).
      n, eps_count: samples N and ε-grid length E of the main comparison.
      attacks: some of ``fgsm``, ``pgd``, ``cw``.
      pgd_steps, cw_steps, cw_c, cw_lr: attack settings (CW: torchattacks' fixed-c CW against
        rrjax ``cw_l2`` with one binary-search round, no early abort).
      cw_per_eps: also time rrjax CW called once per ε.
      eps_max: largest L∞ ε (grid: E evenly spaced values in (0, eps_max]); ``None`` chooses it
        from the detector (:func:`rrjax.bench.contenders.auto_eps_max`).
      cw_eps_max: largest L2 ε of the CW grid.
      eps_batch_size: rrjax grid points vectorised at once (``None``: all).
      unroll: rrjax PGD/CW with ``unroll=True``.
      repeats: timed repeats after the warm-up run (median reported).
      scale_e, scale_e_n, scale_n, scale_n_e, scale_repeats, scale_torch: the scaling tables.
      memory, breakdown, layers: run the peak-memory, attack-step and per-layer sections.
      matmul_size: side of the square matmul that measures the machine's peak.
      seed: seed of weights, inputs and attack keys.
      quick: a smoke run (recorded in the report).
    """

    model: str = "meso4"
    image_size: int = 128
    num_frames: int = 4
    n: int = 64
    eps_count: int = 16
    attacks: tuple[str, ...] = ATTACKS
    pgd_steps: int = 10
    cw_steps: int = 10
    # c = 10, lr = 1e-3: torchattacks' batch-level early stop (summed cost rose at a check
    # step) then does not fire, so both frameworks run every step (lr = 1e-2 stops it after 2).
    cw_c: float = 10.0
    cw_lr: float = 1e-3
    cw_per_eps: bool = False
    eps_max: float | None = None
    cw_eps_max: float = 1.0
    eps_batch_size: int | None = None
    unroll: bool = True
    repeats: int = 3
    scale_e: tuple[int, ...] = (1, 4, 16, 64)
    scale_e_n: int = 16
    scale_n: tuple[int, ...] = (4, 16, 64)
    scale_n_e: int = 4
    scale_repeats: int = 1
    scale_torch: bool = True
    memory: bool = True
    breakdown: bool = True
    layers: bool = True
    matmul_size: int = 2048
    seed: int = 0
    quick: bool = False

    def __post_init__(self) -> None:
        V.check_choice(self.model, BENCH_MODELS, name="model")
        for name in ("image_size", "num_frames", "n", "eps_count", "pgd_steps", "cw_steps", "scale_e_n",
                     "scale_n_e", "matmul_size"):
            V.check_int(getattr(self, name), name=name, minimum=1)
        for name in ("repeats", "scale_repeats", "seed"):
            V.check_int(getattr(self, name), name=name, minimum=0)
        for name in ("scale_e", "scale_n"):
            for v in getattr(self, name):
                V.check_int(v, name=name, minimum=1)
        bad = [a for a in self.attacks if a not in ATTACKS]
        if bad or not self.attacks:
            raise ValueError(f"attacks={list(self.attacks)}; expected a non-empty subset of {list(ATTACKS)}")
        if self.eps_max is not None:
            V.check_number(self.eps_max, name="eps_max", lower=0.0, upper=1.0, strict=True)
        V.check_number(self.cw_eps_max, name="cw_eps_max", lower=0.0, strict=True)
        if self.eps_batch_size is not None:
            V.check_int(self.eps_batch_size, name="eps_batch_size", minimum=1)

    @property
    def samples(self) -> int:
        """Inputs the workload holds: enough for the main comparison and the scaling tables."""
        return max(self.n, self.scale_e_n, *self.scale_n)

    @property
    def has_torch_twin(self) -> bool:
        """Whether torchattacks runs (a PyTorch reference network exists for the model)."""
        return self.model not in TORCH_FREE_MODELS

    @property
    def contenders(self) -> tuple[str, ...]:
        return CONTENDERS if self.has_torch_twin else CONTENDERS[:2]

    @property
    def reference(self) -> str:
        """The contender whose RA the others must match: torchattacks, else rrjax per ε."""
        return "torchattacks" if self.has_torch_twin else "rrjax-per-eps"

    def steps(self, attack: str) -> int:
        """Gradient steps of one run of ``attack`` per (sample, ε)."""
        return {"fgsm": 1, "pgd": self.pgd_steps, "cw": self.cw_steps}[attack]


def quick_config(config: BenchConfig, explicit: Collection[str] = ()) -> BenchConfig:
    """``config`` with the smoke-run sizes of :data:`QUICK`, except the fields in ``explicit``
    (the flags given on the command line)."""
    return dataclasses.replace(config, quick=True, **{k: v for k, v in QUICK.items() if k not in explicit})


def eps_grid(eps_max: float, count: int) -> list[float]:
    """``count`` evenly spaced budgets in ``(0, eps_max]`` (ε = 0 is the clean accuracy)."""
    return [eps_max * (i + 1) / count for i in range(count)]
