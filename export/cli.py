"""`pocketml export` and `pocketml validate`. Light: converters are imported inside the handlers."""

from __future__ import annotations

import argparse
from pathlib import Path

from pocketml.artifact import FORMATS, PRECISIONS


def _names(text: str | None) -> list[str]:
    return [part.strip() for part in (text or "").split(",") if part.strip()]


def register(subparsers: argparse._SubParsersAction) -> None:
    export = subparsers.add_parser(
        "export",
        help="convert a Keras classifier to TFLite, Core ML and ONNX app bundles, checked against the original",
        description="Convert MODEL (.keras file, or a directory with model.keras + spec.json) into "
        "DIR/android, DIR/ios, DIR/onnx and DIR/manifest.json, then validate every file against MODEL.",
    )
    export.add_argument("model", type=Path, metavar="MODEL", help=".keras file or directory holding model.keras")
    export.add_argument("--out", type=Path, required=True, metavar="DIR", help="export directory")
    export.add_argument("--labels", type=Path, metavar="FILE", help="labels, one per line (replaces spec.json's)")
    export.add_argument("--formats", default=",".join(FORMATS), help=f"comma-separated; default {','.join(FORMATS)}")
    export.add_argument(
        "--precisions", default="", help=f"comma-separated, from {','.join(PRECISIONS)}; default: all that apply"
    )
    export.add_argument("--calibration", type=Path, metavar="DIR", help="images for int8 calibration (ImageFolder or flat)")
    export.add_argument("--image-size", metavar="N|HxW", help="input size, for models whose input is dynamic")
    export.add_argument("--images", type=Path, metavar="PATH", help="validation images (default: the calibration images)")
    export.add_argument("--min-ios", default="iOS16", help="Core ML minimum deployment target (default iOS16)")
    export.add_argument("--no-validate", action="store_true", help="skip the parity check against the Keras model")
    export.set_defaults(func=run_export)

    validate = subparsers.add_parser(
        "validate",
        help="compare every exported file with the Keras original; tolerance by precision",
        description="Run the Keras original and every artifact in DIR on the same images and record parity in DIR/manifest.json.",
    )
    validate.add_argument("export_dir", type=Path, metavar="DIR", help="directory written by `pocketml export`")
    validate.add_argument("--images", type=Path, metavar="PATH", help="dataset dir or ImageFolder (its test/val split)")
    validate.add_argument("--strict", action="store_true", help="exit 1 when any artifact is outside tolerance")
    validate.set_defaults(func=run_validate)


def run_export(args: argparse.Namespace) -> int:
    from export.exporter import export_model
    from pocketml.configs.export import ExportConfig

    config = ExportConfig(
        formats=_names(args.formats),
        precisions=_names(args.precisions),
        calibration=args.calibration,
        image_size=args.image_size,
        labels=args.labels,
        minimum_deployment_target=args.min_ios,
        validate=not args.no_validate,
        validation_images=args.images,
    )
    manifest = export_model(args.model, args.out, config)
    failed = [a for a in manifest.artifacts if a.status != "exported"]
    print(f"wrote {len(manifest.artifacts) - len(failed)} artifacts to {args.out} ({len(failed)} failed to convert)")
    return 0


def run_validate(args: argparse.Namespace) -> int:
    from export.validate import validate

    validate(args.export_dir, images=args.images, strict=args.strict)
    return 0
