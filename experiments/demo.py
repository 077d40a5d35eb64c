"""Interim default job (replaced by the sweep): attack a small CNN and print RA and RR.

Run with ``make demo``. Writes ``outputs/demo/summary.json``.
"""

from __future__ import annotations

import json
import pathlib

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.tree_util import Partial

import rrjax


class SmallCNN(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Conv(8, (3, 3), strides=2)(2 * x - 1))
        x = nn.relu(nn.Conv(8, (3, 3), strides=2)(x))
        return nn.Dense(2)(x.mean(axis=(1, 2)))


def apply(variables, x):
    return SmallCNN().apply(variables, x)


def main() -> None:
    key = jax.random.key(0)
    x = jax.random.uniform(jax.random.key(1), (64, 32, 32, 3))
    variables = SmallCNN().init(key, x[:1])
    logits_fn = Partial(apply, variables)
    y = jnp.argmax(logits_fn(x), -1).astype(jnp.int32)  # clean accuracy 1 by construction
    eps = np.linspace(0.0, 0.2, 9)
    tol = np.linspace(0.0, 1.0, 11)
    out = pathlib.Path("outputs/demo")
    out.mkdir(parents=True, exist_ok=True)
    summary = {}
    for attack, kw in (("fgsm", {}), ("pgd", {"steps": 10}), ("cw_bounded", {"steps": 10})):
        res = rrjax.evaluate(logits_fn, x, y, attack=attack, eps=eps, tolerance=tol, key=key, **kw)
        summary[attack] = {"eps": eps.tolist(), "tolerance": tol.tolist(), "ra": res.ra.tolist(), "rr": res.rr.tolist()}
        print(f"\n{attack}: RA and RR(b) per eps")
        print("  eps    RA    " + " ".join(f"b={b:.1f}" for b in tol[::2]))
        for e, ra, rr in zip(eps, res.ra, res.rr):
            print(f"  {e:.3f}  {ra:.2f}  " + " ".join(f"{v:5.2f}" for v in rr[::2]))
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    print(f"\nresults: {out / 'summary.json'}")


if __name__ == "__main__":
    main()
