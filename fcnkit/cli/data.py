"""``fcnkit data list``, ``fcnkit data check PATH [--num-classes N]`` and ``fcnkit data info NAME|PATH``."""

from __future__ import annotations

import argparse


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "data",
        help="check a dataset folder or describe a dataset",
        description="Check a dataset folder or describe a dataset.",
    )
    sub = parser.add_subparsers(dest="data_command", metavar="ACTION", parser_class=type(parser))
    parser.set_defaults(func=lambda args: _usage(parser))

    listing = sub.add_parser("list", help="list the built-in datasets")
    listing.set_defaults(func=run_list)

    check = sub.add_parser("check", help="report every problem of a dataset folder (exit 2 if any)")
    check.add_argument("path", metavar="PATH", help="dataset folder (images/ + masks/, or PASCAL VOC)")
    check.add_argument(
        "--num-classes",
        type=int,
        default=None,
        metavar="N",
        help="labels must be < N (or 255); default: classes.txt, else inferred from training masks",
    )
    check.set_defaults(func=run_check)

    info = sub.add_parser("info", help="print a dataset's DatasetInfo and split sizes")
    info.add_argument("dataset", metavar="NAME|PATH", help="built-in dataset name or dataset folder")
    info.set_defaults(func=run_info)


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2


def run_list(args) -> int:
    from fcnkit.data.registry import dataset_table

    print(f"{'name':<14}{'task':<16}{'classes':>7}  description")
    for name, task, classes, text in dataset_table():
        print(f"{name:<14}{task:<16}{classes:>7}  {text}")
    print("or give the path of a dataset folder (images/ + masks/, or PASCAL VOC)")
    return 0


def run_check(args) -> int:
    from fcnkit.data.checks import inspect_dataset

    report = inspect_dataset(args.path, num_classes=args.num_classes)
    for problem in report.problems:
        print(f"{problem.file}: {problem.message}")
    if report.problems:
        n = len(report.problems)
        print(f"{n} problem{'s' if n != 1 else ''} in {report.root} ({report.num_images} image/mask pairs checked)")
        return 2
    splits = ", ".join(f"{s} {n}" for s, n in report.splits.items())
    print(f"ok: {report.num_images} images, {report.num_classes} classes ({report.kind} layout; {splits})")
    return 0


def run_info(args) -> int:
    from fcnkit.data.registry import describe_dataset

    info, sizes = describe_dataset(args.dataset)
    print(f"name:         {info.name}")
    print(f"task:         {info.task}")
    print(f"num_classes:  {info.num_classes}")
    print(f"in_channels:  {info.in_channels}")
    print(f"class_names:  {', '.join(info.class_names)}")
    print(f"mean:         {', '.join(f'{v:.6g}' for v in info.mean)}")
    print(f"std:          {', '.join(f'{v:.6g}' for v in info.std)}")
    for split, size in sizes.items():
        print(f"{split + ':':<13} {size}")
    return 0
