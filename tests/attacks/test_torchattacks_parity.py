"""Parity with torchattacks 3.5.1 (the reference implementation users would otherwise loop over).

FGSM and PGD (random start off, absolute step size = torchattacks' ``alpha``) on the same
weights and inputs: a linear model must give the same adversarial inputs element-wise, and
Meso4 (weights imported from the independent PyTorch reference module) the same robust
accuracy within one sample.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torchattacks

from rrjax import models
from rrjax.attacks import fgsm, pgd
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


def test_meso4_robust_accuracy_matches_torchattacks():
    size = 64
    ref = TR.randomize_(TR.Meso4Ref(size), seed=3).eval()
    net = Pixels(ref).eval()
    det = models.get_model("meso4", image_size=size, batchnorm="shared")
    variables = models.from_torch("meso4", ref.state_dict(), image_size=size, batchnorm="shared")
    logits_fn = det.logits_fn(variables)
    x = np.random.default_rng(1).uniform(size=(32, size, size, 3)).astype(np.float32)
    y = np.asarray(jnp.argmax(logits_fn(jnp.asarray(x)), -1)).astype(np.int32)  # clean accuracy 1

    def ra_theirs(attack):
        adv = attack(torch.from_numpy(x).permute(0, 3, 1, 2).contiguous(), torch.tensor(y, dtype=torch.long))
        with torch.no_grad():
            return (net(adv).argmax(-1).numpy() == y).mean()

    def ra_ours(x_adv):
        return (np.asarray(jnp.argmax(logits_fn(x_adv), -1)) == y).mean()

    for eps in (0.002, 0.008):
        assert ra_theirs(lambda xx, yy: xx) == 1.0  # the twin agrees on clean inputs
        ra = ra_ours(fgsm(logits_fn, x, y, eps, key=jax.random.key(0)))
        assert abs(ra - ra_theirs(torchattacks.FGSM(net, eps=eps))) <= 1 / len(x)
        ra = ra_ours(pgd(logits_fn, x, y, eps, key=jax.random.key(0), steps=5, step_size=eps / 4, random_start=False))
        assert abs(ra - ra_theirs(torchattacks.PGD(net, eps=eps, alpha=eps / 4, steps=5, random_start=False))) <= 1 / len(x)
