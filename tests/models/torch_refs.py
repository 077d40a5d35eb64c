"""The PyTorch reference networks live in :mod:`rrjax.models.torch_refs` (the benchmark's
PyTorch baseline uses them too); the parity tests keep importing them from here."""

from rrjax.models.torch_refs import *  # noqa: F401,F403
