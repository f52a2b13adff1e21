"""``fcnkit convert``: a torchvision classifier's weights -> a convolutionalized checkpoint folder."""

from __future__ import annotations


def add_parser(sub) -> None:
    p = sub.add_parser(
        "convert",
        help="turn a trained classifier into an FCN checkpoint (Linear -> conv)",
        description="Load a local torchvision classifier weights file, convolutionalize it (fully connected layers "
        "become convolutions), and write a checkpoint folder that 'fcnkit predict' and "
        "'fcnkit train --init-from' accept.",
    )
    p.add_argument("--arch", required=True, help="torchvision classifier, e.g. torchvision:vgg16, torchvision:resnet50")
    p.add_argument(
        "--weights",
        required=True,
        help="local state dict (.pth/.pt via torch.save, or .safetensors); nothing is downloaded",
    )
    p.add_argument(
        "--out",
        required=True,
        help="checkpoint folder to write (new or empty; an existing checkpoint only with --overwrite)",
    )
    p.add_argument(
        "--overwrite", action="store_true", help="replace the checkpoint already in --out (nothing else is deleted)"
    )
    p.add_argument(
        "--num-classes",
        type=int,
        default=None,
        help="classes of the FCN (default: the weights file's); a different number re-initialises the last layer",
    )
    p.add_argument(
        "--input-size", type=int, default=224, help="native input size the classifier was trained on (default 224)"
    )
    p.add_argument(
        "--pool",
        choices=["window", "none"],
        default="window",
        help="global average pool: 'window' = native-size window average (default), 'none' = score each feature cell",
    )
    p.add_argument(
        "--output",
        choices=["dense", "coarse"],
        default="dense",
        help="'dense' = logits upsampled to the input size (default), 'coarse' = the score grid",
    )
    p.set_defaults(func=run)


def run(args) -> int:
    from fcnkit.app.convert import convert_classifier

    result = convert_classifier(
        args.arch,
        args.weights,
        args.out,
        num_classes=args.num_classes,
        input_size=args.input_size,
        pool=args.pool,
        output=args.output,
        overwrite=args.overwrite,
    )
    for note in result.notes:
        print(f"note: {note}")
    g = result.config["geometry"]
    print(
        f"wrote {result.path}: convolutionalized {args.arch}, {result.config['num_classes']} classes, native input "
        f"{args.input_size}x{args.input_size}, stride {tuple(g['stride'])}, receptive field {tuple(g['size'])}, "
        f"offset {tuple(g['offset'])}"
    )
    return 0
