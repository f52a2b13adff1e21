"""``fcnkit export RUN_DIR --format onnx|torchscript [--out FILE] [--opset N]``: parse, call, print."""

from __future__ import annotations

from fcnkit.cli.args import add_run_dir


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "export",
        help="export a checkpoint to ONNX or TorchScript (dynamic batch/H/W, verified)",
        description="Export a trained model to one file that runs without fcnkit (onnxruntime or torch.jit.load), "
        "with dynamic batch, height and width; classes, palette and normalisation travel as metadata. "
        "The export is checked against PyTorch at three input sizes.",
    )
    add_run_dir(p)
    p.add_argument("--format", dest="fmt", choices=("onnx", "torchscript"), default="onnx", help="default onnx")
    p.add_argument(
        "--out",
        default=None,
        metavar="FILE",
        help="output file (default: model.onnx / model.pt inside the checkpoint folder)",
    )
    p.add_argument("--opset", type=int, default=None, metavar="N", help="ONNX opset (default 17)")
    p.set_defaults(func=run)


def run(args) -> int:
    from fcnkit.app.export import DEFAULT_OPSET, export_checkpoint

    r = export_checkpoint(args.run_dir, args.fmt, out=args.out, opset=args.opset or DEFAULT_OPSET)
    sizes = ", ".join("x".join(str(v) for v in s) for s in r["sizes"])
    opset = f", opset {r['opset']}" if r["opset"] else ""
    print(f"{r['path']}: {r['format']}{opset}, dynamic batch/height/width")
    print(f"verified against PyTorch at {sizes}: max difference {r['max_diff']:.3g} (logits up to {r['scale']:.3g})")
    return 0
