"""The integer overlay (alpha 0.5) gives the float formula's pixels, and PNGs stay lossless at level 1."""

from __future__ import annotations

import numpy as np
from PIL import Image

from fcnkit.data.io import _mean_uint8, colorize, full_palette, overlay, voc_palette
from fcnkit.inference.writers import write_labels, write_overlay


def _float_overlay(image, labels, palette, alpha=0.5):  # the formula overlay() had before its integer path
    base = image.astype(np.float32)
    colour = full_palette(palette)[np.clip(labels, 0, 255).astype(np.uint8)].astype(np.float32)
    fg = (labels != 0)[..., None]
    return np.where(fg, (1 - alpha) * base + alpha * colour, base).round().astype(np.uint8)


def test_integer_mean_equals_float_round_on_every_pair():
    a, b = np.meshgrid(np.arange(256, dtype=np.uint8), np.arange(256, dtype=np.uint8))
    img, col = np.stack([a] * 3, axis=-1), np.stack([b] * 3, axis=-1)  # all 65536 (image, colour) pairs
    ref = (0.5 * img.astype(np.float32) + 0.5 * col.astype(np.float32)).round().astype(np.uint8)
    assert np.array_equal(_mean_uint8(img, col, np.zeros(a.shape, dtype=bool)), ref)
    keep = a < 100  # where keep_a: the image itself
    assert np.array_equal(_mean_uint8(img, col, keep), np.where(keep[..., None], img, ref))
    for colour in (0, 1, 128, 255):  # and through overlay(): one colour over every image value
        labels, pal = np.ones(a.shape, dtype=np.int64), [[0, 0, 0], [colour, 255 - colour, colour]]
        assert np.array_equal(overlay(img, labels, pal), _float_overlay(img, labels, pal))


def test_overlay_random_labels_background_ignore_and_other_alpha():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (67, 45, 3), dtype=np.uint8)
    labels = rng.integers(0, 21, (67, 45)).astype(np.int64)
    labels[rng.random(labels.shape) < 0.2] = 255
    labels[:10] = 0
    labels[-1, :5] = 300  # out of range: clipped to the ignore colour, still foreground
    pal = voc_palette(21)
    for lab in (labels, np.clip(labels, 0, 255).astype(np.uint8)):
        assert np.array_equal(overlay(image, lab, pal), _float_overlay(image, lab, pal))
        assert np.array_equal(colorize(lab, pal), full_palette(pal)[np.clip(lab, 0, 255).astype(np.uint8)])
    assert np.array_equal(overlay(image, labels, pal, alpha=0.3), _float_overlay(image, labels, pal, 0.3))
    strided = image[::2, ::3]  # a band of a bigger image, as write_overlay passes
    assert np.array_equal(overlay(strided, labels[::2, ::3], pal), _float_overlay(strided, labels[::2, ::3], pal))


def test_pngs_decode_to_the_same_pixels(tmp_path):
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (64, 80, 3), dtype=np.uint8)
    labels = rng.integers(0, 21, (64, 80)).astype(np.uint8)
    labels[:5] = 255
    pal = voc_palette(21)
    write_labels(tmp_path / "m.png", labels, pal, tiff=False)
    write_overlay(tmp_path / "o.png", image, labels, pal)
    with Image.open(tmp_path / "m.png") as m:
        assert m.mode == "P" and np.array_equal(np.asarray(m), labels)
    with Image.open(tmp_path / "o.png") as o:
        assert np.array_equal(np.asarray(o), _float_overlay(image, labels, pal))
