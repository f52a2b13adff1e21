"""The geometry trace's own meta shapes (conv2d, max_pool2d, relu, in-place add) equal torch's, and
building an allconv model (its constructor traces the geometry) imports neither sympy nor torch._dynamo."""

from __future__ import annotations

import itertools
import subprocess
import sys

import torch
import torch.nn.functional as F

from fcnkit.geometry.meta_shapes import meta_shortcut


def _meta(t: torch.Tensor) -> torch.Tensor:
    return torch.empty_strided(t.shape, t.stride(), device="meta", dtype=t.dtype)


def test_conv2d_shapes_equal_torch():
    for size, k, s, p, d, g in itertools.product(
        (7, 8, 13), (1, 3, 4), (1, 2, 3), (0, 1, 2, "same", "valid"), (1, 2), (1, 2)
    ):
        if p == "same" and s != 1:
            continue
        x, w = torch.zeros(2, 4, size, size + 1), torch.zeros(6, 4 // g, k, k)
        try:
            ref = F.conv2d(x, w, None, s, p, d, g)
        except RuntimeError:
            continue  # too small: the shortcut then leaves it to torch (None) or raises too
        got = meta_shortcut(F.conv2d, (_meta(x), _meta(w), None, s, p, d, g), {})
        assert got is not None and got.shape == ref.shape and got.dtype == ref.dtype, (size, k, s, p, d, g)
        got = meta_shortcut(F.conv2d, (_meta(x), _meta(w)), {"stride": s, "padding": p, "dilation": d, "groups": g})
        assert got.shape == ref.shape


def test_max_pool2d_shapes_equal_torch():
    for size, k, s, p, d, ceil in itertools.product((7, 8, 13), (2, 3), (None, 1, 2, 3), (0, 1), (1, 2), (False, True)):
        x = torch.zeros(1, 2, size, size + 2)
        try:
            ref = F.max_pool2d(x, k, s, p, d, ceil)
        except RuntimeError:
            continue
        got = meta_shortcut(F.max_pool2d, (_meta(x), k), {"stride": s, "padding": p, "dilation": d, "ceil_mode": ceil})
        assert got is not None and got.shape == ref.shape, (size, k, s, p, d, ceil)
    x = _meta(torch.zeros(1, 2, 8, 8))
    assert meta_shortcut(F.max_pool2d, (x, 2), {"return_indices": True}) is None  # a tuple: torch's own kernel


def test_relu_and_inplace_add_return_what_torch_returns():
    x = _meta(torch.zeros(1, 3, 5, 6))
    assert meta_shortcut(F.relu, (x,), {"inplace": True}) is x
    out = meta_shortcut(F.relu, (x,), {})
    assert out is not x and out.shape == x.shape
    count = torch.empty((), device="meta", dtype=torch.long)
    assert meta_shortcut(torch.Tensor.add_, (count, 1), {}) is count
    assert meta_shortcut(torch.Tensor.add_, (count, 0.5), {}) is None  # float into long: torch raises


def test_building_allconv_imports_no_sympy():
    code = (
        "import sys, fcnkit; m = fcnkit.build_model('allconv', num_classes=21); fcnkit.receptive_field(m.eval());"
        "print(sorted(n for n in ('sympy', 'torch._dynamo') if n in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
