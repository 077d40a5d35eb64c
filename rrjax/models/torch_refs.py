"""PyTorch reference networks, written from the published architectures (needs ``torch``).

They follow the module naming of the projects whose checkpoints rrjax imports
(DeepfakeBench's ``training/networks``, FaceForensics++'s ``TransferModel`` around Cadene's
Xception, lukemelas' EfficientNet-PyTorch 0.7.1), so their ``state_dict()`` has the key
layout of real checkpoints. They are written independently of the Flax code: the tables
below are the published ones (B4 already scaled by hand), not imported from rrjax.

Uses: the parity tests (``tests/models``) and the PyTorch baseline of the benchmark
(``experiments/bench.py``, via :func:`rrjax.models.to_torch`). PyTorch is an optional
dependency (``pip install 'rrjax[torch]'``): ``import rrjax`` never imports this module.
"""

from __future__ import annotations

import math

import numpy as np

try:
    import torch
    import torch.nn as nn
    import torch.nn.functional as F
except ImportError as e:  # torch is optional for the library; this module is its only user
    raise ImportError("rrjax.models.torch_refs needs PyTorch: pip install 'rrjax[torch]'") from e


def randomize_(module: nn.Module, seed: int, calib: np.ndarray | None = None, jitter: float = 0.0) -> nn.Module:
    """Random weights *and* random BatchNorm statistics (eval mode uses the running ones).

    Without ``calib`` the statistics are random numbers around identity (fine for shallow
    nets). Deep random residual nets are chaotic: statistics unrelated to the actual
    activations let them grow to 1e4-1e6, where float32 rounding alone exceeds any absolute
    tolerance. With ``calib`` (NHWC images in [0, 1]) the running statistics are measured on
    that batch, then scaled by ``jitter`` (relative noise), which keeps the logits of order one.
    The statistics remain arbitrary per-channel numbers to the model under test.
    """
    g = torch.Generator().manual_seed(seed)
    bns = [m for m in module.modules() if isinstance(m, (nn.BatchNorm2d, nn.BatchNorm3d))]
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Conv3d, nn.Linear)):
            fan_in = m.weight[0].numel()
            m.weight.data = torch.randn(m.weight.shape, generator=g) * math.sqrt(2.0 / fan_in)
            if m.bias is not None:
                m.bias.data = 0.1 * torch.randn(m.bias.shape, generator=g)
    for m in bns:
        n = m.num_features
        m.weight.data = 0.5 + torch.rand(n, generator=g)
        m.bias.data = 0.2 * torch.randn(n, generator=g)
        m.running_mean.data = 0.2 * torch.randn(n, generator=g)
        m.running_var.data = 0.5 + torch.rand(n, generator=g)
    if calib is not None:
        momenta = [m.momentum for m in bns]
        for m in bns:
            m.reset_running_stats()
            m.momentum = None  # cumulative average: exactly this batch's statistics
        module.train()
        with torch.no_grad():
            module(to_torch_input(calib))
        for m, momentum in zip(bns, momenta):
            m.momentum = momentum
            n = m.num_features
            m.running_mean.data += jitter * m.running_var.sqrt() * torch.randn(n, generator=g)
            m.running_var.data *= 1.0 + jitter * (torch.rand(n, generator=g) - 0.5)
    for m in bns:
        m.num_batches_tracked.fill_(7)
    return module.eval()


def to_torch_input(x: np.ndarray) -> torch.Tensor:
    """NHWC pixels in [0, 1] -> normalised NCHW, as the PyTorch pipelines feed the nets."""
    return torch.from_numpy((x - 0.5) / 0.5).permute(0, 3, 1, 2).contiguous()


def run(module: nn.Module, x: np.ndarray) -> np.ndarray:
    module.eval()
    with torch.no_grad():
        return module(to_torch_input(x)).numpy()


class Wrap(nn.Module):
    """A detector wrapper that prefixes every key (``backbone.`` / ``model.`` / ``module.``)."""

    def __init__(self, attr: str, net: nn.Module):
        super().__init__()
        self.attr = attr
        setattr(self, attr, net)

    def forward(self, x):
        return getattr(self, self.attr)(x)


class PixelInput(nn.Module):
    """``NCHW`` pixels in [0, 1] -> ``net((x - 0.5) / 0.5)``: the input convention of the rrjax
    detectors (and of torchattacks, which requires inputs in [0, 1])."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net((x - 0.5) / 0.5)


class MeanProbVideo(nn.Module):
    """Clip detector from a frame detector: ``x[N, T, C, H, W]`` -> logits
    ``log(mean_t softmax(frame_net(x[:, t])))``, DeepfakeBench's video-level score."""

    def __init__(self, frame_net: nn.Module):
        super().__init__()
        self.frame_net = frame_net

    def forward(self, x):
        n, t = x.shape[:2]
        logp = F.log_softmax(self.frame_net(x.flatten(0, 1)), dim=-1).reshape(n, t, -1)
        return torch.logsumexp(logp, dim=1) - math.log(t)


# ----------------------------------------------------------------------------- MesoNet
class Meso4Ref(nn.Module):
    """Meso4 as DeepfakeBench defines it: shared bn1 (conv1, conv2) and bn2 (conv3, conv4)."""

    def __init__(self, image_size: int = 256, dropout: float = 0.5):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 8, 5, padding=2, bias=False)
        self.bn2 = nn.BatchNorm2d(16)
        self.conv3 = nn.Conv2d(8, 16, 5, padding=2, bias=False)
        self.conv4 = nn.Conv2d(16, 16, 5, padding=2, bias=False)
        side = image_size // 32
        self.fc1 = nn.Linear(16 * side * side, 16)
        self.fc2 = nn.Linear(16, 2)
        self.drop = nn.Dropout(dropout)

    def forward(self, x):
        x = F.max_pool2d(self.bn1(F.relu(self.conv1(x))), 2)
        x = F.max_pool2d(self.bn1(F.relu(self.conv2(x))), 2)
        x = F.max_pool2d(self.bn2(F.relu(self.conv3(x))), 2)
        x = F.max_pool2d(self.bn2(F.relu(self.conv4(x))), 4)
        x = self.drop(x.flatten(1))
        x = self.drop(F.leaky_relu(self.fc1(x), 0.1))
        return self.fc2(x)


class MesoInception4Ref(nn.Module):
    """MesoInception4 as DeepfakeBench defines it (no activation inside inception layers)."""

    def __init__(self, image_size: int = 256):
        super().__init__()
        for i, (cin, (a, b, c, d)) in enumerate(((3, (1, 4, 4, 2)), (11, (2, 4, 4, 2))), start=1):
            setattr(self, f"Incption{i}_conv1", nn.Conv2d(cin, a, 1, bias=False))
            setattr(self, f"Incption{i}_conv2_1", nn.Conv2d(cin, b, 1, bias=False))
            setattr(self, f"Incption{i}_conv2_2", nn.Conv2d(b, b, 3, padding=1, bias=False))
            setattr(self, f"Incption{i}_conv3_1", nn.Conv2d(cin, c, 1, bias=False))
            setattr(self, f"Incption{i}_conv3_2", nn.Conv2d(c, c, 3, padding=2, dilation=2, bias=False))
            setattr(self, f"Incption{i}_conv4_1", nn.Conv2d(cin, d, 1, bias=False))
            setattr(self, f"Incption{i}_conv4_2", nn.Conv2d(d, d, 3, padding=3, dilation=3, bias=False))
            setattr(self, f"Incption{i}_bn", nn.BatchNorm2d(a + b + c + d))
        self.conv1 = nn.Conv2d(12, 16, 5, padding=2, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.conv2 = nn.Conv2d(16, 16, 5, padding=2, bias=False)
        side = image_size // 32
        self.fc1 = nn.Linear(16 * side * side, 16)
        self.fc2 = nn.Linear(16, 2)

    def _inception(self, i, x):
        c = lambda n: getattr(self, f"Incption{i}_{n}")  # noqa: E731
        y = torch.cat([c("conv1")(x), c("conv2_2")(c("conv2_1")(x)),
                       c("conv3_2")(c("conv3_1")(x)), c("conv4_2")(c("conv4_1")(x))], 1)
        return F.max_pool2d(c("bn")(y), 2)

    def forward(self, x):
        x = self._inception(2, self._inception(1, x))
        x = F.max_pool2d(self.bn1(F.relu(self.conv1(x))), 2)
        x = F.max_pool2d(self.bn1(F.relu(self.conv2(x))), 4)
        return self.fc2(F.leaky_relu(self.fc1(x.flatten(1)), 0.1))


# ----------------------------------------------------------------------------- Xception
class SeparableConv2d(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cin, 3, 1, 1, groups=cin, bias=False)
        self.pointwise = nn.Conv2d(cin, cout, 1, bias=False)

    def forward(self, x):
        return self.pointwise(self.conv1(x))


class XBlock(nn.Module):
    def __init__(self, cin, cout, reps, stride, start_with_relu, grow_first):
        super().__init__()
        if cin != cout or stride != 1:
            self.skip = nn.Conv2d(cin, cout, 1, stride=stride, bias=False)
            self.skipbn = nn.BatchNorm2d(cout)
        else:
            self.skip = None
        chans = [cin] + ([cout] * reps if grow_first else [cin] * (reps - 1) + [cout])
        rep = []
        for j in range(reps):
            rep += [nn.ReLU(), SeparableConv2d(chans[j], chans[j + 1]), nn.BatchNorm2d(chans[j + 1])]
        if not start_with_relu:
            rep = rep[1:]
        if stride != 1:
            rep.append(nn.MaxPool2d(3, stride, 1))
        self.rep = nn.Sequential(*rep)

    def forward(self, x):
        skip = x if self.skip is None else self.skipbn(self.skip(x))
        return self.rep(x) + skip


class XceptionRef(nn.Module):
    """Cadene / FaceForensics++ / DeepfakeBench Xception (Chollet 2017, Table/Fig. 5)."""

    def __init__(self, num_classes=2, head_dropout=False, adjust_channel=False):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 32, 3, 2, 0, bias=False)
        self.bn1 = nn.BatchNorm2d(32)
        self.conv2 = nn.Conv2d(32, 64, 3, bias=False)
        self.bn2 = nn.BatchNorm2d(64)
        spec = [(64, 128, 2, 2, False, True), (128, 256, 2, 2, True, True), (256, 728, 2, 2, True, True)]
        spec += [(728, 728, 3, 1, True, True)] * 8 + [(728, 1024, 2, 2, True, False)]
        for i, s in enumerate(spec, start=1):
            setattr(self, f"block{i}", XBlock(*s))
        self.conv3 = SeparableConv2d(1024, 1536)
        self.bn3 = nn.BatchNorm2d(1536)
        self.conv4 = SeparableConv2d(1536, 2048)
        self.bn4 = nn.BatchNorm2d(2048)
        linear = nn.Linear(2048, num_classes)
        self.last_linear = nn.Sequential(nn.Dropout(0.5), linear) if head_dropout else linear
        if adjust_channel:  # present in DeepfakeBench checkpoints, unused by the plain detector
            self.adjust_channel = nn.Sequential(nn.Conv2d(2048, 512, 1, 1), nn.BatchNorm2d(512), nn.ReLU())

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        for i in range(1, 13):
            x = getattr(self, f"block{i}")(x)
        x = F.relu(self.bn3(self.conv3(x)))
        x = F.relu(self.bn4(self.conv4(x)))
        return self.last_linear(F.adaptive_avg_pool2d(x, 1).flatten(1))


# ----------------------------------------------------------------------------- EfficientNet-B4
# B4 = B0 scaled by width 1.4 / depth 1.8 (rounded by hand): (expand, kernel, stride, out, repeats).
B4_STAGES = [(1, 3, 1, 24, 2), (6, 3, 2, 32, 4), (6, 5, 2, 56, 4), (6, 3, 2, 112, 6),
             (6, 5, 1, 160, 6), (6, 5, 2, 272, 8), (6, 3, 1, 448, 2)]
B4_STEM, B4_HEAD = 48, 1792


def tf_same_padding(size: int, k: int, s: int) -> tuple[int, int]:
    out = -(-size // s)
    total = max((out - 1) * s + k - size, 0)
    return total // 2, total - total // 2


class SamePadConv(nn.Conv2d):
    """TF "same" conv; padding frozen for ``static_size`` (lukemelas' Conv2dStaticSamePadding)
    or computed from the actual input when ``static_size`` is None."""

    def __init__(self, cin, cout, k, stride=1, groups=1, bias=False, static_size=None):
        super().__init__(cin, cout, k, stride, 0, groups=groups, bias=bias)
        self.static = None if static_size is None else tf_same_padding(static_size, k, stride)

    def forward(self, x):
        k, s = self.kernel_size[0], self.stride[0]
        lo, hi = self.static if self.static is not None else tf_same_padding(x.shape[-1], k, s)
        return super().forward(F.pad(x, (lo, hi, lo, hi)))


class MBConvRef(nn.Module):
    def __init__(self, cin, cout, expand, k, stride, size):
        super().__init__()
        mid = cin * expand
        self.expand, self.skip = expand, (stride == 1 and cin == cout)
        if expand != 1:
            self._expand_conv = nn.Conv2d(cin, mid, 1, bias=False)
            self._bn0 = nn.BatchNorm2d(mid, momentum=0.01, eps=1e-3)
        self._depthwise_conv = SamePadConv(mid, mid, k, stride, groups=mid, static_size=size)
        self._bn1 = nn.BatchNorm2d(mid, momentum=0.01, eps=1e-3)
        sq = max(1, int(cin * 0.25))
        self._se_reduce = nn.Conv2d(mid, sq, 1)
        self._se_expand = nn.Conv2d(sq, mid, 1)
        self._project_conv = nn.Conv2d(mid, cout, 1, bias=False)
        self._bn2 = nn.BatchNorm2d(cout, momentum=0.01, eps=1e-3)

    def forward(self, inputs):
        x = inputs
        if self.expand != 1:
            x = F.silu(self._bn0(self._expand_conv(x)))
        x = F.silu(self._bn1(self._depthwise_conv(x)))
        g = self._se_expand(F.silu(self._se_reduce(F.adaptive_avg_pool2d(x, 1))))
        x = self._bn2(self._project_conv(torch.sigmoid(g) * x))
        return x + inputs if self.skip else x


class EffNetB4Ref(nn.Module):
    """lukemelas EfficientNet-B4 built for 380 px (frozen same-padding) with DeepfakeBench's
    stem (plain 3x3/2 conv, no padding). ``padding="dynamic"`` is a control that uses
    true per-input same padding instead. ``imagenet_fc`` adds the original 1000-way ``_fc``."""

    def __init__(self, padding="static380", imagenet_fc=False):
        super().__init__()
        self._conv_stem = nn.Conv2d(3, B4_STEM, 3, stride=2, bias=False)
        self._bn0 = nn.BatchNorm2d(B4_STEM, momentum=0.01, eps=1e-3)
        size = 190  # 380 after the original stride-2 stem
        blocks, cin = [], B4_STEM
        for expand, k, s, cout, reps in B4_STAGES:
            for r in range(reps):
                stride = s if r == 0 else 1
                static = size if padding == "static380" else None
                blocks.append(MBConvRef(cin, cout, expand, k, stride, static))
                size, cin = -(-size // stride), cout
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = nn.Conv2d(cin, B4_HEAD, 1, bias=False)
        self._bn1 = nn.BatchNorm2d(B4_HEAD, momentum=0.01, eps=1e-3)
        if imagenet_fc:
            self._fc = nn.Linear(B4_HEAD, 1000)

    def extract_features(self, x):
        x = F.silu(self._bn0(self._conv_stem(x)))
        for b in self._blocks:
            x = b(x)
        return F.silu(self._bn1(self._conv_head(x)))


class DFBEfficientNetB4Ref(nn.Module):
    """DeepfakeBench's backbone: ``efficientnet`` (features) + ``last_layer`` (2 logits)."""

    def __init__(self, padding="static380"):
        super().__init__()
        self.efficientnet = EffNetB4Ref(padding)
        self.last_layer = nn.Linear(B4_HEAD, 2)

    def forward(self, x):
        return self.last_layer(F.adaptive_avg_pool2d(self.efficientnet.extract_features(x), 1).flatten(1))


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
