"""Parity with torchattacks 3.5.1 (the reference implementation users would otherwise loop over).

FGSM and PGD (random start off, absolute step size = torchattacks' ``alpha``) on the same
weights and inputs: a linear model must give the same adversarial inputs element-wise, and
Meso4 (weights imported from the independent PyTorch reference module) the same robust
accuracy within one sample. APGD and the Square Attack draw random starts and windows, so on
the Meso4 twin their robust accuracy must lie in the 95% confidence interval of torchattacks'.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torchattacks

from rrjax import models
from rrjax.attacks import apgd, fgsm, pgd, square
from rrjax.metrics import binomial_ci
from tests.models import torch_refs as TR

torch.manual_seed(0)


class TorchLinear(torch.nn.Module):
    def __init__(self, w, b):
        super().__init__()
        self.w = torch.nn.Parameter(torch.tensor(w, dtype=torch.float32))
        self.b = torch.nn.Parameter(torch.tensor(b, dtype=torch.float32))

    def forward(self, x):
        s = x.reshape(len(x), -1) @ self.w + self.b
        return torch.stack([torch.zeros_like(s), s], -1)


class Pixels(torch.nn.Module):
    """NCHW pixels in [0, 1] -> the reference network's normalised input (as our models do)."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net((x - 0.5) / 0.5)


def _torch_attack(attack, x, y):
    return attack(torch.tensor(x), torch.tensor(y, dtype=torch.long)).detach().numpy()


@pytest.fixture
def linear_problem(linear):
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, size=(64, 24)).astype(np.float32)
    return linear, x, linear.labels(x), TorchLinear(linear.w, linear.b).eval()


def test_fgsm_matches_torchattacks_elementwise(linear_problem):
    linear, x, y, net = linear_problem
    for eps in (0.01, 0.05, 0.2):
        ours = np.asarray(fgsm(linear.logits_fn, x, y, eps, key=jax.random.key(0)))
        theirs = _torch_attack(torchattacks.FGSM(net, eps=eps), x, y)
        np.testing.assert_allclose(ours, theirs, atol=1e-6)


def test_pgd_matches_torchattacks_elementwise(linear_problem):
    linear, x, y, net = linear_problem
    for eps, alpha, steps in ((0.03, 0.01, 10), (0.2, 0.05, 7)):
        ours = np.asarray(pgd(linear.logits_fn, x, y, eps, key=jax.random.key(0), steps=steps, step_size=alpha,
                              random_start=False))
        theirs = _torch_attack(torchattacks.PGD(net, eps=eps, alpha=alpha, steps=steps, random_start=False), x, y)
        np.testing.assert_allclose(ours, theirs, atol=1e-6)


@pytest.fixture(scope="module")
def meso4_twin():
    """Meso4 (64 px, random weights) in both frameworks, inputs it classifies, and RA in each."""
    size = 64
    ref = TR.randomize_(TR.Meso4Ref(size), seed=3).eval()
    net = Pixels(ref).eval()
    det = models.get_model("meso4", image_size=size, batchnorm="shared")
    variables = models.from_torch("meso4", ref.state_dict(), image_size=size, batchnorm="shared")
    logits_fn = det.logits_fn(variables)
    x = np.random.default_rng(1).uniform(size=(32, size, size, 3)).astype(np.float32)
    y = np.asarray(jnp.argmax(logits_fn(jnp.asarray(x)), -1)).astype(np.int32)  # clean accuracy 1

    def correct_theirs(attack, x=x, y=y):
        adv = attack(torch.from_numpy(x).permute(0, 3, 1, 2).contiguous(), torch.tensor(y, dtype=torch.long))
        with torch.no_grad():
            return net(adv).argmax(-1).numpy() == y

    def ra_ours(x_adv):
        return (np.asarray(jnp.argmax(logits_fn(x_adv), -1)) == y).mean()

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # on a shared CPU one thread is several times faster here
    yield logits_fn, net, x, y, (lambda attack: correct_theirs(attack).mean()), correct_theirs, ra_ours
    torch.set_num_threads(threads)


def test_meso4_robust_accuracy_matches_torchattacks(meso4_twin):
    logits_fn, net, x, y, ra_theirs, _, ra_ours = meso4_twin
    for eps in (0.002, 0.008):
        assert ra_theirs(lambda xx, yy: xx) == 1.0  # the twin agrees on clean inputs
        ra = ra_ours(fgsm(logits_fn, x, y, eps, key=jax.random.key(0)))
        assert abs(ra - ra_theirs(torchattacks.FGSM(net, eps=eps))) <= 1 / len(x)
        ra = ra_ours(pgd(logits_fn, x, y, eps, key=jax.random.key(0), steps=5, step_size=eps / 4, random_start=False))
        assert abs(ra - ra_theirs(torchattacks.PGD(net, eps=eps, alpha=eps / 4, steps=5, random_start=False))) <= 1 / len(x)


def _within_ci(ra, correct):
    lo, hi = binomial_ci(int(np.sum(correct)), len(correct))
    return lo <= ra <= hi


def test_meso4_apgd_agrees_with_torchattacks(meso4_twin):
    logits_fn, net, x, y, ra_theirs, _, ra_ours = meso4_twin
    eps = np.array([0.002, 0.004], np.float32)
    ours = apgd(logits_fn, x, y, eps, key=jax.random.key(0), steps=20)
    for e, x_adv in zip(eps, ours):
        theirs = ra_theirs(torchattacks.APGD(net, norm="Linf", eps=float(e), steps=20, n_restarts=1, loss="ce",
                                             rho=0.75, seed=0))
        lo, hi = binomial_ci(round(theirs * len(y)), len(y))
        assert 0 < theirs < 1 and lo <= ra_ours(x_adv) <= hi, (e, ra_ours(x_adv), theirs)


@pytest.mark.parametrize("norm, eps", [("linf", (0.1,)), ("l2", (10.0,))])
def test_meso4_square_agrees_with_torchattacks(meso4_twin, norm, eps):
    """torchattacks draws one window per batch and query; run it per sample (its own seed each)
    so that, like ours, every sample's search is independent and the RA a binomial estimate."""
    logits_fn, net, x, y, _, correct_theirs, ra_ours = meso4_twin
    ours = square(logits_fn, x, y, np.asarray(eps, np.float32), key=jax.random.key(0), queries=100, norm=norm)
    for e, x_adv in zip(eps, ours):
        theirs = np.concatenate([
            correct_theirs(torchattacks.Square(net, norm={"linf": "Linf", "l2": "L2"}[norm], eps=e, n_queries=100,
                                               p_init=0.8, loss="margin", seed=i), x[i: i + 1], y[i: i + 1])
            for i in range(len(y))])
        lo, hi = binomial_ci(int(theirs.sum()), len(y))
        assert 0 < theirs.mean() < 1 and lo <= ra_ours(x_adv) <= hi, (e, ra_ours(x_adv), theirs.mean())
