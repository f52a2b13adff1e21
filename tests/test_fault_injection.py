"""kill -9 at chosen moments of a tiny training, then --resume: the result is bit-identical to an
uninterrupted run (CPU), no temp file is left, and two trainings into one folder do not mix.

The tiny training (tests/faults.py) draws randomness everywhere fcnkit does: augmentation (flip,
scale), a random regime (loss sampling), dropout (torch's global RNG) and the shuffled order.
Each run is a forked child (~1 s); a longer loop of random kills is benchmarks/kill_resume.py.
"""

import os
import time

import faults
import pytest

from fcnkit.cli.main import main

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    run = tmp_path_factory.mktemp("reference") / "run"
    assert faults.run_child(faults.config(run)) == 0
    return faults.state_of(run)


@pytest.mark.parametrize("moment", list(faults.KILLS))
def test_kill_then_resume_is_bit_identical(tmp_path, reference, moment):
    run = tmp_path / "run"
    cfg = faults.config(run)
    log = tmp_path / "stderr.txt"
    assert faults.run_child(cfg, kill=faults.KILLS[moment]) == -9
    assert faults.run_child(cfg, resume=True, log=log) == 0, log.read_text()[-3000:]
    assert faults.max_difference(faults.state_of(run), reference) == 0.0
    assert faults.stale_files(run) == []  # temp files of the killed process removed, lock released


def test_stop_at_max_steps_mid_epoch_then_resume_with_more_is_bit_identical(tmp_path, reference):
    run = tmp_path / "run"
    assert faults.run_child(faults.config(run, max_steps=6)) == 0  # 2 steps into epoch 1 of 3
    assert faults.run_child(faults.config(run), resume={"max_steps": 12}) == 0
    assert faults.max_difference(faults.state_of(run), reference) == 0.0


def test_classification_kill_mid_epoch_then_resume_is_bit_identical(tmp_path):
    # random input sizes per batch (sizes: drawn per epoch), flips, dropout
    ref, run = tmp_path / "reference", tmp_path / "run"
    assert faults.run_child(faults.config_classification(ref)) == 0
    cfg = faults.config_classification(run)
    log = tmp_path / "stderr.txt"
    assert faults.run_child(cfg, kill=faults.KILLS["mid-epoch (after a step checkpoint)"]) == -9
    assert faults.run_child(cfg, resume=True, log=log) == 0, log.read_text()[-3000:]
    assert faults.max_difference(faults.state_of(run), faults.state_of(ref)) == 0.0


def test_kill_with_loader_workers_resumes_at_once_and_bit_identical(tmp_path, reference):
    # the killed trainer's orphaned DataLoader workers do not keep its lock (a POSIX lock, not a
    # flock); per-item seeds make 2 workers draw what 0 workers (the reference) draw
    run = tmp_path / "run"
    cfg = faults.config(run, num_workers=2)
    log = tmp_path / "stderr.txt"
    assert faults.run_child(cfg, kill=faults.KILLS["mid-epoch (after a step checkpoint)"]) == -9
    assert faults.run_child(cfg, resume=True, log=log) == 0, log.read_text()[-3000:]
    assert faults.max_difference(faults.state_of(run), reference) == 0.0


def test_second_training_into_a_locked_run_exits_2_naming_the_holder(tmp_path, capsys):
    run = tmp_path / "run"
    pause = tmp_path / "pause"
    pause.write_text("")
    pid = os.fork()
    if pid == 0:  # a training that holds the lock until the test lets it go
        code = 1
        try:
            from fcnkit.utils.lock import RunLock

            with RunLock(run):
                while pause.exists():
                    time.sleep(0.02)
            code = 0
        finally:
            os._exit(code)
    try:
        for _ in range(500):
            if (run / ".lock").is_file() and (run / ".lock").read_text().strip():
                break
            time.sleep(0.01)
        assert main(["train", "--data", "squares", "--out", str(run)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and f"locked by process {pid}" in err[0]
        assert sorted(p.name for p in run.iterdir()) == [".lock"]  # nothing written by the second
    finally:
        pause.unlink()
        os.waitpid(pid, 0)
    assert not (run / ".lock").exists()  # a clean exit removes it


def test_concurrent_trainings_the_second_exits_2_and_the_first_is_untouched(tmp_path, reference):
    run = tmp_path / "run"
    cfg = faults.config(run)
    # the first is killed mid-training: its lock dies with it and does not block the resume
    assert faults.run_child(cfg, kill=faults.KILLS["mid-epoch (after a step checkpoint)"]) == -9
    pause = tmp_path / "pause"
    pause.write_text("")
    first = faults.start_child(cfg, kill=("pause", str(pause), 9), resume=True, log=tmp_path / "first.txt")
    try:
        for _ in range(3000):
            if (tmp_path / "pause.reached").exists():
                break
            time.sleep(0.01)
        log = tmp_path / "second.txt"
        assert faults.run_child(cfg, resume=True, log=log) == 2  # a resume ...
        message = log.read_text().strip().splitlines()
        assert len(message) == 1 and f"locked by process {first}" in message[0]
        assert faults.run_child(dict(cfg, overwrite=True), log=log) == 2  # ... and a fresh --overwrite run
    finally:
        pause.unlink()
        assert faults.wait_child(first) == 0, (tmp_path / "first.txt").read_text()[-3000:]
    assert faults.max_difference(faults.state_of(run), reference) == 0.0
