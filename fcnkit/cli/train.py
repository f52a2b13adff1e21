"""``fcnkit train``: parse flags into a TrainConfig, call fcnkit.app.train.train, print the result."""

from __future__ import annotations

import argparse

# flag -> (config key, help); every flag defaults to None = "not given", so the YAML file or the
# built-in default applies (see fcnkit.engine.config)
_FLAGS = {
    "--data": ("data", "dataset name ('fcnkit data list') or folder"),
    "--val-split": ("val_split", "split validated every epoch (default val)"),
    "--val-fraction": (
        "val_fraction",
        "folder data without split lists: this fraction of images for val (seeded by --seed)",
    ),
    "--test-fraction": ("test_fraction", "folder data without split lists: this fraction of images for test"),
    "--task": ("task", "segmentation (default) | classification"),
    "--model": ("model", "model name ('fcnkit models'; default allconv, classification: allconv_cls)"),
    "--init-from": ("init_from", "initialise the model from this checkpoint or run folder (matching tensors)"),
    "--sizes": ("sizes", "classification: train at these input sizes, one per batch (e.g. 24,28,36)"),
    "--weights": ("weights", "initial backbone weights file"),
    "--epochs": ("epochs", "number of epochs (default 10)"),
    "--max-steps": ("max_steps", "stop after N optimizer steps"),
    "--batch-size": ("batch_size", "images per batch (default 8; heavy: 1)"),
    "--lr": ("lr", "learning rate (default: adam 1e-3, sgd 1e-2, heavy 1e-4)"),
    "--optimizer": ("optimizer", "adam | sgd | heavy (batch 1, momentum 0.99)"),
    "--momentum": ("momentum", "SGD momentum (default 0.9)"),
    "--lr-schedule": (
        "lr_schedule",
        "none (constant, default) | cosine | poly (power 0.9; per step, to 0 at the last step)",
    ),
    "--warmup-steps": ("warmup_steps", "linear learning-rate warmup over the first N steps (default 0)"),
    "--val-every-n-steps": (
        "val_every_n_steps",
        "validate (and save best/, last/) every N steps instead of every epoch",
    ),
    "--logger": ("logger", "csv (default) | tensorboard (TensorBoard event files too; lr logged either way)"),
    "--loss": ("loss", "ce (default) | dice | focal | ce+dice; class weights and ignore 255 apply to each"),
    "--backbone": ("backbone", "fcn8s/16s/32s backbone: allconv (default) | vgg16 | resnet18 | resnet50"),
    "--weight-decay": ("weight_decay", "weight decay (default 0)"),
    "--class-weights": ("class_weights", "none | inverse | median (median frequency balancing)"),
    "--precision": ("precision", "32 | 16-mixed | bf16-mixed"),
    "--devices": ("devices", "number of devices; > 1 trains with DDP"),
    "--num-workers": ("num_workers", "data loader worker processes (default 0)"),
    "--threads": ("threads", "CPU threads for training (default: torch's)"),
    "--seed": ("seed", "random seed (default 0)"),
    "--device": ("device", "auto | cpu | cuda (auto: GPU when present)"),
    "--out": ("out", "run folder (default runs/<model>-<data>)"),
    "--resume": ("resume", "continue the run in this folder"),
    "--regime": (
        "regime",
        "whole (default) | loss-sampling[:p=0.25,seed=0] | class-balanced[:by=sampling|inverse|median] "
        "| patchwise[:sampler=uniform|class-balanced|grid,patch_size=rf|N,patches_per_image=4] "
        "| tiled[:tile=auto|N,memory=2G,sample=whole|loss-sampling|class-balanced,...] "
        "(whole-image gradient, tile by tile)",
    ),
    "--log-every-n-steps": ("log_every_n_steps", "log the step loss every N steps"),
    "--checkpoint-every-n-steps": (
        "checkpoint_every_n_steps",
        "also save the trainer state every N steps (default 100)",
    ),
    "--divergence-factor": (
        "divergence_factor",
        "stop when the loss exceeds its running median by this factor (default 100)",
    ),
    "--divergence-patience": ("divergence_patience", "... for this many steps in a row (default 20)"),
}


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "train",
        help="train a segmentation or classification model (Lightning)",
        description="Train a segmentation (or, --task classification, a classification) model. "
        "Flags override the --config YAML file, "
        "whose keys are the flag names (batch_size or batch-size).",
    )
    p.add_argument("--config", metavar="FILE", help="YAML file with any of the keys below")
    for flag, (key, text) in _FLAGS.items():
        p.add_argument(flag, dest=key, default=None, metavar=key.split("_")[0].upper(), help=text)
    p.add_argument(
        "--data-option",
        dest="data_options",
        action="append",
        metavar="KEY=VALUE",
        default=None,
        help="dataset option, repeatable (e.g. count=200, size=[64,84])",
    )
    p.add_argument(
        "--val-data-option",
        dest="val_data_options",
        action="append",
        metavar="KEY=VALUE",
        default=None,
        help="dataset option for the validation/test splits only, repeatable (e.g. count=300)",
    )
    p.add_argument(
        "--model-option",
        dest="model_options",
        action="append",
        metavar="KEY=VALUE",
        default=None,
        help="model option, repeatable (e.g. width=8)",
    )
    p.add_argument(
        "--augment",
        nargs="?",
        const=True,
        default=None,
        metavar="NAMES",
        help="augmentation (torchvision v2): alone = flip,scale; or a list of scale[:LO-HI], crop[:N], "
        "flip, vflip, rot90, color (e.g. --augment flip,rot90,crop:128), as in the YAML",
    )
    p.add_argument(
        "--sync-batchnorm",
        dest="sync_batchnorm",
        action="store_const",
        const=True,
        default=None,
        help="DDP: BatchNorm statistics over all processes (as one process with the global batch)",
    )
    p.add_argument(
        "--overwrite",
        action="store_const",
        const=True,
        default=None,
        help="start a fresh run in a folder that already holds one (removes its checkpoints)",
    )
    p.set_defaults(func=run)


def parse_options(items: list[str] | None, flag: str) -> dict | None:
    """``["a=1", "b=[2,3]"]`` -> ``{"a": 1, "b": [2, 3]}`` (values read as YAML)."""
    import yaml

    from fcnkit.errors import InputError

    if not items:
        return None
    options = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise InputError(f"{flag} {item!r}: expected KEY=VALUE, e.g. {flag} count=200")
        try:
            options[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError:
            options[key.strip()] = value
    return options


def run(args: argparse.Namespace) -> int:
    from fcnkit.app.train import is_main_process, train
    from fcnkit.engine.config import load_config

    overrides = {key: getattr(args, key) for key, _ in _FLAGS.values()}
    overrides.update(
        augment=args.augment,
        overwrite=args.overwrite,
        data_options=parse_options(args.data_options, "--data-option"),
        val_data_options=parse_options(args.val_data_options, "--val-data-option"),
        model_options=parse_options(args.model_options, "--model-option"),
    )
    run_dir = train(load_config(args.config, overrides))
    if is_main_process():  # one summary, not one per DDP process
        print(summary(run_dir))
    return 0


def summary(run_dir) -> str:
    """A few lines: the run folder, the best validation scores, where the report is."""
    import json

    lines = [f"run: {run_dir}"]
    if (run_dir / "init_from.json").is_file():
        from fcnkit.app.init_from import InitReport

        lines.append(InitReport(**json.loads((run_dir / "init_from.json").read_text())).summary())
    best = run_dir / "best" / "config.json"
    if best.is_file():
        m = json.loads(best.read_text()).get("metrics", {})
        keys = ("accuracy", "pixel_accuracy", "mean_accuracy", "mean_iu", "fw_iu", "mean_dice")
        scores = "  ".join(f"{k}={m[k]:.4f}" for k in keys if isinstance(m.get(k), float))
        lines.append(f"best (epoch {m.get('epoch')}): {scores}")
    elif (run_dir / "last").is_dir():
        lines.append(
            "no validation ran (training stopped before the first one, at the end of epoch 1): no scores "
            "and no best/; train longer or pass --val-every-n-steps N"
        )
    if (run_dir / "report.md").is_file():
        lines.append(f"report: {run_dir / 'report.md'}")
    return "\n".join(lines)
