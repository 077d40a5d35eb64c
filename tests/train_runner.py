"""Trains the toy detector of tests/test_train.py in a subprocess (SIGKILL / resume tests).

    python -m tests.train_runner WORK_DIR [--resume] [--epochs 6]

Writes WORK_DIR/final.npz (the trained variables) when training completes.
"""

from __future__ import annotations

import argparse
import os


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("work_dir")
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--epochs", type=int, default=6)
    args = ap.parse_args()
    import jax
    import numpy as np

    from rrjax import train
    from tests.test_train import HP, batch_fn, toy_data, toy_detector, val_fn

    det = toy_detector()
    tr, va = toy_data(96, seed=0), toy_data(32, seed=1)
    hp = {**HP, "epochs": args.epochs}
    result = train.train(det, batch_fn(tr, 16), val_fn(va, 16), work_dir=args.work_dir, resume=args.resume, **hp)
    leaves = jax.tree_util.tree_leaves_with_path(result.variables)
    np.savez(os.path.join(args.work_dir, "final.npz"),
             **{jax.tree_util.keystr(p): np.asarray(v) for p, v in leaves}, step=result.step)
    print("done", result.step, flush=True)


if __name__ == "__main__":
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    main()
