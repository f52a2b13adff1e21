"""``fcnkit demo``: train, evaluate and predict on the built-in digit-canvas data in a few minutes."""

from __future__ import annotations

import argparse


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "demo",
        help="train + evaluate + predict on built-in data (a few minutes on CPU)",
        description="Train an all-convolutional net on digit-canvas (configs/demo.yaml), "
        "evaluate it on val and test, predict a few images, write report.md.",
    )
    p.add_argument(
        "--out", default="runs/demo", help="run folder (default runs/demo; a previous demo there is replaced)"
    )
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.add_argument("--config", default=None, help="another YAML config instead of configs/demo.yaml")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from fcnkit.app.demo import run_demo
    from fcnkit.cli.evaluate import format_scores

    result = run_demo(out=args.out, device=args.device, config=args.config)
    print()
    for split in ("val", "test"):
        if result.get(split):
            print(format_scores(result[split], result[split].get("classes")))
    print(f"trained in {result['train_seconds']:.0f} s, {result['seconds']:.0f} s in all")
    print(f"predictions: {result['run'] / 'predictions'}/ ({len(result['predictions'])} masks + overlays)")
    print(f"report: {result['report']}")
    return 0
