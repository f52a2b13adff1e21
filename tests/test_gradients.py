"""stage_grad_norms against a hand-built two-block net whose gradients are known in closed form."""

import math

import pytest
import torch
from torch import nn

from fcnkit.errors import InputError
from fcnkit.training.gradients import grad_norm, stage_grad_norms


def _two_blocks(a: float, b: float) -> nn.Module:
    """x -> conv 1x1 (weight a) -> conv 1x1 (weight b): y = a * b * x, no biases."""
    net = nn.Sequential()
    net.add_module("first", nn.Conv2d(1, 1, 1, bias=False))
    net.add_module("last", nn.Conv2d(1, 1, 1, bias=False))
    with torch.no_grad():
        net.first.weight.fill_(a)
        net.last.weight.fill_(b)
    return net.double()


def test_two_block_net_closed_form():
    # L = sum(a * b * x): dL/da = b * sum(x), dL/db = a * sum(x), so first / last = |b| / |a|
    a, b = 0.5, -3.0
    net = _two_blocks(a, b)
    x = torch.rand(2, 1, 5, 7, dtype=torch.float64)
    net(x).sum().backward()
    s = float(x.sum())
    norms = stage_grad_norms(net, first="first", last="last")
    assert norms["first"] == pytest.approx(abs(b) * s, rel=1e-12)
    assert norms["last"] == pytest.approx(abs(a) * s, rel=1e-12)
    assert norms["ratio"] == pytest.approx(abs(b) / abs(a), rel=1e-12)


def test_norm_is_over_all_parameters_of_a_stage_as_one_vector():
    net = nn.Sequential(nn.Conv2d(2, 3, 3), nn.BatchNorm2d(3), nn.ReLU(), nn.Conv2d(3, 1, 1)).double()
    assert grad_norm(net) == 0.0  # no backward yet: no gradient
    net(torch.randn(2, 2, 6, 6, dtype=torch.float64)).square().mean().backward()
    expected = math.sqrt(sum(float(p.grad.square().sum()) for p in net[:2].parameters()))
    assert grad_norm(net[:2]) == pytest.approx(expected, rel=1e-12)


def test_default_stages_from_feature_info_and_errors():
    from fcnkit.models import build_model

    model = build_model("resallconv_cls", num_classes=3, in_channels=1, width=4, stages=2)
    model(torch.randn(2, 1, 12, 12)).logsumexp(1).sum().backward()
    norms = stage_grad_norms(model)
    assert norms == stage_grad_norms(model, first="features.stage0", last="features.stage2")
    assert norms["first"] > 0 and norms["last"] > 0
    with pytest.raises(InputError, match="'features.stage00' is not a module of ResAllConvClassifier .did you mean"):
        stage_grad_norms(model, first="features.stage00")
    with pytest.raises(InputError, match="feature_info"):
        stage_grad_norms(_two_blocks(1.0, 1.0))
