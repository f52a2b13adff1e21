"""Kill -9 a tiny training over and over, resume each time, and compare with an uninterrupted run.

    python benchmarks/kill_resume.py --kills 24 --seed 0

Each kill moment is drawn at random from: a training step (any of the 12), the n-th trainer.ckpt
write (before its rename), the n-th rename/swap of last/ or best/ (before or after it). A run is
killed up to ``--per-run`` times in a row (each resume may be killed again) before it is let
finish; then its last/ and best/ weights, their steps and the optimizer state are compared with
the uninterrupted run's (tests/faults.py: the same tiny training as tests/test_fault_injection.py).
Prints: kills survived (the resume started and the run finished), resumes bit-identical, max diff.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import faults  # noqa: E402


def _random_kill(rng: random.Random) -> tuple:
    kind = rng.choice(["step", "ckpt", "rename", "rename-after"])
    if kind == "step":
        return ("step", None, rng.randrange(0, 12))
    if kind == "ckpt":  # 3 epoch ends + step checkpoints at steps 2, 6, 10
        return ("ckpt", "before", rng.randrange(1, 7))
    return (kind, rng.choice(["last", "best"]), rng.randrange(1, 4))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=24, help="kills in total")
    parser.add_argument("--per-run", type=int, default=3, help="kills of one run before it may finish")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    root = Path(tempfile.mkdtemp(prefix="kill_resume-"))
    start = time.perf_counter()
    assert faults.run_child(faults.config(root / "reference")) == 0
    reference = faults.state_of(root / "reference")
    kills = survived = runs = identical = 0  # survived: kills after which the run still finished
    worst = 0.0
    while kills < args.kills:
        run = root / f"run{runs}"
        runs += 1
        cfg, resume, run_kills = faults.config(run), False, 0
        for _ in range(rng.randint(1, args.per_run)):
            kill = _random_kill(rng)
            code = faults.run_child(cfg, kill=kill, resume=resume, log=run.parent / f"{run.name}.log")
            resume = resume or code == -9 or (run / "config.yaml").exists()
            if code == -9:
                kills, run_kills = kills + 1, run_kills + 1
                print(f"  {run.name}: killed at {kill}")
            elif code != 0:
                print(f"  {run.name}: exit {code} at {kill}: {(run.parent / f'{run.name}.log').read_text()[-500:]}")
        code = faults.run_child(cfg, resume=resume, log=run.parent / f"{run.name}.log")
        if code != 0:
            print(f"  {run.name}: the final resume failed (exit {code})")
            continue
        survived += run_kills
        difference = faults.max_difference(faults.state_of(run), reference)
        worst = max(worst, difference)
        identical += difference == 0.0 and not faults.stale_files(run)
    print(
        f"{kills} kills in {runs} runs: {survived}/{kills} kills survived (the run resumed to its end), "
        f"{identical}/{runs} runs bit-identical to the uninterrupted run, no temp file left "
        f"(max difference {worst:g}); {time.perf_counter() - start:.0f} s"
    )
    return 0 if identical == runs else 1


if __name__ == "__main__":
    sys.exit(main())
