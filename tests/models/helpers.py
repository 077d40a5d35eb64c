"""Shared test utilities for the detector tests."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from rrjax.models import Detector


# These test programs run once or twice; XLA's LLVM optimisation passes cost more time than
# they save (I3D gradient: 9 s instead of 22 s to compile on a loaded 2-core machine, same run time).
FAST_COMPILE = {"xla_backend_optimization_level": 0}


def compile_fast(fn, *example_args):
    """``jax.jit(fn)`` compiled for the shapes of ``example_args`` with optimisations off."""
    return jax.jit(fn).lower(*example_args).compile(compiler_options=FAST_COMPILE)


def images(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(size=shape).astype(np.float32)


def random_variables(detector: Detector, seed: int = 0) -> dict:
    """Random variables with the model's structure, without ``init``.

    ``Detector.init`` compiles a threefry RNG call per parameter, which costs tens of
    seconds for the big models on a loaded CPU; NumPy fills the same shapes instantly.
    Kernels get He-scaled normals, BatchNorm statistics are random around identity.
    """
    rng = np.random.default_rng(seed)
    abstract = jax.eval_shape(detector.init, jax.random.key(0))

    def fill(path, leaf):
        name = jax.tree_util.keystr(path)
        shape = leaf.shape
        if name.endswith("['kernel']"):
            fan_in = int(np.prod(shape[:-1]))
            v = rng.normal(size=shape) * np.sqrt(2.0 / fan_in)
        elif name.endswith("['scale']") or name.endswith("['var']"):
            v = rng.uniform(0.5, 1.5, size=shape)
        else:  # biases and running means
            v = 0.1 * rng.normal(size=shape)
        return jnp.asarray(v, jnp.float32)

    return jax.tree_util.tree_map_with_path(fill, abstract)


def input_grad(detector: Detector, variables: dict, x: np.ndarray) -> np.ndarray:
    """d(sum of fake-minus-real logits)/dx, the quantity every attack differentiates."""

    def g(v, x):
        return jax.grad(lambda x: jnp.sum(detector.apply(v, x) @ jnp.array([-1.0, 1.0])))(x)

    x = jnp.asarray(x)
    return np.asarray(compile_fast(g, variables, x)(variables, x))


def assert_useful_grad(grad: np.ndarray) -> None:
    assert np.all(np.isfinite(grad)), "input gradient has NaN/inf"
    assert np.abs(grad).max() > 1e-6, "input gradient is zero"
    # Every sample receives gradient (no sample silently cut off from the output).
    assert np.all(np.abs(grad.reshape(grad.shape[0], -1)).max(axis=1) > 1e-6)


def assert_parity(ours: np.ndarray, ref: np.ndarray) -> None:
    """Logits agree to 1e-4 and are not trivially constant (so agreement means something)."""
    np.testing.assert_allclose(ours, ref, atol=1e-4, rtol=0)
    margin = ref[:, 1] - ref[:, 0]
    assert np.std(margin) > 1e-2, f"reference logits barely depend on the input: {ref}"
