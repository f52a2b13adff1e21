"""check_dataset reports every problem with the right file; `fcnkit data check/info` exit codes."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from fcnkit.cli.main import main
from fcnkit.data import Problem, check_dataset


def _img(h=6, w=8, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _mask(h=6, w=8, value=1):
    m = np.zeros((h, w), np.uint8)
    m[2:4, 2:5] = value
    m[0, 0] = 255
    return m


def _clean(root, n=4):
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    stems = [f"s{i}" for i in range(n)]
    for i, stem in enumerate(stems):
        Image.fromarray(_img(seed=i)).save(root / "images" / f"{stem}.png")
        Image.fromarray(_mask(value=1 + i % 2), mode="L").save(root / "masks" / f"{stem}.png")
    (root / "train.txt").write_text("\n".join(stems[:-1]) + "\n")
    (root / "val.txt").write_text(stems[-1] + "\n")
    return stems


@pytest.fixture
def broken(tmp_path):
    """A folder with exactly one problem of each kind (plus 4 good pairs)."""
    root = tmp_path / "ds"
    stems = _clean(root)
    im, mk = root / "images", root / "masks"
    (im / "corrupt.png").write_bytes(b"this is not a png at all" * 10)
    Image.fromarray(_mask(), mode="L").save(mk / "corrupt.png")
    Image.fromarray(_img(40, 40)).save(im / "trunc.png")
    data = (im / "trunc.png").read_bytes()
    (im / "trunc.png").write_bytes(data[: len(data) // 2])
    Image.fromarray(_mask(40, 40), mode="L").save(mk / "trunc.png")
    Image.fromarray(_img()).save(im / "nomask.png")
    Image.fromarray(_mask(), mode="L").save(mk / "noimage.png")
    Image.fromarray(_img()).save(im / "size.png")
    Image.fromarray(_mask(5, 8), mode="L").save(mk / "size.png")
    Image.fromarray(_img()).save(im / "range.png")
    Image.fromarray(_mask(value=7), mode="L").save(mk / "range.png")
    Image.fromarray(_img()).save(im / "rgb.png")
    Image.fromarray(np.stack([_mask()] * 3, -1), mode="RGB").save(mk / "rgb.png")
    (root / "classes.txt").write_text("background\nroad\ncar\n")
    listed = stems[:-1] + ["corrupt", "trunc", "size", "range", "rgb"]
    (root / "train.txt").write_text("\n".join(listed) + "\n")
    return root


def _by_file(problems):
    out = {}
    for p in problems:
        out.setdefault(p.file, []).append(p.message)
    return out


def test_clean_folder_has_no_problem(tmp_path):
    _clean(tmp_path)
    assert check_dataset(tmp_path) == []


def test_every_problem_is_reported_with_its_file(broken):
    problems = check_dataset(broken)
    assert all(isinstance(p, Problem) for p in problems)
    found = _by_file(problems)
    im, mk = broken / "images", broken / "masks"
    expect = {
        im / "corrupt.png": "cannot decode",
        im / "trunc.png": "cannot decode",
        im / "nomask.png": "no mask",
        mk / "noimage.png": "no image",
        mk / "size.png": "mask is 5x8 but its image size.png is 6x8",
        mk / "range.png": "labels 7 are outside 0..2",
        mk / "rgb.png": "mode RGB",
    }
    for file, text in expect.items():
        assert str(file) in found, f"nothing reported for {file}: {problems}"
        assert any(text in m for m in found[str(file)]), found[str(file)]
    assert len(problems) == len(expect)  # nothing else, nothing twice


def test_num_classes_argument_overrides(tmp_path):
    _clean(tmp_path)  # s0, s2 hold label 1; s1, s3 label 2
    problems = check_dataset(tmp_path, num_classes=2)
    assert {p.file for p in problems} == {str(tmp_path / "masks" / f"s{i}.png") for i in (1, 3)}
    assert "labels 2 are outside 0..1" in problems[0].message


def test_inferred_classes_come_from_training_masks(tmp_path):
    _clean(tmp_path)
    Image.fromarray(_mask(value=4), mode="L").save(tmp_path / "masks" / "s3.png")  # the val mask
    problems = check_dataset(tmp_path)
    assert [p.file for p in problems] == [str(tmp_path / "masks" / "s3.png")]


def test_empty_unknown_and_missing(tmp_path):
    (tmp_path / "e" / "images").mkdir(parents=True)
    (tmp_path / "e" / "masks").mkdir()
    problems = check_dataset(tmp_path / "e")
    assert [p.file for p in problems] == [str(tmp_path / "e")] and "empty" in problems[0].message
    (tmp_path / "u").mkdir()
    (tmp_path / "u" / "pic.png").write_bytes(b"x")
    problems = check_dataset(tmp_path / "u")
    assert len(problems) == 1 and "unknown dataset layout" in problems[0].message
    problems = check_dataset(tmp_path / "nothing")
    assert problems[0].file == str(tmp_path / "nothing") and "not found" in problems[0].message


def test_split_leak_and_binary_masks(tmp_path):
    stems = _clean(tmp_path)
    (tmp_path / "val.txt").write_text(f"{stems[-1]}\n{stems[0]}\n")
    problems = check_dataset(tmp_path)
    assert len(problems) == 1 and problems[0].file == str(tmp_path / "images" / f"{stems[0]}.png")
    assert "both" in problems[0].message
    other = tmp_path / "bin"
    (other / "images").mkdir(parents=True)
    (other / "masks").mkdir()
    for i in range(2):
        Image.fromarray(_img()).save(other / "images" / f"b{i}.png")
        Image.fromarray(_mask(value=255), mode="L").save(other / "masks" / f"b{i}.png")
    (other / "train.txt").write_text("b0\nb1\n")
    assert any("only 0 and 255" in p.message for p in check_dataset(other))


def test_jpeg_mask_is_named(tmp_path):
    _clean(tmp_path)
    Image.fromarray(_img()).save(tmp_path / "images" / "j.png")
    Image.fromarray(_mask()).save(tmp_path / "masks" / "j.jpg")
    problems = check_dataset(tmp_path)
    assert problems[0].file == str(tmp_path / "images" / "j.png") and "JPEG" in problems[0].message


def test_cli_check_exit_codes(broken, tmp_path, capsys):
    clean = tmp_path / "clean"
    _clean(clean)
    assert main(["data", "check", str(clean)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("ok: 4 images, 3 classes")
    assert main(["data", "check", str(broken)]) == 2
    lines = capsys.readouterr().out.strip().splitlines()
    assert f"{broken / 'masks' / 'rgb.png'}: mask has mode RGB" in "\n".join(lines)
    assert len(lines) == 7 + 1 and lines[-1].startswith("7 problems")
    assert main(["data", "check", str(clean), "--num-classes", "2"]) == 2


def test_cli_info(capsys):
    assert main(["data", "info", "nuclei"]) == 0
    out = capsys.readouterr().out
    assert "num_classes:  2" in out and "train:" in out and "28" in out and "background, nucleus" in out
    assert main(["data", "info", "nucle"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("fcnkit: unknown dataset 'nucle'") and "did you mean 'nuclei'" in err


def test_cli_data_list_matches_datasets(capsys):
    from fcnkit.cli.main import main
    from fcnkit.data import list_datasets, load_dataset

    assert main(["data", "list"]) == 0
    out = capsys.readouterr().out
    for name in list_datasets():
        assert name in out
    from fcnkit.data.registry import dataset_table

    for name, task, classes, _ in dataset_table():
        if name in ("digits", "digit-canvas"):  # cheap to open: the table must not lie
            info = load_dataset(name, "val").info
            assert (info.task, info.num_classes) == (task, classes)
