"""Issue 11: augmentation on torchvision v2 (tv_tensors.Mask): masks stay integer and aligned,
reproducible per seed, the same names on the CLI and in YAML."""

from __future__ import annotations

import pytest
import torch

from fcnkit.data.augment import augment, build_augmentation, check_augmentations
from fcnkit.errors import InputError

pytestmark = pytest.mark.usefixtures("one_thread")


def _known(h=6, w=9):
    mask = torch.arange(h * w).reshape(h, w) % 5  # labels 0..4, asymmetric in both axes
    mask[0, 0] = 255
    image = torch.stack([mask.float() / 255, 1 - mask.float() / 255, torch.full((h, w), 0.5)])  # RGB from the mask
    return image, mask


def _outcomes(names, n=40):
    image, mask = _known()
    t = build_augmentation(names)
    return [augment(t, image, mask, seed) for seed in range(n)], image, mask


def test_flips_and_rot90_move_image_and_mask_together():
    for names, candidates in (
        (["flip"], lambda m: [m, m.flip(-1)]),
        (["vflip"], lambda m: [m, m.flip(-2)]),
        (["rot90"], lambda m: [torch.rot90(m, k, (-2, -1)) for k in range(4)]),
    ):
        outs, image, mask = _outcomes(names)
        seen = set()
        for out_image, out_mask in outs:
            assert out_mask.dtype == torch.int64 and not out_mask.is_floating_point()
            hits = [k for k, c in enumerate(candidates(mask)) if c.shape == out_mask.shape and torch.equal(c, out_mask)]
            assert hits, names
            seen.add(hits[0])
            # the image followed the mask exactly (it is a function of the mask)
            assert torch.equal(out_image[0], out_mask.float() / 255) and out_image.shape[0] == 3
        assert seen == set(range(len(candidates(mask)))), names  # every outcome occurs


def test_scale_and_crop_keep_labels_and_pad_with_ignore():
    outs, image, mask = _outcomes(["scale:0.5-2", "crop:8"])
    labels = set(mask.unique().tolist())
    for out_image, out_mask in outs:
        assert out_mask.shape == (8, 8) and out_image.shape == (3, 8, 8) and out_mask.dtype == torch.int64
        assert set(out_mask.unique().tolist()) <= labels | {255}
    assert any((m == 255).sum() > 1 for _, m in outs)  # padding (image 6 rows < 8) is ignore


def test_reproducible_per_seed_and_global_rng_untouched():
    image, mask = _known()
    t = build_augmentation(["scale", "crop:5", "flip", "vflip", "rot90", "color"])
    torch.manual_seed(123)
    before = torch.get_rng_state()
    a = augment(t, image, mask, 7)
    b = augment(t, image, mask, 7)
    assert torch.equal(torch.get_rng_state(), before)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    others = [augment(t, image, mask, s) for s in range(8, 14)]
    assert any(o[1].shape != a[1].shape or not torch.equal(o[1], a[1]) for o in others)


def test_colour_changes_the_image_only():
    image, mask = _known()
    out_image, out_mask = augment(build_augmentation(["color"]), image, mask, 1)
    assert torch.equal(out_mask, mask) and not torch.equal(out_image, image)


def test_names_on_cli_and_yaml_alike(tmp_path):
    import argparse

    from fcnkit.cli import train as cli_train
    from fcnkit.engine.config import TrainConfig, load_config

    parser = argparse.ArgumentParser()
    cli_train.add_parser(parser.add_subparsers())
    args = parser.parse_args(["train", "--data", "d", "--augment", "flip,rot90,crop:128"])
    from_cli = load_config(None, {"augment": args.augment, "data": "d"}).resolved().augment
    (tmp_path / "c.yaml").write_text("data: d\naugment: [flip, rot90, 'crop:128']\n")
    assert from_cli == load_config(tmp_path / "c.yaml").resolved().augment == ["flip", "rot90", "crop:128"]
    assert parser.parse_args(["train", "--augment"]).augment is True
    assert TrainConfig.from_dict({"data": "d", "augment": True}).resolved().augment == ["flip", "scale"]
    for bad, match in (
        ("flip,spin", "did you mean|unknown augmentation"),
        ("crop:big", "crop:128"),
        ("flip:3", "takes no argument"),
    ):
        with pytest.raises(InputError, match=match):
            check_augmentations(bad)


def test_augmented_dataset_normalises_as_the_dataset():
    from conftest import Squares

    from fcnkit.engine.segmentation import AugmentedDataset

    data = Squares(3, seed=0)
    aug = AugmentedDataset(data, ["flip"])
    torch.manual_seed(0)
    for i in range(3):
        item, plain = aug[i], data[i]
        flipped = torch.equal(item["mask"], plain["mask"].flip(-1)) and not torch.equal(item["mask"], plain["mask"])
        want = plain["image"].flip(-1) if flipped else plain["image"]
        assert torch.allclose(item["image"], want, atol=1e-6) and item["image"].dtype == torch.float32
