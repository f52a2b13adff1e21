"""fcnkit predict on dask.distributed: a LocalCluster (2 worker processes x 1 thread) gives the same
output as the single-process path; a killed worker is retried; a re-run skips finished chunks."""

import numpy as np
import pytest
import torch
import zarr
from _predict_helpers import randomise_zero_parameters, save_abc_run
from PIL import Image

from fcnkit import predict
from fcnkit.app.cluster_predict import _plan, connect, predict_on_cluster
from fcnkit.checkpoint import load_checkpoint
from fcnkit.inference.dask_exec import PLUGIN, run_chunk
from fcnkit.inference.sources import open_image
from fcnkit.models.registry import build_model

pytestmark = pytest.mark.slow  # starts 2 worker processes (each imports torch): ~40-80 s on a busy 2-core machine
MEAN, STD = [0.5] * 3, [0.25] * 3


@pytest.fixture(scope="module")
def client():
    with connect("local:2") as c:  # the cluster --cluster local:2 starts (2 processes x 1 thread)
        yield c


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("dask")
    torch.manual_seed(0)
    model = build_model("allconv", num_classes=3, width=4, stages=2).eval()  # small: the test is about Dask
    randomise_zero_parameters(model, 0.1)  # skip scores start at zero: make them count
    run = save_abc_run(tmp, model, MEAN, STD)
    img = np.random.default_rng(0).integers(0, 255, (200, 250, 3), dtype=np.uint8)
    Image.fromarray(img).save(tmp / "img.png")
    model, _ = load_checkpoint(run)
    src = open_image(tmp / "img.png", 3, MEAN, STD)
    store = tmp / "ref"
    store.mkdir()
    # the single-process path with the workers' thread count (1): another count sums the convolutions
    # in another order (1e-7 apart), and "bit for bit" compares like with like
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for t in _plan(model, src, tmp / "img.png", 64, None, 3, MEAN, STD, store, True):
            run_chunk(t, model=model)
        whole = predict(model, src.read((0, 200), (0, 250)))
    finally:
        torch.set_num_threads(threads)
    assert whole.std() > 1e-3
    return tmp, run, zarr.open_array(str(store / "logits"))[:], whole


def outputs(res):
    return (zarr.open_group(str(res["mask"]))["0"][:], zarr.open_array(str(res["logits"]))[:])


def test_two_workers_equal_single_process_and_load_the_model_once(client, setup):
    tmp, run, ref, whole = setup
    res = predict_on_cluster(run, [tmp / "img.png"], tmp / "out", chunk=64, logits=True, client=client)[0]
    labels, logits = outputs(res)
    assert res["computed"] == res["chunks"] == 16 and res["skipped"] == 0
    assert np.abs(logits - ref).max() == 0  # bit for bit the single-process output
    assert np.abs(logits - whole.numpy()).max() <= 1e-5  # and the whole-image logits
    np.testing.assert_array_equal(labels, ref.argmax(0))
    loads = client.run(lambda dask_worker: dask_worker.plugins[PLUGIN].loads)
    assert sorted(loads.values()) == [1, 1]  # one model per worker, not one per task (16 tasks)
    assert zarr.open_group(str(res["mask"])).attrs["multiscales"][0]["datasets"][0]["path"] == "0"
    assert not (tmp / "out" / ".img.partial").exists()


def test_a_killed_worker_is_retried_and_the_output_is_identical(client, setup):
    tmp, run, ref, _ = setup
    res = predict_on_cluster(
        run, [tmp / "img.png"], tmp / "killed", chunk=64, logits=True, client=client, crash_once=str(tmp / "crashed")
    )[0]
    assert (tmp / "crashed").exists()  # a worker process did die mid-task
    assert np.abs(outputs(res)[1] - ref).max() == 0


def test_a_rerun_after_a_crash_skips_finished_chunks(client, setup):
    tmp, run, ref, _ = setup
    with pytest.raises(RuntimeError):
        predict_on_cluster(
            run, [tmp / "img.png"], tmp / "resumed", chunk=64, logits=True, client=client, fail_chunks={(0, 0), (3, 2)}
        )
    assert len(list((tmp / "resumed" / ".img.partial" / ".fcnkit-done").iterdir())) == 14
    res = predict_on_cluster(run, [tmp / "img.png"], tmp / "resumed", chunk=64, logits=True, client=client)[0]
    assert (res["computed"], res["skipped"]) == (2, 14)
    assert np.abs(outputs(res)[1] - ref).max() == 0


def test_cli_cluster_local(setup, capsys):
    from fcnkit.cli import main as cli

    tmp, run, ref, _ = setup
    assert (
        cli.main(
            [
                "predict",
                str(run),
                str(tmp / "img.png"),
                "--out",
                str(tmp / "cli"),
                "--cluster",
                "local:1",
                "--chunk",
                "64",
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    assert "16 chunks (0 already done)" in capsys.readouterr().out
    np.testing.assert_array_equal(zarr.open_group(str(tmp / "cli" / "img_mask.ome.zarr"))["0"][:], ref.argmax(0))
    assert cli.main(["predict", str(run), str(tmp / "img.png"), "--out", str(tmp / "cli"), "--cluster", "remote"]) == 2
    assert "--cluster 'remote' is not understood" in capsys.readouterr().err
