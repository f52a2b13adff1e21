"""The experiments' shared parts on hand-made inputs: statistics, metrics.csv reading, scaling,
seed bands, the registry and the ``fcnkit experiment`` command."""

import math

import numpy as np
import pytest

from fcnkit.cli import main as cli
from fcnkit.errors import InputError
from fcnkit.experiments import registry, runner
from fcnkit.experiments.plots import new_figure, seed_band, smooth


def test_mean_std_hand_computed():
    assert runner.mean_std([1.0, 2.0, 3.0]) == {"mean": 2.0, "std": 1.0, "n": 3}  # sample std (ddof 1)
    assert runner.mean_std([0.5]) == {"mean": 0.5, "std": 0.0, "n": 1}
    assert runner.mean_std([None, float("nan"), 4.0, 6.0]) == {"mean": 5.0, "std": math.sqrt(2.0), "n": 2}
    assert runner.mean_std([]) == {"mean": None, "std": None, "n": 0}
    assert runner.fmt_mean_std({"mean": 0.51234, "std": 0.0126}) == "0.512 ± 0.013"
    assert runner.fmt_mean_std({"mean": None, "std": None}) == "n/a"


def test_read_metrics_rows(tmp_path):
    # as merge_metrics writes it: a val row shares its (epoch, step) with that step's train row
    (tmp_path / "metrics.csv").write_text(
        "epoch,step,train_loss_step,total_seconds,total_images,total_cells,val_mean_iu,val_pixel_accuracy\n"
        "0,0,2.0,0.5,8,100,,\n"
        "0,1,1.5,1.0,16,200,0.25,0.75\n"
        "1,2,1.0,1.5,24,300,,\n"
        "1,3,0.5,2.5,32,400,,\n"
        "1,3,,,,,0.5,0.875\n"
    )
    train, val = runner.read_metrics(tmp_path)
    assert [r["iteration"] for r in train] == [1, 2, 3, 4]
    assert [r["loss"] for r in train] == [2.0, 1.5, 1.0, 0.5]
    assert train[-1]["seconds"] == 2.5 and train[-1]["images"] == 32 and train[-1]["cells"] == 400
    assert [(v["iteration"], v["mean_iu"], v["seconds"]) for v in val] == [(2, 0.25, 1.0), (4, 0.5, 2.5)]
    assert val[0]["pixel_accuracy"] == 0.75 and val[1]["epoch"] == 1


def test_scaled_budget():
    assert runner.scaled(96, 20, 20) == 96
    assert runner.scaled(96, 5, 20) == 24
    assert runner.scaled(96, 0.01, 20, minimum=2) == 2
    assert runner.scaled(96, None, 20) == 96
    for bad in (0, -1, "x", True):
        with pytest.raises(InputError, match="--budget-minutes"):
            runner.scaled(96, bad, 20)


def test_checks_of_user_input():
    with pytest.raises(InputError, match="did you mean 'nuclei'"):
        runner.pick_datasets(["nucle"], ["digit-canvas", "nuclei"], "sampling")
    assert runner.pick_datasets(None, ["a", "b"], "x") == ["a", "b"]
    with pytest.raises(InputError, match="--seeds"):
        runner.check_seeds(0)


def test_smooth_and_seed_band():
    assert smooth([1.0, 2.0, 3.0, 4.0], 2).tolist() == [1.0, 1.5, 2.5, 3.5]
    fig, axes = new_figure()
    # same x: averaged point by point; std with ddof 1
    grid, mean, std = seed_band(axes[0, 0], [([1, 2], [1.0, 3.0]), ([1, 2], [3.0, 5.0])], "a")
    assert grid.tolist() == [1, 2] and mean.tolist() == [2.0, 4.0] and np.allclose(std, math.sqrt(2.0))
    # different x: interpolated over the range both cover ([1, 3]); y = x and y = 2x -> mean 1.5x
    grid, mean, _ = seed_band(axes[0, 0], [([0, 4], [0.0, 4.0]), ([1, 3], [2.0, 6.0])], "b", points=5)
    assert grid.tolist() == [1.0, 1.5, 2.0, 2.5, 3.0] and np.allclose(mean, 1.5 * grid)


def test_registry_lists_and_suggests():
    names = [n for n, _ in registry.list_experiments()]
    assert names == [
        "gradient-equivalence",
        "sampling",
        "class-balance",
        "downsampling",
        "residual-skips",
        "large-image",
    ]
    with pytest.raises(InputError, match="did you mean 'class-balance'"):
        registry.run_experiment("class-balanc", "out")
    with pytest.raises(InputError, match="drop --datasets"):
        registry.run_experiment("gradient-equivalence", "out", datasets=["nuclei"])


def test_registry_maps_the_common_options(monkeypatch, tmp_path):
    from fcnkit.experiments import gradient_equivalence, sampling

    calls = {}
    monkeypatch.setattr(gradient_equivalence, "run", lambda out, **kw: calls.setdefault("ge", kw))
    monkeypatch.setattr(sampling, "run", lambda out, **kw: calls.setdefault("s", kw))
    registry.run_experiment("gradient-equivalence", tmp_path, seeds=2, budget_minutes=1.5, device="cpu")
    assert calls["ge"] == {"devices": "cpu", "repeats": 2, "budget_minutes": 1.5}
    registry.run_experiment("sampling", tmp_path, datasets=["nuclei"])
    assert calls["s"] == {"device": "auto", "datasets": ["nuclei"], "progress": None}  # None keeps the defaults


def test_cli_list_and_errors(capsys):
    assert cli.main(["experiment", "list"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in ("gradient-equivalence", "sampling", "class-balance", "downsampling"))
    assert cli.main(["experiment", "samplng", "--out", "x"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("fcnkit: unknown experiment 'samplng' (did you mean 'sampling'?)") and err.count("\n") == 1


def test_cli_passes_arguments_and_prints_files(monkeypatch, tmp_path, capsys):
    seen = {}

    def fake(name, out, **kw):
        seen.update(name=name, out=out, **kw)
        kw["progress"]("[1/1] done")
        (out / "plot.png").parent.mkdir(parents=True, exist_ok=True)
        (out / "plot.png").write_bytes(b"")
        return {}

    monkeypatch.setattr(registry, "run_experiment", fake)
    code = cli.main(
        [
            "experiment",
            "downsampling",
            "--out",
            str(tmp_path / "d"),
            "--seeds",
            "2",
            "--budget-minutes",
            "3",
            "--device",
            "cpu",
            "--datasets",
            "digits",
        ]
    )
    assert code == 0
    assert (seen["name"], seen["seeds"], seen["budget_minutes"], seen["device"], seen["datasets"]) == (
        "downsampling",
        2,
        3.0,
        "cpu",
        ["digits"],
    )
    out = capsys.readouterr().out
    assert "[1/1] done" in out and f"wrote {tmp_path / 'd' / 'summary.md'}" in out and "plot.png" in out
