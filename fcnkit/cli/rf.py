"""``fcnkit rf MODEL|RUN_DIR [--input-size H W]``: print the receptive-field table and summary."""
from __future__ import annotations


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "rf", help="receptive field, stride and offset of a model, layer by layer",
        description="Receptive-field geometry of a registry model (built with num_classes=21) or of a trained run.",
    )
    p.add_argument("model", metavar="MODEL|RUN_DIR", help="registry name (see 'fcnkit models') or run/checkpoint folder")
    p.add_argument("--input-size", type=int, nargs=2, metavar=("H", "W"), default=None,
                   help="input size to trace at (the 'out' column); default: an odd size the model accepts")
    p.add_argument("--in-channels", type=int, default=None, help="input channels (default: the run's, else 3)")
    p.add_argument("--probe", action="store_true", help="also measure by gradients and print both summaries")
    p.set_defaults(func=run)


def run(args) -> int:
    from fcnkit.app.rf import describe

    print(describe(args.model, input_size=args.input_size, in_channels=args.in_channels, probe=args.probe))
    return 0
