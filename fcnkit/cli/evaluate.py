"""``fcnkit evaluate RUN_DIR``: the FCN scores of a run's best checkpoint on a split."""

from __future__ import annotations

import argparse


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "evaluate",
        help="score a trained run or checkpoint on a dataset split",
        description="Pixel accuracy, mean accuracy, mean IU, frequency-weighted IU and per-class IU "
        "of RUN_DIR/best (else last) or a checkpoint folder.",
    )
    p.add_argument("run", metavar="RUN_DIR", help="run folder (made by 'fcnkit train') or checkpoint folder")
    p.add_argument("--data", default=None, help="dataset name or folder (default: the one it was trained on)")
    p.add_argument("--split", default="val", help="val | test | train (default val)")
    p.add_argument("--json", metavar="FILE", default=None, help="also write the scores as JSON")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.add_argument("--batch-size", type=int, default=8, help="images per forward pass (same-size images only)")
    p.set_defaults(func=run)


def format_scores(result: dict, class_names=None) -> str:
    """The four scores, then the per-class IU, as aligned text."""
    lines = [
        f"{result.get('checkpoint', '')} on {result.get('data')} [{result.get('split')}], {result.get('images')} images"
    ]
    if "accuracy" in result:  # a classification checkpoint
        lines += [
            f"  {'accuracy':<15} {result['accuracy']:.4f}",
            f"  {'mean_accuracy':<15} {result['mean_accuracy']:.4f}",
        ]
        per_class = result.get("per_class_accuracy") or []
        names = class_names or [str(i) for i in range(len(per_class))]
        lines.append(
            "  per-class accuracy: "
            + ", ".join(f"{n}={'n/a' if v != v else f'{v:.3f}'}" for n, v in zip(names, per_class))
        )
        return "\n".join(lines)
    for key in ("pixel_accuracy", "mean_accuracy", "mean_iu", "fw_iu", "mean_dice"):
        if key in result:
            lines.append(f"  {key:<15} {result[key]:.4f}")
    iu = result.get("iu") or []
    names = class_names or [str(i) for i in range(len(iu))]
    lines.append("  per-class IU: " + ", ".join(f"{n}={'n/a' if v != v else f'{v:.3f}'}" for n, v in zip(names, iu)))
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from fcnkit.app.evaluate import check_scores_file, evaluate, write_scores

    if args.json:
        check_scores_file(args.json)  # before the work, not after it
    result = evaluate(args.run, data=args.data, split=args.split, device=args.device, batch_size=args.batch_size)
    print(format_scores(result, result.get("classes")))
    if args.json:
        write_scores(result, args.json)
        print(f"scores written to {args.json}")
    return 0
