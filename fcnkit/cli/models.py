"""``fcnkit models [--task T]``: list the registered models (parsing and printing only)."""

from __future__ import annotations

import argparse


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "models",
        help="list the available models",
        description="List the registered models: name, task, trainable parameters (for 21 classes, "
        "3 input channels, default options) and description.",
    )
    parser.add_argument("--task", choices=["segmentation", "classification"], help="only models of this task")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from fcnkit.models.registry import model_table

    rows = model_table(args.task)
    name_w = max([len("name")] + [len(r["name"]) for r in rows])
    task_w = max([len("task")] + [len(r["task"]) for r in rows])
    print(f"{'name':<{name_w}}  {'task':<{task_w}}  {'params':>11}  description")
    for r in rows:
        print(f"{r['name']:<{name_w}}  {r['task']:<{task_w}}  {r['params']:>11,}  {r['description']}")
    return 0
