"""``fcnkit rf MODEL|RUN_DIR [--input-size H W]``: print the receptive-field table and summary."""

from __future__ import annotations


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "rf",
        help="receptive field, stride and offset of a model, layer by layer",
        description="Receptive-field geometry of a registry model (built with num_classes=21) or of a trained run.",
    )
    p.add_argument(
        "model",
        metavar="MODEL|RUN_DIR",
        help="registry name (see 'fcnkit models'), run/checkpoint folder, or package.module:builder",
    )
    p.add_argument(
        "--input-size",
        type=int,
        nargs=2,
        metavar=("H", "W"),
        default=None,
        help="input size to trace at (the 'out' column); default: an odd size the model accepts",
    )
    p.add_argument("--in-channels", type=int, default=None, help="input channels (default: the run's, else 3)")
    p.add_argument("--probe", action="store_true", help="also measure by gradients and print both summaries")
    p.add_argument(
        "--kwargs",
        type=_json,
        default=None,
        metavar="JSON",
        help="for MODEL = package.module:builder (any network), its keyword arguments, e.g. "
        "'{\"weights_backbone\": null}'",
    )
    p.set_defaults(func=run)


def _json(text: str) -> dict:
    import argparse
    import json

    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        raise argparse.ArgumentTypeError(f"'{text}' is not JSON; write e.g. '{{\"num_classes\": 3}}'") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"'{text}' must be a JSON object of keyword arguments")
    return value


def run(args) -> int:
    from fcnkit.app.rf import describe

    print(
        describe(
            args.model, input_size=args.input_size, in_channels=args.in_channels, probe=args.probe, kwargs=args.kwargs
        )
    )
    return 0
