"""fcnkit.training.samplers: crops aligned with their masks, sampler statistics, patch datasets."""

import pytest
import torch

from fcnkit.errors import InputError
from fcnkit.training.regimes import Patchwise
from fcnkit.training.samplers import (
    PatchDataset,
    class_balanced_centres,
    crop_patches,
    grid_centres,
    patch_collate,
    uniform_centres,
)

H, W = 13, 17


def _coordinate_image():
    """Channel 0 = row + 1, channel 1 = column + 1 (0 only in padding); mask = a code of (row, col)."""
    ys, xs = torch.meshgrid(torch.arange(H), torch.arange(W), indexing="ij")
    image = torch.stack([ys + 1, xs + 1]).float()
    mask = (ys * W + xs) % 250  # < 255: never "ignore" inside the image
    return image, mask


@pytest.mark.parametrize("size", [1, 4, 5, 9])
def test_patch_and_mask_crop_match_pixel_for_pixel(size):
    image, mask = _coordinate_image()
    centres = torch.tensor([[0, 0], [6, 8], [12, 16], [2, 15], [11, 1], [-3, 20]])  # the last: outside
    patches, masks = crop_patches(image, mask, centres, size)
    assert patches.shape == (6, 2, size, size) and masks.shape == (6, size, size)
    for (cy, cx), patch, m in zip(centres.tolist(), patches, masks):
        top, left = cy - (size - 1) // 2, cx - (size - 1) // 2
        for a in range(size):
            for b in range(size):
                y, x = top + a, left + b
                if 0 <= y < H and 0 <= x < W:
                    # the image pixel says where it came from; the mask pixel must be that pixel's label
                    assert (patch[0, a, b].item(), patch[1, a, b].item()) == (y + 1, x + 1)
                    assert m[a, b].item() == mask[y, x].item()
                else:
                    assert patch[:, a, b].tolist() == [0.0, 0.0] and m[a, b].item() == 255
        # the centre pixel of the patch is the sampled centre
        c = (size - 1) // 2
        if 0 <= cy < H and 0 <= cx < W:
            assert (patch[0, c, c].item(), patch[1, c, c].item()) == (cy + 1, cx + 1)


def test_uniform_centres_cover_the_image_evenly():
    g = torch.Generator().manual_seed(0)
    c = uniform_centres((H, W), 20000, g)
    assert c[:, 0].min() == 0 and c[:, 0].max() == H - 1 and c[:, 1].min() == 0 and c[:, 1].max() == W - 1
    counts = torch.bincount(c[:, 0] * W + c[:, 1], minlength=H * W).float()
    assert counts.numel() == H * W
    # 20000 / 221 = 90.5 per pixel; Poisson sd 9.5
    assert counts.min() > 50 and counts.max() < 135


def test_class_balanced_centre_classes_are_uniform_over_present_classes():
    mask = torch.zeros(40, 40, dtype=torch.int64)
    mask[:2, :2] = 1  # 4 pixels of class 1
    mask[10:30, 10:20] = 2  # 200 pixels of class 2
    mask[39, :] = 255  # ignored: never a centre; class 3 absent: never drawn
    g = torch.Generator().manual_seed(0)
    c = class_balanced_centres(mask, 6000, g)
    classes = mask[c[:, 0], c[:, 1]]
    freq = torch.bincount(classes, minlength=4).float() / 6000
    # a uniform sampler would give class 1 a share of 4 / 1560
    assert freq.tolist() == pytest.approx([1 / 3, 1 / 3, 1 / 3, 0], abs=0.03)
    # all four class-1 pixels get used
    assert len({tuple(p) for p, k in zip(c.tolist(), classes.tolist()) if k == 1}) == 4


def test_class_balanced_falls_back_to_uniform_on_an_unlabelled_mask():
    c = class_balanced_centres(torch.full((5, 6), 255), 50, torch.Generator().manual_seed(0))
    assert c.shape == (50, 2) and c[:, 0].max() < 5 and c[:, 1].max() < 6


def test_grid_centres_hand_computed():
    assert grid_centres((10, 7), 4).tolist() == [[1, 1], [1, 5], [5, 1], [5, 5], [9, 1], [9, 5]]
    assert grid_centres((3, 3), 8).tolist() == [[3, 3]]  # one tile from pixel 0, centred in the padding
    assert grid_centres((13, 4), 6).tolist() == [[2, 2], [8, 2], [14, 2]]  # 3 tiles cover 13 rows


def test_grid_tiles_cover_every_pixel_once():
    image, mask = _coordinate_image()
    patches, masks = crop_patches(image, mask, grid_centres((H, W), 5), 5)
    seen = torch.zeros(H, W, dtype=torch.int64)
    for p in patches:
        inside = p[0] > 0
        seen[(p[0][inside] - 1).long(), (p[1][inside] - 1).long()] += 1
    assert (seen == 1).all()
    assert (masks != 255).sum() == H * W
    with pytest.raises(InputError, match="stride must be >= 1"):
        grid_centres((3, 3), 0)


class _Images(torch.utils.data.Dataset):
    info = "info"

    def __init__(self, sizes):
        self.items = []
        for i, (h, w) in enumerate(sizes):
            image = torch.full((1, h, w), float(i + 1))
            self.items.append(
                {"image": image, "mask": torch.full((h, w), i, dtype=torch.int64), "meta": {"name": f"im{i}"}}
            )

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


def test_patch_dataset_items_and_collate():
    base = _Images([(20, 30), (12, 12)])
    ds = PatchDataset(
        base, sampler="uniform", patch_size=8, patches_per_image=5, generator=torch.Generator().manual_seed(0)
    )
    assert len(ds) == 2 and ds.info == "info"
    item = ds[1]
    assert item["image"].shape == (5, 1, 8, 8) and item["mask"].shape == (5, 8, 8)
    assert [m["name"] for m in item["meta"]] == ["im1"] * 5 and all(len(m["patch"]) == 2 for m in item["meta"])
    batch = patch_collate([ds[0], ds[1]])
    assert batch["image"].shape == (10, 1, 8, 8) and batch["num_images"] == 2
    # crops of image 0 hold its value (1) or padding (0); its mask its label (0) or 255
    assert set(batch["image"][:5].unique().tolist()) <= {0.0, 1.0}
    assert set(batch["mask"][5:].unique().tolist()) <= {1, 255}
    grid = PatchDataset(base, sampler="grid", patch_size=6, stride=10)
    assert grid[0]["image"].shape[0] == 2 * 3 and grid[1]["image"].shape[0] == 2 * 2  # count follows the image
    with pytest.raises(InputError, match="did you mean 'grid'"):
        PatchDataset(base, sampler="gird", patch_size=4)


def test_patchwise_regime_wraps_the_dataset_with_its_settings():
    r = Patchwise(sampler="class-balanced", patch_size=6, patches_per_image=3).bind(None)
    ds = r.train_dataset(_Images([(9, 9)]))
    assert isinstance(ds, PatchDataset) and ds[0]["image"].shape == (3, 1, 6, 6)
    assert r.collate_fn() is patch_collate and r.batch_size(4) == 4
    with pytest.raises(RuntimeError, match="before bind"):
        Patchwise().train_dataset(_Images([(9, 9)]))
