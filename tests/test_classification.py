"""Variable-size classification: the size-grouping batch sampler, resized items, scores, task checks,
and end to end through the CLI (train a few steps at two sizes, predict at three others)."""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DistributedSampler

from fcnkit.data.sized_batches import SizedItems, SizeGroupedBatchSampler, parse_sizes
from fcnkit.engine.classification import ClassificationDataModule
from fcnkit.engine.config import TrainConfig
from fcnkit.errors import InputError
from fcnkit.metrics import classification_scores

A, B = (28, 28), (36, 40)


def test_native_sizes_grouped_in_sampler_order():
    sizes = [A, B, A, A, B, A, B]
    batches = SizeGroupedBatchSampler(list(range(7)), 3, item_sizes=sizes)
    assert list(batches) == [[0, 2, 3], [1, 4, 6], [5]]  # full batches as they fill, then the partial one
    assert len(batches) == 3
    order = [6, 5, 4, 3, 2, 1, 0]
    assert list(SizeGroupedBatchSampler(order, 2, item_sizes=sizes)) == [[6, 4], [5, 3], [2, 0], [1]]
    dropped = SizeGroupedBatchSampler(list(range(7)), 3, drop_last=True, item_sizes=sizes)
    assert list(dropped) == [[0, 2, 3], [1, 4, 6]] and len(dropped) == 2


def test_drawn_sizes_one_per_batch_reproducible_and_all_used():
    grid = [(24, 24), (36, 36), (28, 40)]
    batches = SizeGroupedBatchSampler(range(10), 4, sizes=grid)
    torch.manual_seed(0)
    first = list(batches)
    assert len(first) == len(batches) == 3
    assert [[i for i, _ in b] for b in first] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    for batch in first:
        assert len({size for _, size in batch}) == 1  # one size per batch
    torch.manual_seed(0)
    assert list(batches) == first  # seeded by torch's global RNG (seed_everything)
    seen = {b[0][1] for _ in range(30) for b in batches}
    assert seen == set(grid)


def test_ddp_shares_cover_the_data_with_one_size_per_batch():
    sizes = [A if i % 3 else B for i in range(10)]
    shares = []
    for rank in (0, 1):
        sampler = DistributedSampler(range(10), num_replicas=2, rank=rank, shuffle=True, seed=0)
        batches = SizeGroupedBatchSampler(sampler, 2, item_sizes=sizes)
        got = list(batches)
        assert len(got) == len(batches)
        assert all(len({sizes[i] for i in b}) == 1 for b in got)
        shares.append({i for b in got for i in b})
    assert shares[0] | shares[1] == set(range(10)) and not shares[0] & shares[1]


def test_training_loader_shards_itself_under_ddp_keeping_the_sizes():
    # fcnkit shards the training loader itself (Lightning's use_distributed_sampler is off, see
    # fcnkit.engine.resumable): rank 1 of 2 gets every other item of the epoch's order
    import types

    from fcnkit.engine.resumable import EpochSampler, SeededBatches

    cfg = TrainConfig(data="digits", task="classification", sizes=[24, 32], batch_size=32).resolved()
    data = ClassificationDataModule(cfg)
    data.trainer = types.SimpleNamespace(world_size=2, global_rank=1)
    batches = data.train_dataloader().batch_sampler
    assert isinstance(batches, SeededBatches) and isinstance(batches.batch_sampler, SizeGroupedBatchSampler)
    shard = batches.sampler
    assert isinstance(shard, EpochSampler) and (shard.num_replicas, shard.rank) == (2, 1)
    assert (
        batches.batch_sampler.sizes == [(24, 24), (32, 32)] and len(batches) == 63
    )  # 2000 of the 4000 digits, 32 a batch
    first = next(iter(batches))
    assert all(isinstance(key, tuple) and key[0][1] in [(24, 24), (32, 32)] for key in first)


def test_resized_item_equals_resizing_before_normalising():
    from fcnkit.data import load_dataset
    from fcnkit.data.io import to_unit_float

    ds = load_dataset("digits", "val")
    item = SizedItems(ds)[(3, (40, 36))]
    assert item["image"].shape == (1, 40, 36) and int(item["label"]) == int(ds[3]["label"])
    raw = torch.from_numpy(to_unit_float(ds.raw(3)[0]))[None, None].double()
    grown = F.interpolate(raw, size=(40, 36), mode="bilinear", align_corners=False)[0]
    mean, std = ds.info.mean[0], ds.info.std[0]
    torch.testing.assert_close(item["image"].double(), (grown - mean) / std, atol=1e-5, rtol=0)
    assert torch.equal(SizedItems(ds)[3]["image"], ds[3]["image"])  # a plain index: untouched


def test_scores_hand_computed():
    cm = torch.tensor([[3, 1, 0], [0, 2, 2], [0, 0, 0]])
    s = classification_scores(cm)
    assert s["accuracy"] == pytest.approx(5 / 8)
    assert s["per_class_accuracy"][:2] == pytest.approx([0.75, 0.5]) and np.isnan(s["per_class_accuracy"][2])
    assert s["mean_accuracy"] == pytest.approx(0.625)  # the class without examples is left out


def test_sizes_option_checks():
    cfg = TrainConfig.from_dict({"data": "digits", "task": "classification", "sizes": "24, 28, [28, 36]"}).resolved()
    assert cfg.sizes == [24, 28, [28, 36]] and cfg.model == "allconv_cls"
    assert parse_sizes(cfg.sizes) == [(24, 24), (28, 28), (28, 36)]
    with pytest.raises(InputError, match=r"sizes: \[1, 2, 3\] is not a size"):
        TrainConfig.from_dict({"sizes": [[1, 2, 3]]})
    with pytest.raises(InputError, match="augment: \\[scale\\]"):
        TrainConfig(data="digit-canvas", sizes=[24]).resolved()
    with pytest.raises(InputError, match="use sizes"):
        ClassificationDataModule(TrainConfig(data="digits", task="classification", augment=["scale"]).resolved())


@pytest.mark.parametrize(
    "settings, message",
    [
        (
            {"data": "digits"},
            "digits' is a classification dataset but the task is segmentation; pass --task classification",
        ),
        (
            {"data": "digits", "task": "classification", "model": "allconv"},
            "'allconv' is a segmentation model but the task is classification",
        ),
        (
            {"data": "digit-canvas", "task": "classification", "data_options": {"count": 4}},
            "is a segmentation dataset but the task is classification",
        ),
    ],
)
def test_task_mismatch_is_an_input_error(tmp_path, settings, message):
    from fcnkit.app.train import train

    with pytest.raises(InputError, match=message):
        train(TrainConfig(out=str(tmp_path / "run"), device="cpu", **settings))
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_train_at_two_sizes_predict_at_three_unseen(tmp_path, capsys):
    from fcnkit.checkpoint import load_checkpoint
    from fcnkit.cli.main import main
    from fcnkit.data import load_dataset

    run = tmp_path / "cls"
    args = [
        "train",
        "--task",
        "classification",
        "--data",
        "digits",
        "--model-option",
        "width=8",
        "--model-option",
        "depth=1",
        "--sizes",
        "24,32",
        "--epochs",
        "1",
        "--batch-size",
        "32",
        "--lr",
        "0.003",
        "--device",
        "cpu",
        "--threads",
        "1",
        "--out",
        str(run),
    ]
    assert main(args) == 0
    assert "accuracy=" in capsys.readouterr().out

    # the loader really mixes sizes: each batch one of the two, both used
    cfg = TrainConfig(data="digits", task="classification", sizes=[24, 32], batch_size=32).resolved()
    torch.manual_seed(0)
    shapes = [tuple(b["image"].shape[-2:]) for _, b in zip(range(12), ClassificationDataModule(cfg).train_dataloader())]
    assert set(shapes) == {(24, 24), (32, 32)}

    config = json.loads((run / "best" / "config.json").read_text())
    assert config["task"] == "classification" and config["classes"] == [str(k) for k in range(10)]
    assert len(config["normalization"]["mean"]) == 1 and config["metrics"]["accuracy"] > 0.5
    assert (run / "report.md").is_file() and "accuracy" in (run / "report.md").read_text()

    model, _ = load_checkpoint(run)
    val = load_dataset("digits", "val")
    images = torch.stack([val[i]["image"] for i in range(200)])
    labels = torch.stack([val[i]["label"] for i in range(200)])
    with torch.no_grad():
        for size in [(28, 28), (40, 40), (57, 33)]:  # 28 is the native size, never a training size here
            x = F.interpolate(images, size=size, mode="bilinear", align_corners=False)
            logits = model(x)
            assert logits.shape == (200, 10)
            if size == (28, 28):
                assert (logits.argmax(1) == labels).float().mean() > 0.5  # chance: 0.1

    assert main(["evaluate", str(run), "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "accuracy" in out and "per-class accuracy" in out and "mean_iu" not in out
