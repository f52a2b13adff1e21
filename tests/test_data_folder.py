"""User datasets: folder layout (lists, subfolders, hash split) and PASCAL VOC, tiny fixtures."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch
from PIL import Image

from fcnkit.data import load_dataset
from fcnkit.data.io import voc_palette
from fcnkit.data.layouts import VOC_CLASSES, hash_split
from fcnkit.data.palette import distinct_palette
from fcnkit.errors import InputError, MissingFileError


def _image(seed: int, h: int = 6, w: int = 8, grey: bool = False) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(h, w) if grey else (h, w, 3), dtype=np.uint8)


def _mask(seed: int, h: int = 6, w: int = 8, top: int = 2) -> np.ndarray:
    m = np.random.default_rng(seed + 100).integers(0, top + 1, size=(h, w)).astype(np.uint8)
    m[0, 0] = 255
    return m


def write_pair(root, stem, seed, grey=False, top=2, sub=""):
    (root / sub / "images").mkdir(parents=True, exist_ok=True)
    (root / sub / "masks").mkdir(parents=True, exist_ok=True)
    img, msk = _image(seed, grey=grey), _mask(seed, top=top)
    Image.fromarray(img).save(root / sub / "images" / f"{stem}.png")
    Image.fromarray(msk, mode="L").save(root / sub / "masks" / f"{stem}.png")
    return img, msk


def _stems_by_hash(n_train=4, n_val=1, n_test=1):
    want = {"train": n_train, "val": n_val, "test": n_test}
    picked = {s: [] for s in want}
    i = 0
    while any(len(picked[s]) < want[s] for s in want):
        stem = f"img{i:03d}"
        if len(picked[hash_split(stem)]) < want[hash_split(stem)]:
            picked[hash_split(stem)].append(stem)
        i += 1
    return picked


def test_hash_split_matches_its_definition():
    for i in range(200):
        stem = f"x{i}"
        bucket = int(hashlib.sha1(stem.encode()).hexdigest()[:8], 16) % 100
        assert hash_split(stem) == ("train" if bucket < 80 else "val" if bucket < 90 else "test")


def test_folder_hash_split_contents_and_stats(tmp_path):
    picked = _stems_by_hash()
    written = {}
    for k, stem in enumerate(sorted(s for v in picked.values() for s in v)):
        written[stem] = write_pair(tmp_path, stem, k)
    train = load_dataset(tmp_path, "train")
    assert sorted(train[i]["meta"]["name"] for i in range(len(train))) == sorted(picked["train"])
    info = train.info
    assert info.task == "segmentation" and info.in_channels == 3
    # num_classes = largest training label (255 excluded) + 1
    top = max(int(written[s][1][written[s][1] != 255].max()) for s in picked["train"])
    assert info.num_classes == top + 1 and info.class_names == [f"class_{i}" for i in range(top + 1)]
    assert info.palette == distinct_palette(top + 1)  # colours that can be told apart (issue 11)
    pix = np.concatenate([written[s][0].reshape(-1, 3) for s in picked["train"]]).astype(np.float64) / 255
    np.testing.assert_allclose(info.mean, pix.mean(0), rtol=1e-6)  # pixels scaled in float32
    np.testing.assert_allclose(info.std, pix.std(0), rtol=1e-6)
    val = load_dataset(str(tmp_path), "val")
    assert val.info.to_dict() == info.to_dict()
    sample = val[0]
    stem = sample["meta"]["name"]
    img, msk = written[stem]
    assert sample["mask"].dtype == torch.int64 and np.array_equal(sample["mask"].numpy(), msk)
    expected = (img.astype(np.float64) / 255 - np.array(info.mean)) / np.array(info.std)
    np.testing.assert_allclose(sample["image"].numpy(), expected.transpose(2, 0, 1), rtol=1e-5, atol=1e-5)
    raw_img, raw_msk = val.raw(0)
    assert raw_img.dtype == np.uint8 and np.array_equal(raw_img, img)


def test_folder_list_files_and_classes_txt(tmp_path):
    for k, stem in enumerate(["a", "b", "c", "d"]):
        write_pair(tmp_path, stem, k, grey=True, top=1)
    (tmp_path / "train.txt").write_text("a\nb.png\n\n# comment\nc\n")
    (tmp_path / "val.txt").write_text("d\n")
    (tmp_path / "classes.txt").write_text("sky\nroad\ncar\n")
    train = load_dataset(tmp_path)
    assert [train[i]["meta"]["name"] for i in range(3)] == ["a", "b", "c"]
    assert train.info.class_names == ["sky", "road", "car"] and train.info.num_classes == 3
    assert train.info.in_channels == 1 and train[0]["image"].shape == (1, 6, 8)
    assert len(load_dataset(tmp_path, "val")) == 1
    with pytest.raises(InputError, match="test.txt"):  # listed splits: test.txt absent -> empty
        load_dataset(tmp_path, "test")


def test_folder_subfolders_and_num_classes_option(tmp_path):
    write_pair(tmp_path, "a", 0, sub="train")
    write_pair(tmp_path, "b", 1, sub="train")
    write_pair(tmp_path, "c", 2, sub="val")
    assert len(load_dataset(tmp_path, "train")) == 2 and len(load_dataset(tmp_path, "val")) == 1
    assert load_dataset(tmp_path, "val", num_classes=5).info.num_classes == 5
    with pytest.raises(InputError) as err:
        load_dataset(tmp_path, "test")
    assert str(tmp_path / "test") in str(err.value) and "empty" in str(err.value)
    with pytest.raises(InputError, match="'num_clases'.*num_classes"):
        load_dataset(tmp_path, num_clases=3)


def test_folder_refuses_bad_data_with_the_fix(tmp_path):
    write_pair(tmp_path, "a", 0)
    (tmp_path / "train.txt").write_text("a\nb\n")
    Image.fromarray(_image(1)).save(tmp_path / "images" / "b.png")  # no mask
    with pytest.raises(InputError) as err:
        _ = load_dataset(tmp_path).info  # the label check runs when the info is computed
    assert "b.png" in str(err.value) and "fcnkit data check" in str(err.value)
    Image.fromarray(_mask(1, h=5), mode="L").save(tmp_path / "masks" / "b.png")  # wrong size
    ds = load_dataset(tmp_path)
    with pytest.raises(InputError, match="mask is 5x8 but its image is 6x8"):
        ds[1]
    Image.fromarray(np.full((6, 8), 9, np.uint8), mode="L").save(tmp_path / "masks" / "b.png")
    ds = load_dataset(tmp_path, num_classes=3)
    with pytest.raises(InputError, match=r"labels \[9\] are outside 0..2"):
        ds.raw(1)


def test_folder_errors_for_empty_unknown_and_missing(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    with pytest.raises(InputError) as err:
        _ = load_dataset(tmp_path).info  # the label check runs when the info is computed
    assert "empty" in str(err.value) and str(tmp_path) in str(err.value)
    other = tmp_path / "other"
    other.mkdir()
    with pytest.raises(InputError, match="unknown dataset layout"):
        load_dataset(other)
    with pytest.raises(MissingFileError):
        load_dataset(tmp_path / "missing", "train")


def test_binary_0_255_masks_are_refused(tmp_path):
    for k, stem in enumerate(_stems_by_hash(2, 0, 0)["train"]):
        write_pair(tmp_path, stem, k, top=0)  # labels only 0 (and 255 at [0, 0])
    with pytest.raises(InputError, match="255"):
        _ = load_dataset(tmp_path).info  # the label check runs when the info is computed


def _write_voc(root, stems_train, stems_val):
    for d in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (root / d).mkdir(parents=True)
    masks = {}
    for k, stem in enumerate(stems_train + stems_val):
        Image.fromarray(_image(k, 10, 12)).save(root / "JPEGImages" / f"{stem}.jpg", quality=95)
        m = np.zeros((10, 12), np.uint8)
        m[2:6, 3:9] = 15  # person
        m[2:6, 3] = 255  # VOC's boundary "void" colour
        m[7:, :4] = k % 21
        p = Image.fromarray(m, mode="P")
        p.putpalette([v for rgb in voc_palette(256) for v in rgb])
        p.save(root / "SegmentationClass" / f"{stem}.png")
        masks[stem] = m
    (root / "ImageSets/Segmentation/train.txt").write_text("\n".join(stems_train) + "\n")
    (root / "ImageSets/Segmentation/val.txt").write_text("\n".join(stems_val) + "\n")
    return masks


def test_voc_layout(tmp_path):
    root = tmp_path / "VOCdevkit" / "VOC2012"
    masks = _write_voc(root, ["2007_000032", "2007_000033"], ["2007_000039"])
    Image.fromarray(_image(9, 10, 12)).save(root / "JPEGImages" / "2008_999999.jpg")  # not in any list: fine
    train = load_dataset(tmp_path)  # found under VOCdevkit/VOC2012
    assert len(train) == 2
    info = train.info
    # the labels present (0, 1, 15) decide: 16 classes, not PASCAL's 21 (issue 11)
    assert info.num_classes == 16 and info.class_names[15] == "class_15" and info.in_channels == 3
    info = load_dataset(tmp_path, num_classes=21).info  # PASCAL's own 21 classes get PASCAL's names
    assert info.num_classes == 21 and info.class_names == VOC_CLASSES
    assert info.palette == voc_palette(21)
    val = load_dataset(root, "val")
    s = val[0]
    assert s["meta"]["name"] == "2007_000039" and s["image"].shape == (3, 10, 12)
    assert np.array_equal(s["mask"].numpy(), masks["2007_000039"])
    with pytest.raises(InputError, match="split='val'"):
        load_dataset(root, "test")
    with pytest.raises(InputError, match="unknown option 'classes'"):
        load_dataset(root, classes=3)
