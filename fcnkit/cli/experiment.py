"""``fcnkit experiment NAME --out DIR [--seeds N] [--budget-minutes M] [--device D] [--datasets ...]``
and ``fcnkit experiment list``: parsing and printing only (:mod:`fcnkit.experiments.registry`)."""

from __future__ import annotations

from pathlib import Path


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "experiment",
        help="run a reproducible experiment (results.json, PNG plots, summary.md)",
        description="Run an experiment into --out: results.json (every number), PNG plots and summary.md. "
        "'fcnkit experiment list' lists them.",
    )
    parser.add_argument("name", metavar="NAME", help="experiment name, or 'list'")
    parser.add_argument("--out", default=None, metavar="DIR", help="output folder (default runs/experiments/NAME)")
    parser.add_argument(
        "--seeds",
        type=int,
        default=None,
        metavar="N",
        help="seeds per configuration (default 3; gradient-equivalence: timing repeats, default 5)",
    )
    parser.add_argument(
        "--budget-minutes",
        type=float,
        default=None,
        metavar="M",
        help="scale the default settings (sized for 20 minutes on a 2-core CPU) to about M minutes",
    )
    parser.add_argument(
        "--device", choices=("auto", "cpu", "cuda"), default="auto", help="auto: CUDA when present (default)"
    )
    parser.add_argument(
        "--datasets", nargs="+", default=None, metavar="NAME", help="run only these of the experiment's datasets"
    )
    parser.set_defaults(func=run)


def run(args) -> int:
    from fcnkit.experiments.registry import list_experiments, run_experiment

    if args.name == "list":
        for name, text in list_experiments():
            print(f"{name:<22}{text}")
        return 0
    out = Path(args.out) if args.out else Path("runs") / "experiments" / args.name
    run_experiment(
        args.name,
        out,
        seeds=args.seeds,
        budget_minutes=args.budget_minutes,
        device=args.device,
        datasets=args.datasets,
        progress=lambda line: print(line, flush=True),
    )
    for name in ("results.json", "summary.md"):
        print(f"wrote {out / name}")
    for png in sorted(out.glob("*.png")):
        print(f"wrote {png}")
    return 0
