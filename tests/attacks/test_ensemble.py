"""Ensembles: the worst case per metric over members, member attribution, and bad input."""

from __future__ import annotations

import jax
import numpy as np
import pytest

import rrjax
from rrjax import attacks
from rrjax.attacks.ensemble import combine


def test_combine_by_hand():
    # 2 members, 4 samples. Sample 0: broken by member 1 only; 1: by both (member 0 first);
    # 2: nobody; 3: member 1's output is NaN -> no verdict for the ensemble.
    correct = np.array([[1, 0, 1, 1], [0, 0, 1, 1]], bool)
    shift = np.array([[0.1, 0.7, 0.2, 0.3], [0.4, 0.5, 0.1, 0.0]], np.float32)
    same = np.array([[1, 0, 1, 1], [0, 1, 1, 1]], bool)
    valid = np.array([[1, 1, 1, 1], [1, 1, 1, 0]], bool)
    w = combine(correct, shift, same, valid)
    np.testing.assert_array_equal(w["correct"], [False, False, True, False])
    np.testing.assert_allclose(w["shift"], [0.4, 0.7, 0.2, 0.0])
    np.testing.assert_array_equal(w["same_label"], [False, False, True, False])
    np.testing.assert_array_equal(w["valid"], [True, True, True, False])
    np.testing.assert_array_equal(w["ra_member"], [1, 0, -1, -1])
    np.testing.assert_array_equal(w["rr_member"], [1, 0, 0, -1])


@pytest.fixture
def mini():
    d = attacks.register_ensemble("mini_ens", [("fgsm", "fgsm", {}), ("pgd", "pgd", {"steps": 5}),
                                               ("shift", "pgd", {"steps": 5, "loss": "prob_shift"})], overwrite=True)
    yield d
    attacks.ATTACKS.pop("mini_ens", None)


def test_ensemble_is_the_worst_case_of_its_members_in_evaluate(linear, mini):
    rng = np.random.default_rng(0)
    x = rng.uniform(0.1, 0.9, size=(96, 24)).astype(np.float32)
    y = linear.labels(x)
    kw = dict(eps=[0.0, 0.02, 0.05, 0.1], tolerance=np.linspace(0, 1, 11), key=jax.random.key(1))
    res = rrjax.evaluate(linear.logits_fn, x, y, attack="mini_ens", **kw)
    alone = {"fgsm": rrjax.evaluate(linear.logits_fn, x, y, attack="fgsm", **kw),
             "pgd": rrjax.evaluate(linear.logits_fn, x, y, attack="pgd", steps=5, **kw),
             "shift": rrjax.evaluate(linear.logits_fn, x, y, attack="pgd", steps=5, loss="prob_shift", **kw)}
    assert list(res.members) == ["fgsm", "pgd", "shift"]
    for label, ev in alone.items():  # each member is exactly its standalone run (same key)
        np.testing.assert_array_equal(res.members[label].correct, ev.correct)
        np.testing.assert_array_equal(res.members[label].shift, ev.shift)
        assert np.all(res.correct.sum(-1) <= ev.correct.sum(-1))
        assert np.all(res.robust.sum(-1) <= ev.robust.sum(-1))
    np.testing.assert_array_equal(res.correct, np.all([ev.correct for ev in alone.values()], axis=0))
    np.testing.assert_array_equal(res.shift, np.max([ev.shift for ev in alone.values()], axis=0))
    # Attribution: rr_member names a member whose shift is the worst case; ra_member the first
    # member (in order) that broke the sample.
    shifts = np.stack([ev.shift for ev in alone.values()])
    np.testing.assert_array_equal(np.take_along_axis(shifts, res.rr_member[None], 0)[0], res.shift)
    wrong = ~np.stack([ev.correct for ev in alone.values()])
    first = np.where(wrong.any(0), np.argmax(wrong, 0), -1)
    np.testing.assert_array_equal(res.ra_member, first)
    broken = ~res.correct
    np.testing.assert_array_equal(res.ra_member >= 0, broken)


@pytest.mark.parametrize("kwargs, message", [
    (dict(members="apgd-ce;deepfool"), "valid members: apgd-ce, apgd-margin, apgd-prob_shift, square"),
    (dict(members=[]), "an ensemble needs at least one member"),
    (dict(version="slow"), "version='slow' is not valid"),
    (dict(queries=0), "queries=0 is too small"),
])
def test_autoattack_bad_configurations_are_named(kwargs, message):
    with pytest.raises(ValueError) as e:
        attacks.resolve_hparams("autoattack", **kwargs)
    assert message in str(e.value)


def test_register_ensemble_errors():
    with pytest.raises(ValueError, match="has no members"):
        attacks.register_ensemble("empty_ens", [])
    with pytest.raises(ValueError, match="unknown attack 'nope'"):
        attacks.register_ensemble("bad_ens", [("a", "nope", {})])
    with pytest.raises(ValueError, match="repeats member labels"):
        attacks.register_ensemble("dup_ens", [("a", "fgsm", {}), ("a", "pgd", {})])
