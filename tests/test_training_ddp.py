"""The validation confusion matrix is a sum-reduced torchmetrics state: under DDP (2 CPU processes,
gloo) every process ends up with the matrix of the WHOLE validation set, as Lightning's
``strategy="ddp"`` would see it."""

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from fcnkit.engine.metric import ConfusionMatrix
from fcnkit.metrics import confusion_matrix

K = 3


def _shard(rank):
    g = torch.Generator().manual_seed(rank)
    logits = torch.randn(2, K, 5, 6, generator=g)
    target = torch.randint(0, K, (2, 5, 6), generator=g)
    target[0, 0] = 255
    return logits, target


def _worker(rank, world, port, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        metric = ConfusionMatrix(K)
        metric.update(*_shard(rank))
        local = metric.cm.clone()
        synced = metric.compute()  # torchmetrics all-reduces the "sum" state here
        torch.save({"local": local, "synced": synced.clone()}, os.path.join(out, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_confusion_matrix_state_sums_across_two_processes(tmp_path):
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    results = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    expected = sum(confusion_matrix(logits.argmax(1), t, K) for logits, t in map(_shard, range(2)))
    assert not torch.equal(results[0]["local"], results[1]["local"])  # the shards differ
    for r in results:
        assert torch.equal(r["synced"], expected)
