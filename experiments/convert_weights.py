r"""Turns a PyTorch detector checkpoint (.pth) into an rrjax checkpoint.

  PYTHONPATH=. python experiments/convert_weights.py --model=xception \
      --pth=xception_best.pth --out=checkpoints/xception_dfb --layout=deepfakebench

The file is read with ``torch.load(..., weights_only=True)`` (tensors only, never arbitrary
pickles) and imported all-or-nothing by ``rrjax.models.convert_file``; layouts and accepted
wrappers are documented in ``rrjax.models.from_torch``. Model keywords: ``--image_size``,
``--num_frames`` / ``--aggregation`` (video entries), or any ``--config=key=value``.
"""

from __future__ import annotations

import hashlib

from absl import flags

from rrjax import cli, models
from rrjax.cli import fail, parse_key_values, script_command

FLAGS = flags.FLAGS
flags.DEFINE_enum("model", None, sorted(n for n in models.MODELS if models.torch_layouts(n)), "Registry name.")
flags.DEFINE_string("pth", None, "PyTorch state dict file (.pth / .pt).")
flags.DEFINE_string("out", None, "Output rrjax checkpoint directory.")
flags.DEFINE_string("layout", None, "PyTorch layout (default: the model's first, see torch_layouts).")
flags.DEFINE_integer("image_size", None, "Input side in pixels (default: the model's).")
flags.DEFINE_integer("num_frames", None, "Frames per clip (video entries).")
flags.DEFINE_string("aggregation", None, "Frame aggregation of video entries: mean or confident.")
flags.DEFINE_multi_string("config", [], "Extra model keyword as key=value (value parsed as JSON).")
flags.DEFINE_bool("overwrite", False, "Replace an existing checkpoint at --out.")
flags.mark_flags_as_required(["model", "pth", "out"])


def _model_config() -> dict:
    config = {k: getattr(FLAGS, k) for k in ("image_size", "num_frames", "aggregation") if getattr(FLAGS, k) is not None}
    try:
        extra = parse_key_values(FLAGS.config, flag="config")
    except ValueError as e:
        fail(str(e))
    return {**config, **extra}


def main(argv: list[str]) -> None:
    del argv
    from rrjax import checkpoints  # imported late: only the save step needs orbax

    try:
        detector, variables = models.convert_file(FLAGS.model, FLAGS.pth, layout=FLAGS.layout, **_model_config())
    except ValueError as e:  # missing file, unsafe pickle, missing/unexpected keys, shape mismatches
        fail(str(e))
    with open(FLAGS.pth, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    layout = FLAGS.layout or models.torch_layouts(FLAGS.model)[0]
    metadata = {
        "source": {"pth": FLAGS.pth, "sha256": digest, "layout": layout},
        "command": script_command(),
        "parameters": detector.param_count(variables),
    }
    try:
        path = checkpoints.save(FLAGS.out, detector, variables, metadata=metadata, overwrite=FLAGS.overwrite)
    except ValueError as e:  # an existing --out without --overwrite
        fail(str(e))
    print(f"{FLAGS.model}: {metadata['parameters']:,} parameters from {FLAGS.pth} ({layout}) -> {path}")


if __name__ == "__main__":
    cli.run(main)
