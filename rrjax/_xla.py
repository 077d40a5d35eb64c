"""The one place rrjax sets XLA flags. They are read when JAX starts its backend, so a script
calls these before anything touches a device (the library never sets them behind a user's back).
"""

from __future__ import annotations

import os

__all__ = ["add_xla_flags", "use_memory_optimised_cpu_scheduler"]


def add_xla_flags(*flags: str) -> str:
    """Appends ``--name=value`` flags to ``$XLA_FLAGS`` unless the user already set that option.

    Returns the resulting ``XLA_FLAGS`` value.
    """
    current = os.environ.get("XLA_FLAGS", "").split()
    for flag in flags:
        name = flag.split("=", 1)[0]
        if not any(f.split("=", 1)[0] == name for f in current):
            current.append(flag)
    os.environ["XLA_FLAGS"] = " ".join(current)
    return os.environ["XLA_FLAGS"]


def use_memory_optimised_cpu_scheduler() -> str:
    """XLA:CPU's memory-optimised scheduler, which unrolled attack loops need.

    Under the default (concurrency-optimised) scheduler an unrolled loop keeps every step's
    activations alive (PGD-10: 2.4 GB vs 0.41 GB; BUILD_NOTES.md, "Unrolled attack loops"); the
    memory-optimised one needs what the while loop needs. Other backends ignore the option.
    """
    return add_xla_flags("--xla_cpu_enable_concurrency_optimized_scheduler=false")
