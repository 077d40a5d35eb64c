"""Mapping PyTorch state dicts onto Flax Linen variables (shared by every detector family).

Each family describes its PyTorch layout as a list of :class:`TorchLayer` entries (which
PyTorch module prefix feeds which Flax module path, and how the tensors are laid out). The
generic :func:`convert` then checks the state dict against that list *and* against the
Flax model's own variable shapes, so a checkpoint is either imported completely or rejected
with an error that lists every missing / unexpected key and every shape mismatch. It never
loads partially.

No PyTorch import is needed here: tensors are turned into NumPy arrays through
``.detach().cpu().numpy()`` when they have it, ``numpy.asarray`` otherwise.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import jax.numpy as jnp
import numpy as np

__all__ = ["TorchLayer", "convert", "export", "strip_wrappers", "unwrap_checkpoint", "to_numpy"]

# Prefixes that wrappers add in front of every key: DataParallel / DDP ("module."),
# DeepfakeBench detectors ("backbone."), FaceForensics++'s TransferModel ("model.").
WRAPPER_PREFIXES = ("module.", "backbone.", "model.")
# Keys under which training scripts commonly nest the state dict in a checkpoint file.
CHECKPOINT_KEYS = ("state_dict", "model_state_dict", "model", "net", "network")

_BN_KEYS = {
    "weight": ("params", "scale"),
    "bias": ("params", "bias"),
    "running_mean": ("batch_stats", "mean"),
    "running_var": ("batch_stats", "var"),
}


@dataclasses.dataclass(frozen=True)
class TorchLayer:
    """One PyTorch module mapped onto one Flax module.

    Attributes:
      torch: candidate PyTorch module prefixes (e.g. ``("last_linear", "last_linear.1")``
        when a head may or may not sit behind ``nn.Sequential(Dropout, Linear)``); the
        first candidate whose ``.weight`` is present is used.
      flax: path of the Flax module inside the ``params`` (and ``batch_stats``) tree.
      kind: ``"conv"`` (``Conv1d/2d/3d``, weight ``[O, I/g, *k]`` -> kernel ``[*k, I/g, O]``;
        a 2-D ``[O, I]`` weight is accepted for a 1x1 kernel, as in Cadene's Xception
        files), ``"linear"`` (``[O, I]`` -> ``[I, O]``) or ``"bn"`` (``BatchNorm``:
        weight/bias -> scale/bias, running_mean/var -> batch_stats mean/var).
    """

    torch: tuple[str, ...]
    flax: tuple[str, ...]
    kind: str

    @staticmethod
    def make(torch: str | Sequence[str], flax: str | Sequence[str], kind: str) -> TorchLayer:
        torch_t = (torch,) if isinstance(torch, str) else tuple(torch)
        flax_t = tuple(flax.split("/")) if isinstance(flax, str) else tuple(flax)
        if kind not in ("conv", "linear", "bn"):
            raise ValueError(f"kind={kind!r}; expected 'conv', 'linear' or 'bn'")
        return TorchLayer(torch_t, flax_t, kind)


def to_numpy(value: Any) -> np.ndarray:
    """A tensor / array as a NumPy array that owns its memory.

    ``Tensor.numpy()`` shares memory with the tensor and ``jnp.asarray`` may share it again
    on CPU, so without the copy an in-place update on the PyTorch side (e.g. BatchNorm
    running statistics in a train-mode forward) would silently change imported variables.
    """
    if hasattr(value, "detach"):
        value = value.detach().cpu()
        if str(getattr(value, "dtype", "")) == "torch.bfloat16":
            value = value.float()
        return np.array(value.numpy(), copy=True)
    return np.array(value, copy=True)


def unwrap_checkpoint(obj: Any) -> Mapping[str, Any]:
    """Returns the state dict inside a loaded checkpoint object.

    Accepts a plain ``{name: tensor}`` mapping, or a dict that nests it under one of
    ``state_dict``, ``model_state_dict``, ``model``, ``net``, ``network`` (training scripts
    often save ``{"epoch": ..., "state_dict": ...}``).

    Raises:
      ValueError: ``obj`` is not a mapping, or holds no tensor mapping.
    """
    if not isinstance(obj, Mapping):
        raise ValueError(
            f"checkpoint is a {type(obj).__name__}; expected a state dict (a mapping of names "
            "to tensors). Whole pickled modules cannot be loaded safely: re-save with "
            "torch.save(model.state_dict(), path)"
        )
    if obj and all(hasattr(v, "shape") for v in obj.values()):
        return obj
    for key in CHECKPOINT_KEYS:
        inner = obj.get(key)
        if isinstance(inner, Mapping) and inner and all(hasattr(v, "shape") for v in inner.values()):
            return inner
    non_tensors = sorted(k for k, v in obj.items() if not hasattr(v, "shape"))[:10]
    raise ValueError(
        "checkpoint holds no state dict: expected a mapping of names to tensors, or one nested "
        f"under {', '.join(map(repr, CHECKPOINT_KEYS))}; found non-tensor entries {non_tensors}"
    )


def strip_wrappers(state_dict: Mapping[str, Any]) -> dict[str, Any]:
    """Removes wrapper prefixes (``module.``, ``backbone.``, ``model.``) shared by every key.

    A prefix is removed only when *every* key carries it, repeatedly, so
    ``module.backbone.conv1.weight`` becomes ``conv1.weight``.
    """
    sd = dict(state_dict)
    changed = True
    while changed and sd:
        changed = False
        for prefix in WRAPPER_PREFIXES:
            if all(k.startswith(prefix) for k in sd):
                sd = {k[len(prefix):]: v for k, v in sd.items()}
                changed = True
    return sd


def _get(tree: Mapping[str, Any], path: Sequence[str]) -> Any:
    node = tree
    for p in path:
        if not isinstance(node, Mapping) or p not in node:
            return None
        node = node[p]
    return node


def _set(tree: dict, path: Sequence[str], value: Any) -> None:
    node = tree
    for p in path[:-1]:
        node = node.setdefault(p, {})
    node[path[-1]] = value


def _leaf_paths(tree: Mapping[str, Any], prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    out = []
    for k, v in tree.items():
        if isinstance(v, Mapping):
            out.extend(_leaf_paths(v, prefix + (k,)))
        else:
            out.append(prefix + (k,))
    return out


def _torch_shape_of(kind: str, flax_shape: tuple[int, ...], field: str) -> tuple[int, ...]:
    """The PyTorch shape a Flax leaf corresponds to (for error messages)."""
    if kind == "conv" and field == "weight":
        return (flax_shape[-1], flax_shape[-2]) + tuple(flax_shape[:-2])
    if kind == "linear" and field == "weight":
        return (flax_shape[1], flax_shape[0])
    return tuple(flax_shape)


def _to_flax(kind: str, field: str, value: np.ndarray, want: tuple[int, ...]) -> np.ndarray | None:
    """Rearranges one PyTorch tensor into the Flax layout; None when shapes cannot match."""
    if kind == "conv" and field == "weight":
        if value.ndim == 2 and len(want) >= 3 and all(k == 1 for k in want[:-2]):
            value = value.reshape(value.shape + (1,) * (len(want) - 2))
        if value.ndim != len(want):
            return None
        value = np.transpose(value, tuple(range(2, value.ndim)) + (1, 0))
    elif kind == "linear" and field == "weight":
        if value.ndim != 2:
            return None
        value = value.T
    if tuple(value.shape) != tuple(want):
        return None
    return value


def convert(
    state_dict: Mapping[str, Any],
    layers: Sequence[TorchLayer],
    abstract_variables: Mapping[str, Any],
    *,
    model: str,
    ignore: Sequence[str] = (),
) -> dict[str, Any]:
    """Builds Flax variables from a PyTorch state dict, all or nothing.

    Args:
      state_dict: ``{name: tensor}``, already stripped of wrapper prefixes.
      layers: the layout description of the model.
      abstract_variables: ``jax.eval_shape`` of the model's ``init`` (names and shapes of
        every Flax leaf; each must be produced by exactly one layer).
      model: registry name, for error messages.
      ignore: exact key prefixes (ending in ``.``) that the layout knowingly drops, e.g.
        modules that a checkpoint carries but the forward pass never uses.

    Returns:
      ``{"params": ..., "batch_stats": ...}`` (``batch_stats`` only when the model has
      BatchNorm) with float32 ``jax.Array`` leaves.

    Raises:
      ValueError: missing keys, unexpected keys (both listed in full), or shape mismatches
        (each naming the PyTorch key, the Flax layer and both shapes).
    """
    sd = {k: v for k, v in state_dict.items() if not k.endswith("num_batches_tracked")}
    for k in list(sd):
        if any(k.startswith(p) for p in ignore):
            del sd[k]
    params_abs = abstract_variables.get("params", {})
    stats_abs = abstract_variables.get("batch_stats", {})
    abs_trees = {"params": params_abs, "batch_stats": stats_abs}

    out: dict[str, dict] = {"params": {}, "batch_stats": {}}
    used: set[str] = set()
    missing: list[str] = []
    mismatched: list[str] = []
    for layer in layers:
        prefix = next((p for p in layer.torch if f"{p}.weight" in sd), layer.torch[0])
        if layer.kind == "bn":
            fields = dict(_BN_KEYS)
        else:
            fields = {"weight": ("params", "kernel")}
            if _get(params_abs, layer.flax + ("bias",)) is not None:
                fields["bias"] = ("params", "bias")
        for field, (collection, leaf) in fields.items():
            key = f"{prefix}.{field}"
            target = _get(abs_trees[collection], layer.flax + (leaf,))
            if target is None:
                raise RuntimeError(f"layout of {model} names Flax leaf {'/'.join(layer.flax + (leaf,))}, "
                                   "which the model does not have")
            if key not in sd:
                missing.append(key)
                continue
            used.add(key)
            value = to_numpy(sd[key])
            want = tuple(target.shape)
            converted = _to_flax(layer.kind, field, value, want)
            if converted is None:
                mismatched.append(
                    f"{key} -> {'/'.join(layer.flax)}: checkpoint shape {tuple(value.shape)}, "
                    f"model expects {_torch_shape_of(layer.kind, want, field)} (PyTorch layout)"
                )
                continue
            _set(out[collection], layer.flax + (leaf,), jnp.asarray(converted, dtype=jnp.float32))
    unexpected = sorted(set(sd) - used)
    # One PyTorch module may feed several Flax modules (MesoNet's shared BatchNorms): report once.
    missing, mismatched = list(dict.fromkeys(missing)), list(dict.fromkeys(mismatched))
    if missing or unexpected or mismatched:
        parts = [f"cannot import the PyTorch state dict into {model!r} (nothing was loaded):"]
        if missing:
            parts.append(f"missing keys ({len(missing)}): {missing}")
        if unexpected:
            parts.append(f"unexpected keys ({len(unexpected)}): {unexpected}")
        if mismatched:
            parts.append("shape mismatches: " + "; ".join(mismatched))
        raise ValueError("\n".join(parts))
    for collection, tree in abs_trees.items():
        want_paths = set(_leaf_paths(tree))
        got_paths = set(_leaf_paths(out[collection]))
        if want_paths != got_paths:
            gap = sorted("/".join(p) for p in want_paths ^ got_paths)
            raise RuntimeError(f"layout of {model} does not cover the Flax {collection} exactly: {gap}")
    return {c: t for c, t in out.items() if t or c == "params"}


def _from_flax(kind: str, field: str, value: np.ndarray) -> np.ndarray:
    """Inverse of :func:`_to_flax`: one Flax leaf in the PyTorch layout."""
    if kind == "conv" and field == "weight":
        return np.transpose(value, (value.ndim - 1, value.ndim - 2) + tuple(range(value.ndim - 2)))
    if kind == "linear" and field == "weight":
        return value.T
    return value


def export(variables: Mapping[str, Any], layers: Sequence[TorchLayer], *, model: str) -> dict[str, np.ndarray]:
    """The inverse of :func:`convert`: a PyTorch-layout state dict (NumPy float32 arrays).

    Each layer is written under its first PyTorch prefix candidate. Several Flax modules fed
    by one PyTorch module (a separate-BatchNorm MesoNet imported from DeepfakeBench's shared
    layout) must hold identical values, since the PyTorch network has only one.

    Args:
      variables: ``{"params": ..., "batch_stats": ...}`` of the model.
      layers: the layout description of the model (as for :func:`convert`).
      model: registry name, for error messages.

    Returns:
      ``{name: f32 array}``; BatchNorm modules also get ``num_batches_tracked`` (int64 0),
      so ``module.load_state_dict`` accepts the dict strictly.

    Raises:
      ValueError: a Flax leaf the layout names is missing, or modules that share one
        PyTorch module hold different values.
    """
    trees = {"params": variables.get("params", {}), "batch_stats": variables.get("batch_stats", {})}
    out: dict[str, np.ndarray] = {}
    source: dict[str, str] = {}
    missing: list[str] = []
    for layer in layers:
        prefix = layer.torch[0]
        if layer.kind == "bn":
            fields = dict(_BN_KEYS)
        else:
            fields = {"weight": ("params", "kernel")}
            if _get(trees["params"], layer.flax + ("bias",)) is not None:
                fields["bias"] = ("params", "bias")
        for field, (collection, leaf) in fields.items():
            path = "/".join((collection,) + layer.flax + (leaf,))
            value = _get(trees[collection], layer.flax + (leaf,))
            if value is None:
                missing.append(path)
                continue
            key = f"{prefix}.{field}"
            arr = np.array(_from_flax(layer.kind, field, np.asarray(value, np.float32)), order="C", copy=True)
            if key in out and not np.array_equal(out[key], arr):
                raise ValueError(
                    f"cannot export {model!r} to the PyTorch layout: {path} and {source[key]} both map "
                    f"to the single PyTorch tensor {key!r} but hold different values (a model trained "
                    "with separate modules has no exact PyTorch counterpart in this layout)"
                )
            out[key], source[key] = arr, path
        if layer.kind == "bn":
            out[f"{prefix}.num_batches_tracked"] = np.zeros((), np.int64)
    if missing:
        raise ValueError(f"cannot export {model!r}: the variables lack {len(missing)} leaves: {missing}")
    return out
