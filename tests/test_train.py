"""Training: it learns, resumes exactly, exports, and is data-parallel without changing results."""

import json
import os
import pathlib
import subprocess
import sys
import textwrap

import flax.linen as nn
import jax
import numpy as np
import pytest

from rrjax import checkpoints, train
from rrjax.models.base import Detector
from tests.conftest import load_script

REPO = pathlib.Path(__file__).resolve().parents[1]


class ToyNet(nn.Module):
    width: int = 4
    batch_norm: bool = True
    dropout: float = 0.25

    @nn.compact
    def __call__(self, x, train: bool):
        x = (x - 0.5) / 0.5
        # No conv bias before BatchNorm (as in real detectors): BN cancels it, so its gradient
        # is zero up to rounding and Adam would blow that rounding noise up to lr-sized steps.
        x = nn.Conv(self.width, (3, 3), use_bias=not self.batch_norm)(x)
        if self.batch_norm:
            x = nn.BatchNorm(use_running_average=not train, momentum=0.9)(x)
        x = nn.relu(x).mean(axis=(1, 2))
        x = nn.Dropout(self.dropout, deterministic=not train)(x)
        return nn.Dense(2)(x)


def toy_detector(batch_norm=True, dropout=0.25):
    return Detector(
        name="toy",
        module=ToyNet(batch_norm=batch_norm, dropout=dropout),
        input_shape=(8, 8, 3),
        config=(("batch_norm", batch_norm), ("dropout", dropout)),
    )


def toy_data(n, seed):
    """Separable but not trivially: fakes' red channel is brighter on average, with overlap
    per pixel (U(0, .6) vs U(.3, .9)), so the net must learn to pool evidence. Two frames per video."""
    rng = np.random.default_rng(seed)
    y = np.repeat(rng.permutation(np.arange(n // 2) % 2), 2).astype(np.int32)
    x = rng.uniform(0.0, 0.6, (n, 8, 8, 3)).astype(np.float32)
    x[y == 1, :, :, 0] += 0.3
    return {"x": x, "y": y, "index": np.arange(n, dtype=np.int64), "video_id": np.arange(n, dtype=np.int64) // 2}


def batch_fn(data, batch_size, seed=0, fail_at=None):
    """``epoch -> batches`` in an order that depends only on (seed, epoch), like rrjax.data.batches.
    ``fail_at=(epoch, k)`` raises after k batches of that epoch (a simulated kill)."""
    n = data["y"].shape[0]

    def batches(epoch):
        order = np.random.default_rng([seed, epoch]).permutation(n)
        for k, i in enumerate(range(0, n, batch_size)):
            if fail_at == (epoch, k):
                raise KeyboardInterrupt("simulated interruption")
            idx = order[i : i + batch_size]
            yield {key: v[idx] for key, v in data.items()}

    return batches


def val_fn(data, batch_size):
    return lambda: batch_fn(data, batch_size)(0)


HP = dict(epochs=3, learning_rate=3e-2, weight_decay=5e-4, seed=1, log_every=2)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    det = toy_detector()
    work = tmp_path_factory.mktemp("reference")
    tr, va = toy_data(48, seed=0), toy_data(32, seed=1)
    result = train.train(det, batch_fn(tr, 16), val_fn(va, 16), work_dir=work, **HP)
    return det, result, work, tr, va


def test_training_learns_the_separable_toy_task(reference):
    det, result, work, _, _ = reference
    losses = [r["train"]["loss"] for r in result.history]
    assert losses[-1] < 0.75 * losses[0], losses
    val = result.history[-1]["val"]
    assert val["n"] == 32 and val["acc"] >= 0.9 and val["auc"] >= 0.95, val
    assert val["video"]["n"] == 16  # two frames per video
    assert result.step == 9 and result.epoch == 3  # 3 epochs x 48 / 16 batches
    on_disk = json.loads((work / "history.json").read_text())
    assert on_disk == result.history


def test_interrupted_run_resumes_to_the_same_weights(reference, tmp_path):
    det, ref, _, tr, va = reference
    work = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        train.train(det, batch_fn(tr, 16, fail_at=(2, 1)), val_fn(va, 16), work_dir=work, **HP)
    with pytest.raises(ValueError, match="already holds training state \\(epoch 2\\); pass resume=True"):
        train.train(det, batch_fn(tr, 16), val_fn(va, 16), work_dir=work, **HP)
    with pytest.raises(ValueError, match=r"holds a run with different \['learning_rate'\]"):
        train.train(det, batch_fn(tr, 16), val_fn(va, 16), work_dir=work, resume=True, **{**HP, "learning_rate": 1e-3})
    with pytest.raises(ValueError, match=r"holds a run with different \['run:dataset'\]"):
        train.train(det, batch_fn(tr, 16), val_fn(va, 16), work_dir=work, resume=True, run_info={"dataset": "other"},
                    **HP)
    resumed = train.train(det, batch_fn(tr, 16), val_fn(va, 16), work_dir=work, resume=True, **HP)
    assert resumed.step == ref.step == 9 and resumed.epoch == 3
    for a, b in zip(jax.tree_util.tree_leaves(resumed.variables), jax.tree_util.tree_leaves(ref.variables)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    strip = lambda h: [{k: v for k, v in r.items() if k != "seconds"} for r in h]
    assert strip(resumed.history) == strip(ref.history)


def test_export_records_provenance_and_restores_identical_logits(reference, tmp_path):
    det, result, _, _, va = reference
    test_metrics = train.evaluate(det, result.variables, val_fn(va, 10)())
    path = train.export(
        tmp_path / "toy", det, result,
        metadata={"dataset": "toy", "dataset_config": {"n": 48}, "command": "pytest"},
        test_metrics=test_metrics,
    )
    _, restored, meta = checkpoints.load(path, detector=det)
    x = va["x"]
    np.testing.assert_array_equal(np.asarray(det.apply(restored, x)), np.asarray(det.apply(result.variables, x)))
    assert meta["metrics"]["val"] == result.history[-1]["val"]
    assert meta["metrics"]["test"] == test_metrics
    # Batch size does not change predictions: the 10-per-batch evaluation equals the 16-per-batch one.
    assert test_metrics == result.history[-1]["val"]
    assert meta["training"]["weight_decay_mode"] == "l2" and meta["training"]["steps"] == 9
    assert meta["command"] == "pytest" and len(meta["history"]) == 3
    assert "opt_state" not in json.dumps(meta["arrays"])  # variables only


def test_train_is_create_train_state_then_train_epoch(reference):
    # The public pieces compose to what train does: the same first epoch, to the bit.
    from rrjax import train_state
    from rrjax.sharding import data_mesh

    det, ref, _, tr, _ = reference
    opt = train_state.OptimizerConfig(HP["learning_rate"], HP["weight_decay"], "l2")
    mesh = data_mesh(jax.local_devices())
    state = train_state.create_train_state(det, opt, HP["seed"], mesh)
    assert int(state.step) == int(state.epoch) == 0 and set(state.variables) == {"params", "batch_stats"}
    state, sums = train.train_epoch(state, batch_fn(tr, 16)(0), detector=det, optimizer=opt, mesh=mesh, epoch=0)
    assert int(state.step) == 3 and sums["n"] == 48
    assert sums["loss"] / sums["n"] == ref.history[0]["train"]["loss"]
    assert sums["correct"] / sums["n"] == ref.history[0]["train"]["acc"]


def test_init_variables_start_training_from_given_weights(reference, tmp_path):
    det, ref, _, tr, va = reference
    tuned = train.train(det, batch_fn(tr, 16), val_fn(va, 16), work_dir=tmp_path / "ft",
                        init_variables=ref.variables, **{**HP, "epochs": 1})
    # Starting from trained weights, the first epoch's loss is already near the reference's last.
    assert tuned.history[0]["train"]["loss"] < 0.8 * ref.history[0]["train"]["loss"]
    with pytest.raises(ValueError, match="init_variables do not match detector 'toy': missing batch_stats"):
        train.train(det, batch_fn(tr, 16), work_dir=tmp_path / "bad", init_variables={"params": ref.variables["params"]}, **HP)


def _torch_adam(w, grads, *, lr, wd, decoupled, b1=0.9, b2=0.999, eps=1e-8):
    """torch.optim.Adam / AdamW as written in PyTorch's documentation (the reference)."""
    m = v = np.zeros_like(w)
    for t, g in enumerate(grads, start=1):
        if decoupled:
            w = w - lr * wd * w
        else:
            g = g + wd * w
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        m_hat, v_hat = m / (1 - b1**t), v / (1 - b2**t)
        w = w - lr * m_hat / (np.sqrt(v_hat) + eps)
    return w


@pytest.mark.parametrize("mode", ["l2", "decoupled"])
def test_optimizer_matches_torch_adam_definitions(mode):
    w0 = np.array([1.0, -2.0, 0.5], np.float64)
    grads = [np.array([0.5, 0.1, -0.3]), np.array([0.4, -0.2, -0.1]), np.array([-0.1, 0.3, 0.2])]
    tx = train.make_optimizer(learning_rate=0.1, weight_decay=0.2, weight_decay_mode=mode)
    w = jax.numpy.asarray(w0, jax.numpy.float32)
    state = tx.init(w)
    for g in grads:
        upd, state = tx.update(jax.numpy.asarray(g, jax.numpy.float32), state, w)
        w = w + upd
    want = _torch_adam(w0, grads, lr=0.1, wd=0.2, decoupled=(mode == "decoupled"))
    other = _torch_adam(w0, grads, lr=0.1, wd=0.2, decoupled=(mode != "decoupled"))
    np.testing.assert_allclose(np.asarray(w), want, rtol=1e-5)
    assert np.abs(want - other).max() > 1e-2  # the two flavours really differ here


def test_pad_batch_repeats_rows_and_masks_them():
    arrays = {"x": np.arange(5.0)[:, None] * np.ones((1, 2)), "y": np.array([0, 1, 1, 0, 1])}
    padded, mask = train.pad_batch(arrays, 4)
    np.testing.assert_array_equal(padded["y"], [0, 1, 1, 0, 1, 0, 1, 1])
    np.testing.assert_array_equal(padded["x"][5:, 0], [0, 1, 2])
    np.testing.assert_array_equal(mask, [1, 1, 1, 1, 1, 0, 0, 0])
    same, mask1 = train.pad_batch(arrays, 5)
    np.testing.assert_array_equal(same["y"], arrays["y"]) and np.testing.assert_array_equal(mask1, np.ones(5))


def test_bad_arguments_and_batches_are_rejected(tmp_path):
    det = toy_detector()
    data = toy_data(8, seed=0)
    with pytest.raises(ValueError, match="epochs=0 is too small"):
        train.train(det, batch_fn(data, 4), epochs=0, work_dir=tmp_path / "a")
    with pytest.raises(ValueError, match="weight_decay_mode='adamw' is not valid; expected one of 'l2', 'decoupled'"):
        train.train(det, batch_fn(data, 4), epochs=1, work_dir=tmp_path / "a", weight_decay_mode="adamw")
    bright = {**data, "x": data["x"] * 2}
    with pytest.raises(ValueError, match=r"train_batches\(0\) batch\['x'\] has values in .*expected pixels in \[0, 1\]"):
        train.train(det, batch_fn(bright, 4), epochs=1, work_dir=tmp_path / "b")
    with pytest.raises(ValueError, match=r"expects input of shape \('N', 8, 8, 3\)"):
        train.train(det, batch_fn({**data, "x": data["x"][:, :4]}, 4), epochs=1, work_dir=tmp_path / "c")
    with pytest.raises(ValueError, match=r"train_batches\(0\) yielded no batches"):
        train.train(det, lambda epoch: iter(()), epochs=1, work_dir=tmp_path / "d")


_PARALLEL_SCRIPT = textwrap.dedent(
    """
    import json, sys, tempfile
    import jax, numpy as np
    from rrjax import train
    from tests.test_train import batch_fn, toy_data, toy_detector

    devs = jax.devices()
    assert len(devs) == 8, devs
    tmp = tempfile.mkdtemp()
    out = {}

    def run(det, data, bs, devices, name):
        res = train.train(det, batch_fn(data, bs), epochs=1, work_dir=f"{tmp}/{name}", devices=devices,
                          learning_rate=1e-2, seed=3, log_every=0)
        pred = train.predict(det, res.variables, batch_fn(data, bs)(0), devices=devices)
        return res, pred

    def diff(a, b):
        return max(float(np.max(np.abs(np.asarray(x) - np.asarray(y))))
                   for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)))

    # Full batches (32 = 2 x 16, divisible by 8) with BatchNorm and dropout: global-batch
    # statistics and partitionable dropout bits make 8 devices compute what 1 device does.
    det, data = toy_detector(), toy_data(32, seed=0)
    r8, p8 = run(det, data, 16, devs, "bn8")
    r1, p1 = run(det, data, 16, devs[:1], "bn1")
    out["devices_used"] = [len(jax.tree_util.tree_leaves(r.variables)[0].sharding.device_set) for r in (r8, r1)]
    out["bn_param_diff"] = diff(r8.variables, r1.variables)
    out["bn_loss"] = [r8.history[0]["train"]["loss"], r1.history[0]["train"]["loss"]]
    out["bn_logit_diff"] = float(np.max(np.abs(p8["logits"] - p1["logits"])))

    # One batch of 10 (padded to 16 on 8 devices), no BatchNorm: padding must not change anything.
    det, data = toy_detector(batch_norm=False), toy_data(10, seed=2)
    r8, p8 = run(det, data, 10, devs, "pad8")
    r1, p1 = run(det, data, 10, devs[:1], "pad1")
    out["pad_param_diff"] = diff(r8.variables, r1.variables)
    out["pad_loss"] = [r8.history[0]["train"]["loss"], r1.history[0]["train"]["loss"]]
    out["pad_n"] = [r8.history[0]["train"]["n"], r1.history[0]["train"]["n"]]
    out["pad_pred_n"] = [int(p8["logits"].shape[0]), int(p1["logits"].shape[0])]
    out["pad_logit_diff"] = float(np.max(np.abs(p8["logits"] - p1["logits"])))
    print("RESULT " + json.dumps(out))
    """
)


def test_data_parallel_on_8_devices_matches_1_device_and_padding_is_inert():
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8", "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, "-c", _PARALLEL_SCRIPT], cwd=REPO, env=env, capture_output=True, text=True, timeout=600
    )
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, proc.stderr[-3000:]
    out = json.loads(lines[-1][len("RESULT "):])
    assert out["devices_used"] == [8, 1], out
    assert out["bn_param_diff"] < 1e-5, out
    assert out["bn_loss"][0] == pytest.approx(out["bn_loss"][1], rel=1e-5), out
    assert out["bn_logit_diff"] < 1e-4, out
    assert out["pad_n"] == [10, 10] and out["pad_pred_n"] == [10, 10], out
    assert out["pad_loss"][0] == pytest.approx(out["pad_loss"][1], rel=1e-5), out
    assert out["pad_param_diff"] < 1e-5, out
    assert out["pad_logit_diff"] < 1e-5, out


@pytest.fixture(scope="module")
def script():
    """experiments/train.py as a module (absl flags are global: load it once per session)."""
    return load_script("train")


def test_script_trains_evaluates_and_exports_with_provenance(tmp_path, script):
    tr, va, te = toy_data(32, seed=0), toy_data(16, seed=1), toy_data(12, seed=2)

    def build(s):  # stands in for the registry/data wiring, which lives on other branches
        return script.Inputs(toy_detector(), batch_fn(tr, s.batch_size, seed=s.seed), val_fn(va, s.eval_batch_size), val_fn(te, 5))

    s = script.Settings(
        model="toy", dataset="toy_images", out_dir=tmp_path / "run", export_dir=tmp_path / "run" / "detector",
        model_kwargs={}, dataset_kwargs={"resolution": 8}, epochs=2, batch_size=16, eval_batch_size=16,
        learning_rate=3e-2, test_split="test", log_every=0,
    )
    command = "PYTHONPATH=. python experiments/train.py --model=toy --dataset=toy_images"
    summary = script.run(s, command=command, flag_values={"model": "toy"}, build=build)
    meta = checkpoints.read_metadata(summary["checkpoint"])
    assert meta["command"] == command and meta["flags"] == {"model": "toy"}
    assert meta["dataset"] == "toy_images" and meta["dataset_config"] == {"resolution": 8}
    assert meta["metrics"]["test"]["n"] == 12 and meta["metrics"]["val"]["n"] == 16
    assert summary["steps"] == 4 and (tmp_path / "run" / "history.json").is_file()
    with pytest.raises(ValueError, match="--export_dir=.* already exists; pass --overwrite_export"):
        script.run(s, command=command, build=build)


def test_script_validates_flags(script):
    from absl import flags

    assert script.parse_key_values(["width=8", "name=xception", "sizes=[1, 2]"], flag="model_config") == {
        "width": 8, "name": "xception", "sizes": [1, 2]}
    with pytest.raises(ValueError, match="--model_config='=3' is not key=value"):
        script.parse_key_values(["=3"], flag="model_config")
    base = ["train.py", "--model=meso4", "--dataset=synthetic_images", "--out_dir=/tmp/unused"]
    cases = [
        (["--model=nope"], "--model='nope' is not valid; expected one of"),
        (["--dataset=imagenet"], "--dataset='imagenet' is not valid; expected one of"),
        (["--epochs=0"], "--epochs=0 is invalid; expected an integer >= 1"),
        (["--learning_rate=0"], "--learning_rate=0.0 is invalid"),
        (["--image_size=128", "--model_config=image_size=256"], "--image_size=128 contradicts"),
        ([], None),
    ]
    for extra, match in cases:
        flags.FLAGS(base + extra)
        try:
            if match is None:
                s = script.settings_from_flags()
                assert s.export_dir == pathlib.Path("/tmp/unused/detector") and s.eval_batch_size == 32
            else:
                with pytest.raises(ValueError, match=match):
                    script.settings_from_flags()
        finally:
            flags.FLAGS.unparse_flags()


def test_divergence_is_reported_not_saved(tmp_path):
    det, data = toy_detector(), toy_data(8, seed=0)
    with pytest.raises(FloatingPointError, match="training diverged in epoch 1"):
        train.train(det, batch_fn(data, 2), epochs=1, work_dir=tmp_path, learning_rate=1e30)
    assert not (tmp_path / "history.json").exists()


def _train_proc(work, *extra):
    return subprocess.Popen([sys.executable, "-m", "tests.train_runner", str(work), *extra], cwd=REPO,
                            env={**os.environ, "JAX_PLATFORMS": "cpu"}, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)


def _final(work):
    with np.load(work / "final.npz") as z:
        return {k: z[k] for k in z.files}


def test_sigkill_at_any_moment_then_resume_gives_the_same_weights(tmp_path):
    """SIGKILL (no cleanup at all) twice, at different points of the run, then resume: the
    final weights and step count equal an uninterrupted run's."""
    import signal
    import time

    ref = tmp_path / "ref"
    ref.mkdir()
    p = _train_proc(ref)
    assert p.wait(timeout=300) == 0, p.stdout.read().decode()

    work = tmp_path / "killed"
    work.mkdir()
    # Kill as soon as epoch 1's state exists (the save may still be finishing), then, after a
    # resume, as soon as epoch 3's does: two different moments, chosen by progress, not time.
    for wanted, extra in (("1", ()), ("3", ("--resume",))):
        proc = _train_proc(work, *extra)
        start = time.time()
        while proc.poll() is None and time.time() - start < 240:
            if (work / "state" / wanted).exists():
                break
            time.sleep(0.02)
        assert proc.poll() is None, "training finished before it could be killed:\n" + proc.stdout.read().decode()
        proc.send_signal(signal.SIGKILL)
        assert proc.wait() == -signal.SIGKILL
    assert not (work / "final.npz").exists()
    proc = _train_proc(work, "--resume")
    log = proc.communicate(timeout=300)[0].decode()
    assert proc.returncode == 0, log
    got, want = _final(work), _final(ref)
    assert set(got) == set(want) and int(got["step"]) == int(want["step"]) == 36
    for k in want:
        np.testing.assert_array_equal(got[k], want[k], err_msg=k)
