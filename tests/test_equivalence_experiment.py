"""Experiment gradient-equivalence end to end on tiny settings: files written, numbers consistent."""

import json

import pytest

from fcnkit.errors import InputError
from fcnkit.experiments.gradient_equivalence import run

pytestmark = pytest.mark.usefixtures("one_thread")


def test_tiny_run_writes_results_plot_and_summary(tmp_path):
    results = run(tmp_path / "ge", sizes=(46, 38), repeats=1, width=2, stages=3, chunk=3)
    files = {p.name for p in (tmp_path / "ge").iterdir()}
    assert files == {"results.json", "timing.png", "summary.md"}
    assert (tmp_path / "ge" / "timing.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    saved = json.loads((tmp_path / "ge" / "results.json").read_text())
    assert saved["receptive_field"] == 38 and saved["stride"] == 8
    rows = saved["devices"]["cpu"]["rows"]
    assert [r["size"] for r in rows] == [38, 46]
    assert [r["cells"] for r in rows] == [1, 4]  # (46 - 38) // 8 + 1 = 2 per side
    assert saved["fp64_max_rel_grad_diff"] <= 1e-10
    for r in rows:
        assert r["max_rel_grad_diff_fp32"] < 1e-4
        assert r["patch_flops"] == r["cells"] * rows[0]["whole_flops"]  # one rf-sized patch = the 38x38 image
        assert r["flop_redundancy"] == pytest.approx(r["patch_flops"] / r["whole_flops"])
        assert r["speed_ratio"] == pytest.approx(r["patch_seconds"] / r["whole_seconds"])
    assert rows[0]["flop_redundancy"] == 1.0 and rows[1]["flop_redundancy"] > 1.5
    summary = (tmp_path / "ge" / "summary.md").read_text()
    assert "| 46 | 4 |" in summary and "FLOP redundancy" in summary
    assert results["devices"]["cpu"]["rows"] == rows


def test_budget_skips_sizes_and_bad_settings_are_input_errors(tmp_path):
    results = run(tmp_path / "b", sizes=(38, 46), repeats=1, width=2, budget_minutes=0)
    assert results["devices"]["cpu"] == {"device_name": "cpu", "rows": [], "skipped_sizes": [38, 46]}
    assert "Skipped" in (tmp_path / "b" / "summary.md").read_text()
    with pytest.raises(InputError, match="below the model's receptive field 38"):
        run(tmp_path / "c", sizes=(32,), width=2)
    with pytest.raises(InputError, match="use auto, cpu or cuda"):
        run(tmp_path / "c", sizes=(38,), devices="tpu", width=2)
