"""Paired transforms and pad_collate: masks stay integer, padding is 0 / 255, determinism."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fcnkit.data import (
    Compose,
    RandomCrop,
    RandomHorizontalFlip,
    RandomScale,
    load_dataset,
    pad_collate,
)


def _sample(h=7, w=9, c=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    image = torch.randn(c, h, w, generator=g)
    mask = torch.randint(0, 4, (h, w), generator=g)
    mask[0, 0] = 255
    return {"image": image, "mask": mask, "meta": {"name": "s", "index": 0}}


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def test_flip_p1_and_p0():
    s = _sample()
    out = RandomHorizontalFlip(1.0)(s, _gen(0))
    assert torch.equal(out["image"], s["image"].flip(-1)) and torch.equal(out["mask"], s["mask"].flip(-1))
    same = RandomHorizontalFlip(0.0)(s, _gen(0))
    assert torch.equal(same["image"], s["image"]) and torch.equal(same["mask"], s["mask"])
    assert out["meta"] is s["meta"]  # meta passes through


def test_crop_is_one_window_of_both():
    s = _sample(10, 12)
    s["image"][0] = s["mask"].float()  # channel 0 carries the mask: image and mask must stay aligned
    for seed in range(5):
        out = RandomCrop((4, 5))(s, _gen(seed))
        assert out["image"].shape == (2, 4, 5) and out["mask"].shape == (4, 5)
        assert torch.equal(out["image"][0], out["mask"].float())
        hits = [(y, x) for y in range(7) for x in range(8) if torch.equal(s["mask"][y : y + 4, x : x + 5], out["mask"])]
        assert hits


def test_crop_pads_image_0_and_mask_255_bottom_right():
    s = _sample(3, 4)
    out = RandomCrop((5, 6))(s, _gen(0))
    assert out["image"].shape == (2, 5, 6)
    assert torch.equal(out["image"][:, :3, :4], s["image"]) and torch.equal(out["mask"][:3, :4], s["mask"])
    assert (out["image"][:, 3:, :] == 0).all() and (out["image"][:, :, 4:] == 0).all()
    assert (out["mask"][3:, :] == 255).all() and (out["mask"][:, 4:] == 255).all()
    assert out["mask"].dtype == torch.int64


def test_scale_mask_is_nearest_exact():
    s = _sample(7, 9)
    for seed in range(4):
        out = RandomScale(0.5, 2.0)(s, _gen(seed))
        h, w = out["mask"].shape
        assert out["image"].shape == (2, h, w)
        # reference: torch's centre-aligned nearest on the float mask
        ref = F.interpolate(s["mask"][None, None].double(), size=(h, w), mode="nearest-exact")[0, 0].long()
        assert torch.equal(out["mask"], ref)
        ref_img = F.interpolate(s["image"][None], size=(h, w), mode="bilinear", align_corners=False)[0]
        torch.testing.assert_close(out["image"], ref_img)


def test_same_generator_same_result_and_seeds_differ():
    t = Compose([RandomScale(0.6, 1.6), RandomCrop(6), RandomHorizontalFlip()])
    s = _sample(9, 11)
    a, b = t(s, _gen(3)), t(s, _gen(3))
    assert torch.equal(a["image"], b["image"]) and torch.equal(a["mask"], b["mask"])
    outs = [t(s, _gen(k))["mask"] for k in range(6)]
    assert any(not torch.equal(outs[0], o) for o in outs[1:])


@pytest.mark.parametrize("seed", range(8))
def test_masks_keep_int64_and_their_values(seed):
    s = _sample(9, 11, seed=seed)
    t = Compose([RandomScale(0.3, 2.5), RandomCrop((12, 5)), RandomHorizontalFlip()])
    out = t(s, _gen(seed))
    assert out["mask"].dtype == torch.int64 and out["image"].dtype == torch.float32
    assert out["image"].shape[-2:] == out["mask"].shape == (12, 5)
    assert set(out["mask"].unique().tolist()) <= set(s["mask"].unique().tolist()) | {255}


def test_transforms_on_a_classification_sample():
    s = {"image": torch.arange(12.0).reshape(1, 3, 4), "label": torch.tensor(7), "meta": {}}
    out = Compose([RandomHorizontalFlip(1.0), RandomCrop((2, 2))])(s, _gen(0))
    assert out["image"].shape == (1, 2, 2) and int(out["label"]) == 7 and "mask" not in out


def test_pad_collate_pads_0_and_255():
    a, b = _sample(2, 3), _sample(4, 2, seed=1)
    batch = pad_collate([a, b])
    assert batch["image"].shape == (2, 2, 4, 3) and batch["mask"].shape == (2, 4, 3)
    assert torch.equal(batch["image"][0, :, :2, :3], a["image"]) and torch.equal(batch["mask"][1, :, :2], b["mask"])
    assert (batch["image"][0, :, 2:] == 0).all() and (batch["mask"][0, 2:] == 255).all()
    assert (batch["image"][1, :, :, 2:] == 0).all() and (batch["mask"][1, :, 2:] == 255).all()
    assert batch["mask"].dtype == torch.int64
    assert [m["size"] for m in batch["meta"]] == [[2, 3], [4, 2]] and batch["meta"][0]["name"] == "s"
    assert "size" not in a["meta"]  # the samples' own meta are not modified


def test_pad_collate_classification():
    same = [{"image": torch.ones(1, 3, 3), "label": torch.tensor(k), "meta": {"index": k}} for k in range(3)]
    batch = pad_collate(same)
    assert batch["image"].shape == (3, 1, 3, 3) and batch["label"].tolist() == [0, 1, 2]
    assert batch["label"].dtype == torch.int64 and "mask" not in batch
    mixed = pad_collate(
        [
            {"image": torch.ones(1, 2, 2), "label": torch.tensor(1)},
            {"image": torch.ones(1, 3, 1), "label": torch.tensor(2)},
        ]
    )
    assert mixed["image"].shape == (2, 1, 3, 2) and mixed["image"][0, 0, 2].tolist() == [0, 0]
    assert [m["size"] for m in mixed["meta"]] == [[2, 2], [3, 1]]


def test_pad_collate_with_a_dataloader_of_mixed_sizes():
    ds = load_dataset("brain-mri", "val")
    loader = torch.utils.data.DataLoader(ds, batch_size=len(ds), collate_fn=pad_collate)
    batch = next(iter(loader))
    assert batch["image"].shape == (len(ds), 1, 233, 233)
    for i, meta in enumerate(batch["meta"]):
        h, w = meta["size"]
        assert np.array_equal(batch["mask"][i, :h, :w].numpy(), ds.raw(i)[1])
        assert (batch["mask"][i, h:] == 255).all() and (batch["mask"][i, :, w:] == 255).all()
