"""The one raw-array -> model-input path, and label PNG output."""

import numpy as np
import pytest
import torch
from PIL import Image

from fcnkit.data import io
from fcnkit.errors import InputError, MissingFileError


def test_dtype_scaling_and_normalisation():
    u8 = np.array([[0, 255]], dtype=np.uint8)
    u16 = np.array([[0, 65535]], dtype=np.uint16)
    for arr in (u8, u16):
        x = io.to_model_input(arr, 1, mean=[0.5], std=[0.25])
        assert x.dtype == torch.float32 and x.shape == (1, 1, 2)
        assert torch.allclose(x, torch.tensor([[[-2.0, 2.0]]]))


def test_channel_conversion():
    rgba = np.zeros((2, 3, 4), dtype=np.uint8)
    rgba[..., 0] = 255  # pure red, alpha ignored
    grey = io.to_model_input(rgba, 1, [0.0], [1.0])
    assert torch.allclose(grey, torch.full((1, 2, 3), 0.299))
    rgb = io.to_model_input(np.full((2, 3), 255, np.uint8), 3, [0.0] * 3, [1.0] * 3)
    assert rgb.shape == (3, 2, 3) and torch.all(rgb == 1)
    with pytest.raises(InputError):
        io.to_channels(np.zeros((2, 2, 5), np.float32), 3)


def test_label_png_roundtrip_and_palette(tmp_path):
    labels = np.array([[0, 1, 2], [255, 1, 0]], dtype=np.int64)
    path = tmp_path / "m.png"
    io.save_label_png(path, labels, io.voc_palette(3))
    with Image.open(path) as img:
        assert img.mode == "P"
    assert np.array_equal(io.read_mask(path), labels)
    assert io.voc_palette(3) == [[0, 0, 0], [128, 0, 0], [0, 128, 0]]


def test_bad_files(tmp_path):
    with pytest.raises(MissingFileError):
        io.read_image(tmp_path / "nope.png")
    good = tmp_path / "g.png"
    Image.fromarray(np.random.randint(0, 255, (64, 64, 3), np.uint8)).save(good)
    trunc = tmp_path / "t.png"
    trunc.write_bytes(good.read_bytes()[:200])
    with pytest.raises(InputError, match="t.png"):
        io.read_image(trunc)
    rgb_mask = tmp_path / "rgbmask.png"
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(rgb_mask)
    with pytest.raises(InputError, match="mode RGB"):
        io.read_mask(rgb_mask)
