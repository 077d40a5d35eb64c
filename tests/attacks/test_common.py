"""Host-side validation of attack inputs: every class of bad input gets a named message."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rrjax.attacks import ATTACKS, cw_l2, fgsm, get_attack, pgd

X = np.full((4, 6), 0.5, np.float32)
Y = np.array([0, 1, 0, 1], np.int32)
KEY = jax.random.key(0)


def f2(x):
    return jnp.stack([jnp.zeros(len(x)), x.reshape(len(x), -1).sum(-1) - 3.0], -1)


CASES = [
    (dict(x=X * 3), "x has values in [1.5, 1.5]; expected pixels in [0, 1]"),
    (dict(x=np.where(X > 0, np.nan, X)), "x contains NaN or inf"),
    (dict(x=(X * 255).astype(np.uint8)), "x has dtype uint8; expected floating pixels in [0, 1] (uint8 images: divide by 255)"),
    (dict(x=X[0]), "x has shape (6,) (rank 1)"),
    (dict(x=X[:0], y=Y[:0]), "x is an empty batch"),
    (dict(y=np.array([0, 1, 2, 1])), "y has labels in [0, 2]; expected values in {0, 1}"),
    (dict(y=Y[:3]), "y has shape (3,); expected (4,)"),
    (dict(y=Y.astype(np.float32) + 0.5), "y has non-integer values"),
    (dict(eps=-0.1), "eps has value -0.1 < 0"),
    (dict(eps=[0.1, np.inf]), "eps contains NaN or inf"),
    (dict(eps=[[0.1]]), "eps has shape (1, 1); expected a scalar or a 1-D grid"),
    (dict(eps=[]), "eps is empty"),
    (dict(logits_fn=lambda x: x.sum(-1, keepdims=True)), "expected logits [4, C] with C >= 2"),
    (dict(logits_fn=lambda x: x.reshape(2, -1)), "expected logits [4, C]"),
    (dict(logits_fn="model"), "logits_fn must be callable"),
    (dict(key=None), "key is required"),
    (dict(key=np.arange(3)), "expected a PRNG key"),
    (dict(key=jax.random.split(KEY, 3)), "expected a single key or (4,) keys"),
]


@pytest.mark.parametrize("attack", [fgsm, pgd, cw_l2], ids=["fgsm", "pgd", "cw_l2"])
@pytest.mark.parametrize("override, message", CASES, ids=[c[1][:30] for c in CASES])
def test_bad_input_gets_a_clear_message(attack, override, message):
    args = dict(logits_fn=f2, x=X, y=Y, eps=0.1, key=KEY)
    args.update(override)
    with pytest.raises(ValueError) as e:
        attack(args["logits_fn"], args["x"], args["y"], args["eps"], key=args["key"])
    assert message in str(e.value)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(norm="l1"), "norm='l1' is not valid; expected one of 'linf', 'l2'"),
        (dict(loss="hinge"), "loss='hinge' is not valid"),
        (dict(steps=-1), "steps=-1 is too small"),
        (dict(steps=2.5), "steps must be an integer"),
        (dict(restarts=0), "restarts=0 is too small"),
        (dict(step_size=0.1, rel_step_size=0.2), "not both"),
        (dict(loss="prob_shift", target=Y), "has no target class"),
        (dict(confidence=1.0), "applies to loss='margin' only"),
        (dict(target=[0, 1]), "target has shape (2,); expected (4,)"),
        (dict(shift_norm="l7", loss="prob_shift"), "shift_norm='l7' is not valid"),
    ],
)
def test_bad_hyperparameters(kwargs, message):
    with pytest.raises(ValueError) as e:
        pgd(f2, X, Y, 0.1, key=KEY, **kwargs)
    assert message in str(e.value)


def test_unknown_attack_lists_valid_names():
    with pytest.raises(ValueError) as e:
        get_attack("deepfool")
    for name in ATTACKS:
        assert name in str(e.value)


def test_labels_beyond_the_models_classes():
    three = lambda x: jnp.zeros((len(x), 3))  # noqa: E731
    pgd(three, X, np.array([0, 1, 2, 1]), 0.1, key=KEY, steps=1)  # fine with 3 classes
    with pytest.raises(ValueError, match=r"expected values in \[0, 2\]"):
        pgd(three, X, np.array([0, 1, 3, 1]), 0.1, key=KEY, steps=1)
