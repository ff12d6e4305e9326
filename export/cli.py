"""`pocketml export` and `pocketml validate`. Light: converters are imported inside the handlers."""

from __future__ import annotations

import argparse
from pathlib import Path

from pocketml.export.registry import format_names

from pocketml.artifact import PRECISIONS
from pocketml.config import Flag, add_flags
from pocketml.configs.export import COREML_TARGETS, ONNX_OPSETS, ExportConfig

# The flags that set ExportConfig fields (type and default come from there); the preprocessing flags,
# shared with `predict`, are below.
EXPORT_FLAGS = (
    Flag("--labels", "labels", "labels, one per line (replaces spec.json's)", "FILE"),
    Flag("--formats", "formats", f"comma-separated, from {','.join(format_names())} (default: all)"),
    Flag("--precisions", "precisions", f"comma-separated, from {','.join(PRECISIONS)} (default: all that apply)"),
    Flag("--calibration", "calibration",
         "int8 calibration images: the train split of DIR (a folder without splits: any of it)", "DIR"),
    Flag("--image-size", "image_size", "input size, for models whose input is dynamic", "N|HxW"),
    Flag("--images", "validation_images", "evaluation images: the test (else val) split of PATH; default: the "
         "held-out split of --calibration. Without --calibration, PATH's train split calibrates", "PATH"),
    Flag("--min-ios", "minimum_deployment_target", f"Core ML minimum deployment target: {', '.join(COREML_TARGETS)}",
         "TARGET"),
    Flag("--opset", "opset", f"ONNX opset, {ONNX_OPSETS.start}..{ONNX_OPSETS.stop - 1}"),
    Flag("--no-validate", "validate", "skip the parity check against the Keras model"),
)


def _add_preprocess_flags(parser: argparse.ArgumentParser) -> None:
    """The preprocessing a Keras model expects but lacks (export bakes it into every file)."""
    from pocketml.spec import PRESETS

    parser.add_argument(
        "--preprocess", choices=list(PRESETS), help="preprocessing the model expects but lacks: "
        "mobilenet [-1,1], imagenet mean/std, caffe-bgr, unit [0,1]; none: it is inside (default: detect)",
    )
    parser.add_argument("--mean", metavar="M|R,G,B", help="per-channel mean subtracted from RGB 0..255 (instead of --preprocess)")
    parser.add_argument("--std", metavar="S|R,G,B", help="per-channel divisor applied after --mean")
    parser.add_argument("--bgr", action="store_true", help="the model expects BGR channel order (after normalising)")


def _requested(args: argparse.Namespace):
    from pocketml.spec import requested_normalization

    return requested_normalization(args.preprocess, args.mean, args.std, args.bgr)


def register(subparsers: argparse._SubParsersAction) -> None:
    export = subparsers.add_parser(
        "export",
        help="convert a Keras classifier to TFLite, Core ML and ONNX, each judged against the original",
        description="Convert MODEL (.keras or .h5 file, SavedModel directory, or a directory with model.keras + "
        "spec.json) into one file per "
        "format and precision under DIR, judge each against MODEL on held-out images, and record everything in "
        "DIR/manifest.json. Calibration images come from a train split, evaluation images from test/val, never both.",
    )
    export.add_argument("model", type=Path, metavar="MODEL", help=".keras/.h5 file, SavedModel dir, or dir holding model.keras")
    export.add_argument("--out", type=Path, required=True, metavar="DIR", help="export directory")
    add_flags(export, ExportConfig, EXPORT_FLAGS)
    export.add_argument("--strict", action="store_true",
                        help="exit 1 when any file failed to convert or is outside tolerance (the others are kept)")
    _add_preprocess_flags(export)
    export.set_defaults(func=run_export)

    validate = subparsers.add_parser(
        "validate",
        help="compare every exported file with the Keras original; tolerance by precision",
        description="Judge every artifact in DIR against the Keras original again (the evaluation images the export "
        "recorded, or --images) and record the verdicts in DIR/manifest.json.",
    )
    validate.add_argument("export_dir", type=Path, metavar="DIR", help="directory written by `pocketml export`")
    validate.add_argument("--images", type=Path, metavar="PATH",
                          help="judge on the test/val split of PATH instead of the evaluation images the export recorded")
    validate.add_argument("--strict", action="store_true", help="exit 1 when any artifact is outside tolerance")
    validate.set_defaults(func=run_validate)

    predict = subparsers.add_parser(
        "predict",
        help="top-K labels for images from a .tflite, .onnx, .mlpackage or Keras model",
        description="Classify IMAGE files and every image in DIR folders with MODEL; labels and preprocessing "
        "come from the file's own metadata (or --labels). Folders stream, one row per image.",
    )
    predict.add_argument("model", type=Path, metavar="MODEL", help=".tflite, .onnx, .mlpackage, or a Keras model")
    predict.add_argument("images", type=Path, nargs="+", metavar="IMAGE|DIR", help="image files and/or folders")
    predict.add_argument("--top", type=int, default=3, metavar="K", help="labels per image, best first (default 3)")
    style = predict.add_mutually_exclusive_group()
    style.add_argument("--json", action="store_true", help="write a JSON array of {image, top, error}")
    style.add_argument("--csv", action="store_true", help="write CSV: image, label_1, p_1, ..., error")
    predict.add_argument("--out", type=Path, metavar="FILE", help="write there (atomically) instead of stdout")
    predict.add_argument("--labels", type=Path, metavar="FILE", help="labels, one per line, for a file without them")
    predict.add_argument("--image-size", metavar="N|HxW", help="input size, for Keras models whose input is dynamic")
    _add_preprocess_flags(predict)
    predict.set_defaults(func=run_predict)

    package = subparsers.add_parser(
        "package",
        help="assemble ios/, android/, onnx/ app bundles from an export (and bench's recommendation)",
        description="Copy (hard-link) every file that passed validation into one folder per platform under OUT, "
        "the recommended one first, with labels, a manifest excerpt (bundle.json) and a README with a usage snippet.",
    )
    package.add_argument("export_dir", type=Path, metavar="EXPORT_DIR", help="directory written by `pocketml export`")
    package.add_argument("--bench", type=Path, metavar="BENCH_DIR", help="directory written by `pocketml bench`")
    package.add_argument("--out", type=Path, required=True, metavar="BUNDLES_DIR", help="where the bundles go")
    package.set_defaults(func=run_package)

    serve = subparsers.add_parser(
        "serve",
        help="serve a web bundle (cross-origin isolated: WASM threads), and \"try it\" for a run's bundles",
        description="A local static server sending COOP/COEP. Given a run directory or a bundles directory, "
        "/try/ compares every bundle's file with the Keras original on a photo you drop.",
    )
    serve.add_argument("directory", type=Path, metavar="DIR", help="a web bundle, a bundles directory or a run directory")
    serve.add_argument("--port", type=int, default=8000, help="TCP port to listen on (default 8000; 0 picks a free one)")
    serve.add_argument("--host", default="127.0.0.1", help="127.0.0.1 (default) keeps it to this machine")
    serve.add_argument("--model", type=Path, default=None, help="the Keras original for /try/ (default: RUN_DIR/model)")
    serve.set_defaults(func=run_serve)


def run_export(args: argparse.Namespace) -> int:
    from pocketml.export.exporter import export_model
    from pocketml.export.validate import failures_of

    from pocketml.artifact import EXPORTED
    from pocketml.config import from_settings, settings_from_flags
    from pocketml.errors import ValidationFailed

    preprocessing = {"preprocess": args.preprocess, "mean": args.mean, "std": args.std, "bgr": args.bgr or None}
    config = from_settings(ExportConfig, {**settings_from_flags(args, EXPORT_FLAGS), **preprocessing}, "export")
    manifest = export_model(args.model, args.out, config)
    failed = [a for a in manifest.artifacts if a.status != EXPORTED]
    print(f"wrote {len(manifest.artifacts) - len(failed)} artifacts to {args.out} ({len(failed)} failed to convert)")
    failures = failures_of(manifest)
    if args.strict and failures:
        raise ValidationFailed(f"{len(failures)} artifact(s) failed or outside tolerance: " + "; ".join(failures))
    return 0


def run_validate(args: argparse.Namespace) -> int:
    from pocketml.export.validate import validate

    validate(args.export_dir, images=args.images, strict=args.strict)
    return 0


def run_predict(args: argparse.Namespace) -> int:
    import os

    from pocketml.export.predict import load, run, summary_rows

    from pocketml.console import err_console, library_output, table

    suffix = args.out.suffix.lower().lstrip(".") if args.out else ""
    style = "json" if args.json else "csv" if args.csv else suffix if suffix in ("json", "csv") else "text"
    # predict writes no directory of its own, so other libraries' output is dropped (-v shows it live).
    with library_output(os.devnull):
        model = load(args.model, labels=args.labels, image_size=args.image_size, preprocess=_requested(args))
        for note in model.notes:
            err_console.print(f"note: {note}", style="yellow", markup=False, soft_wrap=True)
        rows = run(model, args.images, top=args.top, style=style, out=args.out)
    err_console.print(table("top-1 labels", ("label", "images"), summary_rows(rows)))
    err_console.print(f"predicted {len(rows)} images with {args.model}" + (f"; wrote {args.out}" if args.out else ""))
    return 0


def run_package(args: argparse.Namespace) -> int:
    from pocketml.export.package import package

    package(args.export_dir, args.out, args.bench)
    return 0


def run_serve(args: argparse.Namespace) -> int:
    from pocketml.export.serve import serve_forever

    serve_forever(args.directory, args.host, args.port, args.model)
    return 0

