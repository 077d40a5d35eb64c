r"""Trains a detector on a dataset and exports an rrjax checkpoint with its provenance.

Example (the synthetic image data, Meso4)::

  PYTHONPATH=. python experiments/train.py --model=meso4 --dataset=synthetic_images \
      --epochs=10 --batch_size=32 --out_dir=runs/meso4

Writes ``<out_dir>/state/`` (resumable training state, one orbax checkpoint per epoch),
``<out_dir>/history.json`` (per-epoch metrics) and the exported detector checkpoint
``<export_dir>`` (default ``<out_dir>/detector``) whose sidecar records the dataset, this exact
command, every flag value, and the final validation and test metrics. ``--resume`` continues an
interrupted run from its last completed epoch.

All training logic lives in ``rrjax.train``; this script parses flags, builds the detector and
the batch callables (``build_inputs``, the only place that touches ``rrjax.models`` and
``rrjax.data``), and calls the library.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import sys
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from absl import flags, logging

from rrjax import cli, train
from rrjax.cli import fail, parse_key_values, script_command

FLAGS = flags.FLAGS
flags.DEFINE_string("model", None, "Registry name of the detector (rrjax.models.MODELS).")
flags.DEFINE_string("dataset", None, "Dataset name (rrjax.data).")
flags.DEFINE_string("data_dir", None, "Where prepared datasets live (tfds data_dir).")
flags.DEFINE_string("manual_dir", None, "Where manually downloaded raw data lives (real datasets).")
flags.DEFINE_multi_string("dataset_config", [], "Dataset builder option as key=value (JSON value); repeatable.")
flags.DEFINE_multi_string("model_config", [], "Model factory option as key=value (JSON value); repeatable.")
flags.DEFINE_integer("image_size", None, "Input height/width; passed to the model factory when set.")
flags.DEFINE_integer("num_frames", None, "Frames per clip for video detectors; passed to the model factory when set.")
flags.DEFINE_integer("epochs", 10, "Number of training epochs.")
flags.DEFINE_integer("batch_size", 32, "Global training batch size (split over all local devices).")
flags.DEFINE_integer("eval_batch_size", None, "Evaluation batch size (default: --batch_size).")
flags.DEFINE_float("learning_rate", 2e-4, "Adam learning rate (DeepfakeBench: 2e-4).")
flags.DEFINE_float("weight_decay", 5e-4, "Weight decay (DeepfakeBench: 5e-4).")
flags.DEFINE_enum("weight_decay_mode", "l2", list(train.WEIGHT_DECAY_MODES),
                  "l2: torch Adam / DeepfakeBench; decoupled: AdamW.")
flags.DEFINE_integer("seed", 0, "Seed for initialisation, dropout and the data order.")
flags.DEFINE_integer("max_train_examples", None, "Train on a fixed random subset of this many examples.")
flags.DEFINE_integer("max_eval_examples", None, "Evaluate on a fixed random subset of this many examples.")
flags.DEFINE_string("val_split", "validation", "Split evaluated after every epoch.")
flags.DEFINE_string("test_split", "test", "Split evaluated once at the end ('' to skip).")
flags.DEFINE_string("out_dir", None, "Run directory (training state and history).")
flags.DEFINE_string("export_dir", None, "Detector checkpoint directory (default: <out_dir>/detector).")
flags.DEFINE_bool("resume", False, "Continue the run in --out_dir from its last completed epoch.")
flags.DEFINE_bool("overwrite_export", False, "Replace an existing checkpoint at --export_dir.")
flags.DEFINE_integer("log_every", 50, "Log the running training loss every this many steps.")


@dataclasses.dataclass(frozen=True)
class Settings:
    """Validated flag values (plain data, so the run can be driven without absl flags)."""

    model: str
    dataset: str
    out_dir: pathlib.Path
    export_dir: pathlib.Path
    model_kwargs: dict
    dataset_kwargs: dict
    data_dir: str | None = None
    manual_dir: str | None = None
    epochs: int = 10
    batch_size: int = 32
    eval_batch_size: int = 32
    learning_rate: float = 2e-4
    weight_decay: float = 5e-4
    weight_decay_mode: str = "l2"
    seed: int = 0
    max_train_examples: int | None = None
    max_eval_examples: int | None = None
    val_split: str = "validation"
    test_split: str = ""
    resume: bool = False
    overwrite_export: bool = False
    log_every: int = 50


@dataclasses.dataclass(frozen=True)
class Inputs:
    """What training needs from the outside world."""

    detector: Any
    train_batches: Callable[[int], Iterable[dict]]
    val_batches: Callable[[], Iterable[dict]] | None
    test_batches: Callable[[], Iterable[dict]] | None


def _positive(name: str, value: int | None, *, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if value is None or value < 1:
        raise ValueError(f"--{name}={value} is invalid; expected an integer >= 1")


def settings_from_flags() -> Settings:
    """Validates the flags on the host and returns them as ``Settings`` (ValueError on misuse)."""
    for name in ("model", "dataset", "out_dir"):
        if not getattr(FLAGS, name):
            raise ValueError(f"--{name} is required")
    from rrjax import data, models  # imported here: the names are checked before any work

    for flag, value, valid in (("model", FLAGS.model, models.MODELS), ("dataset", FLAGS.dataset, data.DATASETS)):
        if value not in valid:
            raise ValueError(f"--{flag}={value!r} is not valid; expected one of {', '.join(sorted(valid))}")
    for name in ("epochs", "batch_size"):
        _positive(name, getattr(FLAGS, name))
    for name in ("eval_batch_size", "image_size", "num_frames", "max_train_examples", "max_eval_examples"):
        _positive(name, getattr(FLAGS, name), allow_none=True)
    if not FLAGS.learning_rate > 0:
        raise ValueError(f"--learning_rate={FLAGS.learning_rate} is invalid; expected a number > 0")
    if not FLAGS.weight_decay >= 0:
        raise ValueError(f"--weight_decay={FLAGS.weight_decay} is invalid; expected a number >= 0")
    if FLAGS.seed < 0:
        raise ValueError(f"--seed={FLAGS.seed} is invalid; expected an integer >= 0")
    if not FLAGS.val_split:
        raise ValueError("--val_split is empty; training evaluates on a validation split every epoch")
    model_kwargs = parse_key_values(FLAGS.model_config, flag="model_config")
    for name in ("image_size", "num_frames"):
        value = getattr(FLAGS, name)
        if value is not None:
            if name in model_kwargs and model_kwargs[name] != value:
                raise ValueError(f"--{name}={value} contradicts --model_config={name}={model_kwargs[name]}")
            model_kwargs[name] = value
    out_dir = pathlib.Path(FLAGS.out_dir)
    return Settings(
        model=FLAGS.model,
        dataset=FLAGS.dataset,
        out_dir=out_dir,
        export_dir=pathlib.Path(FLAGS.export_dir) if FLAGS.export_dir else out_dir / "detector",
        model_kwargs=model_kwargs,
        dataset_kwargs=parse_key_values(FLAGS.dataset_config, flag="dataset_config"),
        data_dir=FLAGS.data_dir,
        manual_dir=FLAGS.manual_dir,
        epochs=FLAGS.epochs,
        batch_size=FLAGS.batch_size,
        eval_batch_size=FLAGS.eval_batch_size or FLAGS.batch_size,
        learning_rate=FLAGS.learning_rate,
        weight_decay=FLAGS.weight_decay,
        weight_decay_mode=FLAGS.weight_decay_mode,
        seed=FLAGS.seed,
        max_train_examples=FLAGS.max_train_examples,
        max_eval_examples=FLAGS.max_eval_examples,
        val_split=FLAGS.val_split,
        test_split=FLAGS.test_split,
        resume=FLAGS.resume,
        overwrite_export=FLAGS.overwrite_export,
        log_every=FLAGS.log_every,
    )


# --------------------------------------------------------------------------- wiring
# The only code that depends on rrjax.models and rrjax.data.


class _Subset:
    """A fixed subset of a random-access source (``len`` and ``[i]``), chosen once from the seed."""

    def __init__(self, source: Any, size: int, seed: int):
        from rrjax.data import subset_indices

        self._source = source
        self._idx = subset_indices(len(source), size, seed)

    def __len__(self) -> int:
        return int(self._idx.shape[0])

    def __getitem__(self, i: int) -> Any:
        return self._source[int(self._idx[i])]

    def __getitems__(self, indices: Sequence[int]) -> list[Any]:
        return [self[i] for i in indices]


def build_inputs(s: Settings) -> Inputs:
    """Builds the detector and the batch callables from the registries."""
    from rrjax import data, models

    detector = models.get_model(s.model, **s.model_kwargs)
    image_size = int(detector.input_shape[-3])

    def source(split: str, limit: int | None) -> Any:
        src = data.load(s.dataset, split, data_dir=s.data_dir, manual_dir=s.manual_dir, **s.dataset_kwargs)
        return src if limit is None else _Subset(src, limit, s.seed)

    train_src = source("train", s.max_train_examples)
    val_src = source(s.val_split, s.max_eval_examples)
    test_src = source(s.test_split, s.max_eval_examples) if s.test_split else None

    def train_batches(epoch: int) -> Iterable[dict]:
        # Full batches only: one compiled shape, and no padded rows in BatchNorm's batch statistics.
        return data.batches(train_src, s.batch_size, shuffle=True, seed=s.seed, epoch=epoch, image_size=image_size,
                            drop_remainder=True)

    def eval_batches(src: Any) -> Callable[[], Iterable[dict]]:
        return lambda: data.batches(src, s.eval_batch_size, shuffle=False, seed=s.seed, epoch=0, image_size=image_size)

    return Inputs(
        detector=detector,
        train_batches=train_batches,
        val_batches=eval_batches(val_src),
        test_batches=eval_batches(test_src) if test_src is not None else None,
    )


# --------------------------------------------------------------------------- run


def run(
    s: Settings,
    *,
    command: str,
    flag_values: dict[str, Any] | None = None,
    build: Callable[[Settings], Inputs] = build_inputs,
) -> dict[str, Any]:
    """Trains, evaluates on the test split and exports; returns the exported sidecar's summary."""
    inputs = build(s)
    detector = inputs.detector
    if s.export_dir.exists() and not (s.overwrite_export or s.resume):
        raise ValueError(
            f"--export_dir={str(s.export_dir)!r} already exists; pass --overwrite_export to replace "
            "it or choose another directory"
        )
    result = train.train(
        detector,
        inputs.train_batches,
        inputs.val_batches,
        epochs=s.epochs,
        work_dir=s.out_dir,
        learning_rate=s.learning_rate,
        weight_decay=s.weight_decay,
        weight_decay_mode=s.weight_decay_mode,
        seed=s.seed,
        resume=s.resume,
        log_every=s.log_every,
        run_info={"dataset": s.dataset, "dataset_config": s.dataset_kwargs, "batch_size": s.batch_size,
                  "max_train_examples": s.max_train_examples},
    )
    test_metrics = None
    if inputs.test_batches is not None:
        test_metrics = train.evaluate(detector, result.variables, inputs.test_batches())
        logging.info("test metrics: %s", json.dumps(test_metrics))
    path = train.export(
        s.export_dir,
        detector,
        result,
        metadata={
            "dataset": s.dataset,
            "dataset_config": s.dataset_kwargs,
            "data_pipeline": {
                "splits": {"train": "train", "val": s.val_split, "test": s.test_split or None},
                "max_train_examples": s.max_train_examples,
                "max_eval_examples": s.max_eval_examples,
                "batch_size": s.batch_size,
                "eval_batch_size": s.eval_batch_size,
            },
            "command": command,
            "flags": flag_values or {},
        },
        test_metrics=test_metrics,
        overwrite=s.overwrite_export or s.resume,
    )
    summary = {
        "checkpoint": str(path),
        "steps": result.step,
        "val": result.history[-1].get("val"),
        "test": test_metrics,
    }
    logging.info("exported %s", json.dumps(summary))
    return summary


def main(argv: Sequence[str]) -> None:
    try:
        settings = settings_from_flags()
    except ValueError as err:
        fail(str(err))
    module_flags = {f.name: f.value for f in FLAGS.get_key_flags_for_module(sys.argv[0])}
    try:
        summary = run(settings, command=script_command(), flag_values=module_flags)
    except ValueError as err:  # bad model/dataset config, a mismatching run to resume, ...
        fail(str(err))
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    cli.run(main)
