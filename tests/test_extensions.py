"""Extension points: an attack and a detector registered from a module outside rrjax
(tests/extensions/my_research.py, the README's example) work by name in ``rrjax.evaluate`` and
in ``experiments/sweep.py --extra_modules=...``, with the same records machinery as built-ins."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import jax
import numpy as np
import pytest

import rrjax
from rrjax import attacks, checkpoints, models, records

REPO = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def my_research():
    """The user module, imported (and so registered) for each test and unregistered after it, so
    the registries other tests see in this process hold the built-ins only."""
    import importlib

    module = importlib.reload(importlib.import_module("tests.extensions.my_research"))
    yield module
    attacks.ATTACKS.pop("random_sign", None)
    models.MODELS.pop("linear_detector", None)


def test_registered_attack_runs_by_name_in_evaluate(my_research):
    det = models.get_model("linear_detector", image_size=8)
    variables = det.init(jax.random.key(0))
    x = np.random.default_rng(0).uniform(size=(32, 8, 8, 3)).astype(np.float32)
    y = np.asarray(det.apply(variables, x).argmax(-1))
    eps = np.array([0.0, 0.05, 0.3], np.float32)
    res = rrjax.evaluate(det.logits_fn(variables), x, y, attack="random_sign", fraction=0.5, eps=eps,
                         tolerance=[0.0, 0.1], key=jax.random.key(1))
    # The same attack called directly with the same key: evaluate adds nothing and loses nothing.
    x_adv = my_research.random_sign(det.logits_fn(variables), x, y, eps, key=jax.random.key(1), fraction=0.5)
    direct = np.asarray(det.apply(variables, x_adv.reshape((-1,) + x.shape[1:])).argmax(-1)).reshape(3, -1) == y
    np.testing.assert_allclose(res.ra, direct.mean(-1))
    assert res.ra[0] == 1.0 and res.ra[2] < 1.0
    assert attacks.attack_norm("random_sign", {"fraction": 0.5}) == "linf"  # the safe default
    assert attacks.resolve_hparams("random_sign") == {"fraction": 1.0}


@pytest.mark.parametrize("call, message", [
    (lambda m: attacks.resolve_hparams("random_sign", fractoin=0.5), "has no hyperparameter(s) ['fractoin']"),
    (lambda m: attacks.resolve_hparams("random_sign", fraction=2.0), "fraction=2.0; expected a share"),
    (lambda m: attacks.register("pgd", m.random_sign), "built into rrjax"),
    (lambda m: attacks.register("random_sign", m.random_sign), "already registered"),
    (lambda m: attacks.register("bad name", m.random_sign), "must be a Python identifier"),
    (lambda m: attacks.register("two_args", lambda logits_fn, x: x), "attack contract"),
    (lambda m: attacks.register("no_key", lambda logits_fn, x, y, eps: x), "attack contract"),
    (lambda m: models.register("meso4", m.linear_detector), "built into rrjax"),
    (lambda m: models.register("linear_detector", m.linear_detector), "already registered"),
    (lambda m: models.register("x", m.linear_detector, torch_layouts=("a",)), "together"),
])
def test_registration_errors_are_named(call, message, my_research):
    with pytest.raises(ValueError) as e:
        call(my_research)
    assert message in str(e.value)


def _sweep(tmp_path, *args):
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(REPO)}
    common = [f"--data_dir={tmp_path / 'data'}", "--dataset_config=image_size=32", "--eps=0,0.1",
              "--tolerance=0,0.5", f"--out_dir={tmp_path / 'out'}", "--progress=false", "--figures=false"]
    return subprocess.run([sys.executable, str(REPO / "experiments" / "sweep.py"), *common, *args],
                          capture_output=True, text=True, cwd=REPO, env=env, timeout=600)


def test_registered_attack_detector_and_dataset_in_the_sweep_script(tmp_path):
    """All three extension points at once: a user's attack, detector and dataset by name."""
    det = models.get_model("linear_detector", image_size=32)
    ckpt = checkpoints.save(tmp_path / "lin", det, det.init(jax.random.key(0)))
    res = _sweep(tmp_path, "--extra_modules=tests.extensions.my_research,tests.extensions.toy_dataset",
                 f"--models={ckpt}", "--attacks=fgsm,random_sign(fraction=0.5)", "--dataset=toy_images",
                 "--dataset_config=num_images=6")
    assert res.returncode == 0, res.stderr[-3000:]
    rows = records.load_records(tmp_path / "out")
    mine = [r for r in rows if r["attack"] == "random_sign"]
    assert len(mine) == 2 * 2 and {r["model"] for r in rows} == {"linear_detector"}
    assert {r["dataset"] for r in rows} == {"toy_images"} and {r["n"] for r in rows} == {6}
    assert all(r["attack_params"] == {"fraction": 0.5} and r["threat_norm"] == "linf" for r in mine)
    assert next(r for r in mine if r["eps"] == 0.0)["ra"] == next(r for r in rows if r["eps"] == 0.0)["clean_accuracy"]
    # Without the module the names are unknown: one line, exit status 2, nothing written.
    bad = _sweep(tmp_path / "b", f"--models={ckpt}", "--attacks=random_sign", "--dataset=synthetic_images")
    assert bad.returncode == 2 and "unknown" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "b" / "out").exists()
    missing = _sweep(tmp_path / "c", "--extra_modules=tests.extensions.no_such_module", f"--models={ckpt}",
                     "--dataset=synthetic_images")
    assert missing.returncode == 2 and "cannot import 'tests.extensions.no_such_module'" in missing.stderr
