"""The dataset registry: :data:`DATASETS`, :func:`register` and :func:`get_builder`.

``DATASETS`` maps a name to a TFDS builder class (a subclass of
:class:`rrjax.data.Builder`); every consumer (``get_builder``, ``load``, the sweep and
training scripts) reads it, so a dataset registered here is usable everywhere by name.
Add your own without editing rrjax::

    from rrjax import data

    class MyFaces(data.Builder):
        name = "my_faces"                  # the tfds name = the registry name
        VERSION = tfds.core.Version("1.0.0")
        CONFIG_CLASS = MyFacesConfig       # a BuilderConfig dataclass with make(**kwargs)
        ...                                # _info, _split_generators, _generate_examples

    data.register("my_faces", MyFaces)
    test = data.load("my_faces", "test", image_size=64)

``tests/extensions/toy_dataset.py`` is a complete example.
"""

from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path
from typing import Any

import tensorflow_datasets as tfds

from rrjax._validation import check_choice
from rrjax.data import _base, celeb_df, deepfakebench, faceforensics, synthetic

__all__ = ["DATASETS", "default_data_dir", "get_builder", "register"]

DATASETS: dict[str, type[_base.Builder]] = {
    "synthetic_images": synthetic.SyntheticImages,
    "synthetic_videos": synthetic.SyntheticVideos,
    "faceforensics": faceforensics.FaceForensics,
    "celeb_df_v2": celeb_df.CelebDF,
    "deepfakebench": deepfakebench.DeepfakeBench,
}

_NAME = re.compile(r"[a-z][a-z0-9_]*")  # tfds dataset names: snake_case, also the folder name


def _check_builder_class(builder_cls: Any) -> None:
    """Raises ValueError unless ``builder_cls`` is a concrete rrjax builder with a config class."""
    if not (isinstance(builder_cls, type) and issubclass(builder_cls, _base.Builder)):
        raise ValueError(f"builder_cls={builder_cls!r} is not valid; expected a subclass of rrjax.data.Builder "
                         "(rrjax's tfds GeneratorBasedBuilder)")
    config_cls = getattr(builder_cls, "CONFIG_CLASS", None)
    if not (isinstance(config_cls, type) and issubclass(config_cls, tfds.core.BuilderConfig)
            and dataclasses.is_dataclass(config_cls) and callable(getattr(config_cls, "make", None))):
        raise ValueError(f"{builder_cls.__name__}.CONFIG_CLASS={config_cls!r} is not valid; expected a "
                         "tfds.core.BuilderConfig dataclass with a make(**kwargs) classmethod that validates "
                         "the values and names the config (see rrjax.data.Builder)")


def register(name: str, builder_cls: type[_base.Builder], *, overwrite: bool = False) -> type[_base.Builder]:
    """Adds dataset ``name`` to :data:`DATASETS`, so ``load(name, ...)`` and the scripts find it.

    Args:
      name: the dataset's name, snake_case (``[a-z][a-z0-9_]*``); it must equal
        ``builder_cls.name``, the name tfds stores the prepared files under.
      builder_cls: a subclass of :class:`rrjax.data.Builder` with ``CONFIG_CLASS``
        (a ``tfds.core.BuilderConfig`` dataclass with a ``make(**kwargs)`` classmethod);
        ``config_from`` and ``config_fields`` come from the base class.
      overwrite: replace a dataset already registered under ``name``.

    Returns:
      ``builder_cls`` (so ``register`` can follow the class definition).

    Raises:
      ValueError: ``name`` is not snake_case or differs from ``builder_cls.name``,
        ``builder_cls`` is not such a builder class, or ``name`` is taken by another
        class and ``overwrite`` is False (registering the same class again is a no-op).
    """
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ValueError(f"name={name!r} is not valid; expected a snake_case name such as 'my_faces' "
                         "(lowercase letters, digits and '_', starting with a letter)")
    _check_builder_class(builder_cls)
    if builder_cls.name != name:
        raise ValueError(f"name={name!r} differs from {builder_cls.__name__}.name={builder_cls.name!r}; "
                         "expected them equal (tfds stores and finds the prepared files by the class's name)")
    if not isinstance(overwrite, bool):
        raise ValueError(f"overwrite={overwrite!r} is not valid; expected True or False")
    taken = DATASETS.get(name)
    if taken is not None and taken is not builder_cls and not overwrite:
        raise ValueError(f"name={name!r} is already registered ({taken.__module__}.{taken.__qualname__}); "
                         "expected a new name, or pass overwrite=True to replace it")
    DATASETS[name] = builder_cls
    return builder_cls


def default_data_dir() -> Path:
    """``$RRJAX_DATA_DIR``, else ``$TFDS_DATA_DIR``, else ``~/tensorflow_datasets``."""
    for var in ("RRJAX_DATA_DIR", "TFDS_DATA_DIR"):
        if os.environ.get(var):
            return Path(os.environ[var]).expanduser()
    return Path("~/tensorflow_datasets").expanduser()


def get_builder(name: str, *, data_dir: str | os.PathLike | None = None, **config: Any) -> tfds.core.DatasetBuilder:
    """The TFDS builder of dataset ``name`` for the given config keywords.

    Args:
      name: a key of :data:`DATASETS`.
      data_dir: where prepared datasets live (default :func:`default_data_dir`).
      **config: the builder's config fields (e.g. ``image_size=64, test_size=200`` for
        ``synthetic_images``, ``compression="c40"`` for ``faceforensics``).

    Returns:
      A ``tfds.core.DatasetBuilder`` (call ``download_and_prepare`` / ``as_data_source``).

    Raises:
      ValueError: unknown name or config field, or an invalid config value.
    """
    check_choice(name, DATASETS, name="name")
    cls = DATASETS[name]
    unknown = sorted(set(config) - set(cls.config_fields()))
    if unknown:
        raise ValueError(f"{name} has no config field(s) {unknown}; expected some of {list(cls.config_fields())}")
    return cls(data_dir=os.fspath(data_dir or default_data_dir()), config=cls.config_from(**config))
