"""Deepfake detectors (Flax Linen), their registry and PyTorch weight import.

Registry (``MODELS``; ``get_model(name, **config)``):

=====================  ==================  ==============================================
name                   default input       architecture
=====================  ==================  ==============================================
meso4                  256 x 256 x 3       Meso4 (Afchar et al. 2018), DeepfakeBench
meso_inception4        256 x 256 x 3       MesoInception4, DeepfakeBench
xception               256 x 256 x 3       Xception, FaceForensics++ / DeepfakeBench
efficientnet_b4        256 x 256 x 3       EfficientNet-B4, DeepfakeBench
i3d                    16 x 112 x 112 x 3  I3D (Inception-v1 inflated), width 0.25
i3d_full               64 x 224 x 224 x 3  I3D, published widths
<frame>_video          8 x <frame input>   frame detector + probability aggregation
=====================  ==================  ==============================================

``<frame>`` is any of meso4, meso_inception4, xception, efficientnet_b4; the video entries
take the frame model's keywords plus ``num_frames``, ``aggregation`` (``"mean"`` or
``"confident"``), ``confident_threshold`` and ``confident_min_frames``
(:mod:`rrjax.models.video`).

Every detector takes pixels in [0, 1] and normalises inside. ``Detector.config`` holds the
fully resolved keyword arguments, so ``get_model(d.name, **dict(d.config))`` rebuilds ``d``.
"""

from __future__ import annotations

import dataclasses
import inspect
import os
from collections.abc import Callable, Mapping
from typing import Any

import jax

from rrjax._validation import check_choice
from rrjax.models import efficientnet, i3d, meso, video, xception
from rrjax.models import video as video_module
from rrjax.models._convert import convert, export, strip_wrappers, unwrap_checkpoint
from rrjax.models.base import Detector

__all__ = [
    "Detector",
    "MODELS",
    "get_model",
    "default_input_shape",
    "from_torch",
    "to_torch",
    "torch_layouts",
    "convert_file",
    "register",
]

MODELS: dict[str, Callable[..., Detector]] = {
    "meso4": meso.meso4,
    "meso_inception4": meso.meso_inception4,
    "xception": xception.xception,
    "efficientnet_b4": efficientnet.efficientnet_b4,
    "i3d": i3d.i3d,
    "i3d_full": i3d.i3d_full,
    **{f"{frame}_video": video.video_factory(frame) for frame in video.FRAME_MODELS},
}

# Families with a PyTorch layout: frame model name -> module with LAYOUTS and torch_layout().
_TORCH_FAMILIES = {
    "meso4": meso,
    "meso_inception4": meso,
    "xception": xception,
    "efficientnet_b4": efficientnet,
}
_BUILTIN = frozenset(MODELS)


@dataclasses.dataclass(frozen=True)
class _UserTorchFamily:
    """A user's PyTorch layout: what ``from_torch``/``to_torch`` need (see :func:`register`)."""

    LAYOUTS: tuple[str, ...]
    layout_fn: Callable[[str, str], tuple[list, tuple[str, ...]]]

    def torch_layout(self, name: str, layout: str):
        return self.layout_fn(name, layout)


def register(
    name: str,
    factory: Callable[..., Detector],
    *,
    torch_layouts: tuple[str, ...] = (),
    torch_layout: Callable[[str, str], tuple[list, tuple[str, ...]]] | None = None,
    video: bool = False,
    overwrite: bool = False,
) -> None:
    """Adds a detector to the registry, so ``get_model(name)``, checkpoints (``rrjax.checkpoints
    .load`` rebuilds a detector by name), training and the sweep (``--extra_modules=<module>``)
    use it like a built-in one.

    Args:
      name: a new registry name (built-in names cannot be replaced).
      factory: ``factory(**config) -> Detector`` with keyword-only options; the returned
        ``Detector.config`` must hold every resolved keyword so ``get_model(name, **config)``
        rebuilds it, and ``Detector.name`` must equal ``name``.
      torch_layouts: names of the PyTorch layouts ``from_torch``/``to_torch`` accept (first =
        default); requires ``torch_layout``.
      torch_layout: ``torch_layout(name, layout) -> (layers, ignore)``: the list of
        ``rrjax.models._convert.TorchLayer`` entries and key prefixes to ignore.
      video: also register ``f"{name}_video"``, the clip detector that aggregates this frame
        detector's probabilities (``rrjax.models.video``).
      overwrite: replace an earlier user registration.

    Raises:
      ValueError: a bad or taken name, a factory that is not callable, or a layout
        description given half.
    """
    names = [name] + ([f"{name}_video"] if video else [])
    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(f"model name {name!r} must be a Python identifier")
    for n in names:
        if n in _BUILTIN:
            raise ValueError(f"model {n!r} is built into rrjax and cannot be replaced; register under another name")
        if n in MODELS and not overwrite:
            raise ValueError(f"model {n!r} is already registered; pass overwrite=True to replace it")
    if not callable(factory):
        raise ValueError(f"model {name!r}: factory must be callable, got {type(factory).__name__}")
    if bool(torch_layouts) != (torch_layout is not None):
        raise ValueError(f"model {name!r}: pass torch_layouts and torch_layout together (or neither)")
    MODELS[name] = factory
    if torch_layout is not None:
        _TORCH_FAMILIES[name] = _UserTorchFamily(tuple(torch_layouts), torch_layout)
    if video:
        video_module.FRAME_MODELS[name] = factory
        MODELS[f"{name}_video"] = video_module.video_factory(name)


def _accepted_keys(name: str) -> tuple[str, ...]:
    factory = MODELS[name]
    keys = getattr(factory, "accepted_keys", None)
    if keys is None:
        keys = tuple(inspect.signature(factory).parameters)
    return tuple(keys)


def get_model(name: str, **config: Any) -> Detector:
    """Builds a registered detector.

    Args:
      name: a key of ``MODELS``.
      **config: the factory's keyword arguments (e.g. ``image_size=128``).

    Returns:
      The :class:`Detector`; ``config`` holds every resolved keyword argument.

    Raises:
      ValueError: unknown name (the message lists the valid names), unknown keyword
        (lists the accepted ones) or an invalid value.
    """
    check_choice(name, MODELS, name="name")
    accepted = _accepted_keys(name)
    unknown = sorted(set(config) - set(accepted))
    if unknown:
        raise ValueError(f"{name} does not take {unknown}; accepted keywords: {list(accepted)}")
    return MODELS[name](**config)


def default_input_shape(name: str, **config: Any) -> tuple[int, ...]:
    """Per-sample input shape of a detector: ``(H, W, C)`` or ``(T, H, W, C)``."""
    return tuple(get_model(name, **config).input_shape)


def _frame_name(name: str) -> str:
    return name[: -len("_video")] if name.endswith("_video") else name


def torch_layouts(name: str) -> tuple[str, ...]:
    """PyTorch layouts ``from_torch`` accepts for ``name`` (first = default); () if none."""
    check_choice(name, MODELS, name="name")
    family = _TORCH_FAMILIES.get(_frame_name(name))
    return tuple(family.LAYOUTS) if family else ()


def from_torch(
    name: str, state_dict: Mapping[str, Any], *, layout: str | None = None, **config: Any
) -> dict[str, Any]:
    """Imports a PyTorch state dict as the Flax variables of a registered detector.

    Layouts (``torch_layouts(name)``):

    * meso4, meso_inception4, efficientnet_b4: ``"deepfakebench"`` (DeepfakeBench's
      backbone modules);
    * xception: ``"deepfakebench"`` (default) or ``"faceforensics"`` (FaceForensics++
      ``TransferModel``);
    * ``<frame>_video``: the frame model's layouts (weights go to the frame model).

    Accepted containers: a plain state dict, or a checkpoint dict nesting it under
    ``state_dict`` / ``model_state_dict`` / ``model`` / ``net`` / ``network``. Prefixes
    that *every* key shares among ``module.`` (DataParallel), ``backbone.`` (DeepfakeBench
    detectors) and ``model.`` (FaceForensics++) are removed. ``num_batches_tracked`` is
    ignored; BatchNorm running statistics go to ``batch_stats``.

    Args:
      name: registry name.
      state_dict: mapping of names to torch tensors or arrays.
      layout: one of ``torch_layouts(name)``; default the first.
      **config: the detector's keyword arguments (as for :func:`get_model`).

    Returns:
      ``{"params": ..., "batch_stats": ...}`` for ``get_model(name, **config)``.

    Raises:
      ValueError: no layout for this model, unknown layout, missing or unexpected keys
        (all listed), or shape mismatches (naming the layer and both shapes). Nothing is
        loaded partially.
    """
    detector = get_model(name, **config)
    layers, ignore = _torch_layers(name, detector, layout)
    abstract = jax.eval_shape(detector.init, jax.random.key(0))
    sd = strip_wrappers(unwrap_checkpoint(state_dict))
    return convert(sd, layers, abstract, model=name, ignore=ignore)


def _torch_layers(name: str, detector: Detector, layout: str | None) -> tuple[list, tuple[str, ...]]:
    """The PyTorch layout description of ``detector`` (registry ``name``) and its ignore list."""
    layouts = torch_layouts(name)
    if not layouts:
        importable = [n for n in MODELS if torch_layouts(n)]
        raise ValueError(f"{name!r} has no PyTorch layout to import or export; importable models: {importable}")
    layout = layouts[0] if layout is None else check_choice(layout, layouts, name="layout")
    frame = _frame_name(name)
    family = _TORCH_FAMILIES[frame]
    if family is meso:  # a separate-BatchNorm MesoNet takes each shared module twice
        shared = dict(detector.config).get("batchnorm", "separate") == "shared"
        layers, ignore = family.torch_layout(frame, layout, shared=shared)
    else:
        layers, ignore = family.torch_layout(frame, layout)
    if frame != name:
        layers = [type(layer)(layer.torch, ("frame_model",) + layer.flax, layer.kind) for layer in layers]
    return layers, ignore


def to_torch(name: str, variables: Mapping[str, Any], *, layout: str | None = None, **config: Any) -> dict[str, Any]:
    """Exports the Flax variables of a registered detector as a PyTorch state dict.

    The inverse of :func:`from_torch`: ``from_torch(name, to_torch(name, v, **c), **c)``
    returns ``v``, and the result loads strictly into the matching PyTorch reference
    network (``rrjax.models.torch_refs``; e.g. ``Meso4Ref`` for ``meso4`` with
    ``batchnorm="shared"``). Keys are the layout's plain module names (no wrapper prefix);
    ``<frame>_video`` exports its frame model. A separate-BatchNorm MesoNet exports only
    when each pair of BatchNorms that DeepfakeBench shares holds identical values (as after
    an import); otherwise the PyTorch network cannot represent it and ``ValueError`` says so.

    Args:
      name: registry name.
      variables: ``{"params": ..., "batch_stats": ...}`` of ``get_model(name, **config)``.
      layout: one of ``torch_layouts(name)``; default the first.
      **config: the detector's keyword arguments (as for :func:`get_model`).

    Returns:
      ``{name: torch.Tensor}`` (float32; ``num_batches_tracked`` int64).

    Raises:
      ValueError: no layout for this model, unknown layout, variables that do not match
        the model's structure, or shared modules with different values.
      ImportError: PyTorch is not installed.
    """
    detector = get_model(name, **config)
    layers, _ = _torch_layers(name, detector, layout)
    abstract = jax.eval_shape(detector.init, jax.random.key(0))
    want = jax.tree_util.tree_map(lambda a: tuple(a.shape), abstract)
    got = jax.tree_util.tree_map(lambda a: tuple(getattr(a, "shape", ())), dict(variables))
    if want != got:
        raise ValueError(
            f"variables do not match {name} with config {dict(detector.config)}: expected the "
            "structure and shapes of get_model(name, **config).init(key)"
        )
    arrays = export(variables, layers, model=name)
    try:
        import torch
    except ImportError as e:  # torch is an optional dependency
        raise ImportError("to_torch needs PyTorch: pip install 'rrjax[torch]'") from e
    return {k: torch.from_numpy(v) for k, v in arrays.items()}


def _refusal(path: str, err: Exception) -> str:
    """One line: why ``torch.load(weights_only=True)`` refused ``path`` (torch's reason, short) and,
    for pickled Python objects, how to re-save a whole ``nn.Module`` as a state dict."""
    text = " ".join(str(err).split())
    reason = text.split("WeightsUnpickler error:")[-1]  # torch's reason, without its advice
    reason = reason.split(" Please use `torch.serialization")[0].split(" Check the documentation")[0].strip()
    reason = reason if len(reason) <= 200 else reason[:197] + "..."
    message = f"torch.load(weights_only=True) refused {path!r} ({type(err).__name__}: {reason})"
    if "GLOBAL" not in reason:
        return message
    out = os.path.splitext(path)[0] + "_state_dict.pth"
    return (
        f"{message}: it holds pickled Python objects, which rrjax never unpickles. If it is a whole "
        "nn.Module (as FaceForensics++ releases its Xception) from a source you trust, turn it into a "
        f"state dict in your own environment, with the model's code importable: m = torch.load({path!r}, "
        f"weights_only=False); torch.save(m.state_dict(), {out!r}); then convert {out!r}"
    )


def convert_file(
    name: str, path: str | os.PathLike, *, layout: str | None = None, **config: Any
) -> tuple[Detector, dict[str, Any]]:
    """Loads a PyTorch ``.pth`` file safely and imports it (see :func:`from_torch`).

    The file is read with ``torch.load(path, map_location="cpu", weights_only=True)``:
    tensors and plain containers only, never arbitrary pickled objects. Files that hold a
    whole pickled ``nn.Module`` (as FaceForensics++'s released models do) are refused with one
    line that says how to re-save them as a state dict where their source is trusted
    (``torch.save(torch.load(path, weights_only=False).state_dict(), out)``).

    Returns:
      ``(detector, variables)``.

    Raises:
      ValueError: as :func:`from_torch`, plus a missing file or one ``torch.load`` rejects.
      ImportError: PyTorch is not installed (``pip install torch``).
    """
    detector = get_model(name, **config)
    if not os.path.isfile(path):
        raise ValueError(f"path={os.fspath(path)!r} is not a file; expected a PyTorch .pth state dict")
    try:
        import torch
    except ImportError as e:  # torch is an optional dependency
        raise ImportError("convert_file needs PyTorch: pip install 'rrjax[torch]'") from e
    try:
        obj = torch.load(os.fspath(path), map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises UnpicklingError/RuntimeError for unsafe or corrupt files
        raise ValueError(_refusal(os.fspath(path), e)) from e
    variables = from_torch(name, obj, layout=layout, **dict(detector.config))
    return detector, variables
