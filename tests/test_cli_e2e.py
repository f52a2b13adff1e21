"""End to end through the CLI on tiny built-in data: train -> evaluate --json -> resume -> bad input.

Tiny on purpose (16 canvases of 32x40, a 2-stage allconv of width 4, 2 epochs of 2 steps): this
checks the plumbing (run folder, report, checkpoints, resume, errors), not the accuracy; the demo
is where accuracy is measured.
"""

import csv
import json

import pytest

from fcnkit.cli.main import main

TINY = [
    "--data",
    "digit-canvas",
    "--data-option",
    "count=16",
    "--data-option",
    "size=[32,40]",
    "--val-data-option",
    "count=8",
    "--model",
    "allconv",
    "--model-option",
    "width=4",
    "--model-option",
    "stages=2",
    "--model-option",
    "depth=1",
    "--batch-size",
    "8",
    "--device",
    "cpu",
]


def _last_step(run):
    return json.loads((run / "last" / "config.json").read_text())["metrics"]["step"]


@pytest.mark.slow
def test_train_evaluate_resume_and_bad_input(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", *TINY, "--epochs", "2", "--lr", "0.01", "--out", str(run)]) == 0
    out = capsys.readouterr().out
    assert f"run: {run}" in out and "report:" in out
    for name in ("config.yaml", "metrics.csv", "curves.png", "report.md", "confusion.png", "predictions.png"):
        assert (run / name).is_file(), name
    for name in ("best", "last"):
        assert (run / name / "model.safetensors").is_file() and (run / name / "config.json").is_file()
    assert "| mean IU |" in (run / "report.md").read_text()
    assert _last_step(run) == 4  # 2 epochs x 2 batches of 8

    # evaluate the run (its best/) on its own validation data, as JSON
    scores = tmp_path / "scores.json"
    assert main(["evaluate", str(run), "--json", str(scores), "--device", "cpu"]) == 0
    result = json.loads(scores.read_text())
    assert {"pixel_accuracy", "mean_accuracy", "mean_iu", "fw_iu", "iu"} <= set(result)
    assert len(result["iu"]) == 11 and 0.0 <= result["pixel_accuracy"] <= 1.0
    assert result["images"] == 8  # val_data_options (count=8) applied, as in training
    assert "mean_iu" in capsys.readouterr().out

    # resume continues the same run: step 4 -> 6, no restart from 0
    assert main(["train", "--resume", str(run), "--epochs", "3"]) == 0
    assert _last_step(run) == 6
    epochs = [row["epoch"] for row in csv.DictReader((run / "metrics.csv").open()) if row.get("val_mean_iu")]
    assert epochs == ["0", "1", "2"]
    capsys.readouterr()

    # bad input: exit 2 and exactly one line on stderr, naming the fix
    assert main(["train", *TINY, "--model", "alconv", "--out", str(tmp_path / "other")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "did you mean 'allconv'" in err[0]
    assert not (tmp_path / "other").exists()  # nothing written for a run that could not start
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["evaluate", str(empty)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no checkpoint here" in err[0]
    assert main(["train", "--resume", str(empty)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no run to resume" in err[0]
