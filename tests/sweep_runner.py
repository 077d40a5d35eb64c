"""A deterministic tiny sweep, runnable in a subprocess (multi-device, multi-process, kill tests).

    python -m tests.sweep_runner OUT_DIR [--batch_size 4] [--process_id I --num_processes P --port N]
        [--chunk_delay SECONDS]
"""

from __future__ import annotations

import argparse
import os
import time


def build(batch_size: int = 4):
    import numpy as np

    from rrjax import sweep as S
    from tests.conftest import tiny_detector

    det_a, var_a = tiny_detector(seed=0, name="tiny")
    det_b, var_b = tiny_detector(seed=1, name="tiny")
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(22, 8, 8, 3), dtype=np.uint8)
    y = (np.arange(22) % 2).astype(np.int32)
    data = S.SweepData("toy", "test", x, y, np.arange(100, 122))
    models = [S.ModelEntry("a", det_a, var_a), S.ModelEntry("b", det_b, var_b)]
    attacks = S.parse_attacks("fgsm,pgd(steps=3),cw_bounded(steps=2,norm=l2)")
    settings = S.SweepSettings(eps=(0.0, 0.02, 0.1), tolerance=(0.0, 0.05, 0.2, 1.0), batch_size=batch_size, seed=3)
    return models, data, attacks, settings


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("out_dir")
    ap.add_argument("--batch_size", type=int, default=4)
    ap.add_argument("--process_id", type=int)
    ap.add_argument("--num_processes", type=int)
    ap.add_argument("--port", type=int)
    ap.add_argument("--chunk_delay", type=float, default=0.0,
                    help="sleep after each saved chunk, so a test can kill the sweep mid-run on any machine")
    args = ap.parse_args()
    import jax

    if args.num_processes:
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(f"localhost:{args.port}", args.num_processes, args.process_id)
    from rrjax import sweep as S
    from rrjax.sweep import cells

    if args.chunk_delay:
        write = cells.write_partial

        def slow_write(*a, **k):
            write(*a, **k)
            time.sleep(args.chunk_delay)

        cells.write_partial = slow_write
    models, data, attacks, settings = build(args.batch_size)
    S.run_sweep(models, data, attacks, settings, args.out_dir, progress=False)
    print("devices", jax.device_count(), "processes", jax.process_count(), flush=True)


if __name__ == "__main__":
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    main()
