"""Experiment large-image: the mosaics are real digit canvases laid out on a grid; it is registered.

(The experiment itself runs in minutes; its numbers are in docs/experiments.md.)
"""

import numpy as np

from fcnkit.experiments.large_image import ARMS, make_mosaics
from fcnkit.experiments.registry import list_experiments


def test_mosaics_are_grids_of_the_split_canvases():
    from fcnkit.data.canvas import DEFAULT_SIZE, make_canvases

    images, masks = make_mosaics("val", 2, 3)
    h, w = DEFAULT_SIZE
    assert images.shape == masks.shape == (3, 2 * h, 2 * w) and masks.dtype == np.int64
    canvases, labels = make_canvases("val", DEFAULT_SIZE, 12, 0)[:2]
    # mosaic 1, grid cell (1, 0) is canvas 4 + 2 = 6 of the split, pixel for pixel
    assert np.array_equal(images[1, h:, :w], canvases[6]) and np.array_equal(masks[1, h:, :w], labels[6])
    assert set(np.unique(masks)) <= set(range(11))


def test_large_image_is_listed_with_its_arms():
    assert "large-image" in dict(list_experiments())
    assert ARMS[:3] == ("whole", "tiled", "patches")
