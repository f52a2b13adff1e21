"""The bad-input corpus: every subcommand, fed broken files and arguments, answers with exit code 2,
exactly one line on stderr naming what is wrong, no traceback, and nothing new (or changed) in
its output location. Cases run the CLI in-process (``fcnkit.cli.main.main``), a few as a real
subprocess. ``data check`` is a report: its problems go to stdout, so there stderr stays empty.

The files are built by tests/bad_input_files.py. A read-only folder is a read-only tmpfs mount
(CI runs as root, where permission bits do not stop writes); without one those cases are skipped
with the reason printed.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import warnings
from pathlib import Path

import bad_input_cases
import bad_input_cases_train
import bad_input_files as bad
import pytest

from fcnkit.cli.main import main

pytestmark = pytest.mark.usefixtures("one_thread")

CASES = bad_input_cases.CASES + bad_input_cases_train.CASES


def _snapshot(path: Path | None):
    if path is None or not os.path.lexists(path):
        return None
    if not path.is_dir():
        return ("file", hashlib.sha1(path.read_bytes()).hexdigest())
    return sorted(
        (str(p.relative_to(path)), p.stat().st_size if p.is_file() else -1, p.stat().st_mtime_ns if p.exists() else 0)
        for p in path.rglob("*")
    )


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    return bad.Assets(tmp_path_factory.mktemp("assets"))


@pytest.fixture(scope="module")
def read_only(tmp_path_factory):
    """A read-only folder: a read-only tmpfs where we can mount one, else (not root) a chmod 555 folder."""
    folder = tmp_path_factory.mktemp("ro")
    made = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(folder)], capture_output=True, text=True
    )
    if made.returncode == 0:
        yield folder
        subprocess.run(["umount", str(folder)], check=False)
        return
    if os.geteuid() != 0:
        folder.chmod(0o555)
        yield folder
        folder.chmod(0o755)
        return
    print(f"read-only cases skipped: cannot mount a read-only tmpfs ({made.stderr.strip()}) and root ignores chmod")
    yield None


RESULTS: dict[str, bool] = {}


@pytest.mark.parametrize("case_id,build,expect", CASES, ids=[c[0] for c in CASES])
def test_bad_input_answered_in_one_line(case_id, build, expect, assets, read_only, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(
        "fcnkit.data.io.TIFF_MAX_DECODED_PIXELS", 1000, raising=False
    )  # the 64x64 zlib TIFF stands for 30000x30000
    RESULTS[case_id] = False
    case = build(bad_input_cases.Ctx(assets, tmp_path, read_only))
    before = _snapshot(case["out"])
    capsys.readouterr()
    with warnings.catch_warnings(record=True) as caught:  # a user would see each warning on stderr too
        warnings.simplefilter("always")
        try:
            rc = main(case["argv"])
        except SystemExit as exc:  # argparse's usage errors (also one line: fcnkit.cli.main._Parser)
            rc = exc.code
    out, err = capsys.readouterr()
    lines = [line for line in err.splitlines() if line.strip()] + [f"warning: {w.message}" for w in caught]
    assert "Traceback" not in out + err
    assert rc == 2, f"exit {rc}; stderr: {err[-500:]}"
    assert len(lines) == 1, f"{len(lines)} lines on stderr: {err[-800:]}"
    assert expect in lines[0], lines[0]
    assert _snapshot(case["out"]) == before, "the output location changed"
    assert not (tmp_path / "pwned").exists(), "something was unpickled"
    RESULTS[case_id] = True


def test_zz_corpus_size_and_count():
    """At least 100 cases; prints answered/total (the -s output or the report uses it)."""
    assert len(CASES) >= 100
    answered = sum(RESULTS.values())
    print(
        f"\nbad-input corpus: {answered}/{len(RESULTS)} answered correctly (exit 2, one line, no traceback, "
        "output untouched)"
    )


def test_bad_input_as_a_real_process(assets, tmp_path):
    """The same answers from real ``python -m fcnkit`` processes (warnings, logging and exit codes as
    users see them); the three run side by side to keep the interpreter start-ups short."""
    assets.weights.write_bytes(b"")
    runs = {
        "predict-bomb": ["predict", assets.ckpt, bad.png_bomb(tmp_path / "bomb.png"), "--out", tmp_path / "p"],
        "convert-num-classes-0": [
            "convert",
            "--arch",
            "torchvision:resnet18",
            "--weights",
            assets.weights,
            "--num-classes",
            "0",
            "--out",
            tmp_path / "c",
        ],
        "evaluate-json-dir": ["evaluate", assets.run, "--json", tmp_path, "--device", "cpu"],
    }
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1]), "OMP_NUM_THREADS": "1"}
    procs = {
        name: subprocess.Popen(
            [sys.executable, "-m", "fcnkit", *map(str, argv)],
            env=env,
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for name, argv in runs.items()
    }
    for name, proc in procs.items():
        _, err = proc.communicate(timeout=180)
        lines = [line for line in err.splitlines() if line.strip()]
        assert proc.returncode == 2 and len(lines) == 1 and "Traceback" not in err, (name, err[-800:])
        assert lines[0].startswith("fcnkit: "), (name, lines[0])
    assert not (tmp_path / "p").exists() and not (tmp_path / "c").exists()


def test_a_real_30000_square_deflate_tiff_with_huge_tiles_is_refused_with_the_tile_hint(assets, tmp_path, capsys):
    """The corpus stands a 64x64 TIFF in for a huge one (a lowered limit); this is the real size:
    a 30000 x 30000 zlib TIFF whose 16384 x 16384 tiles (268 Mpx each) would each be decoded whole
    is refused from its header. (With small tiles it is read lazily: tests/test_zarr_io.py.)"""
    import numpy as np
    import tifffile

    tile, big = np.zeros((16384, 16384), np.uint8), tmp_path / "slide.tif"
    tifffile.imwrite(
        big,
        (tile for _ in range(4)),
        shape=(30000, 30000),
        dtype=np.uint8,
        tile=(16384, 16384),
        compression="zlib",
        compressionargs={"level": 1},
    )
    del tile
    rc = main(["predict", str(assets.ckpt), str(big), "--out", str(tmp_path / "p"), "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2 and len(err.strip().splitlines()) == 1 and "--tile" in err and "268 Mpx" in err, err
    assert not (tmp_path / "p").exists()
