"""`pocketml bench EXPORT_DIR --data DATA --out BENCH_DIR`: light, heavy imports inside the handler."""

from __future__ import annotations

import argparse

from pocketml.config import Flag
from pocketml.errors import PocketMLError

# The flags that set BenchConfig fields (type and default come from there).
FLAGS = (
    Flag("--threads", "threads", "CPU thread counts to time"),
    Flag("--min-time", "min_time_s", "seconds of timed runs per artifact and thread count, at least"),
    Flag("--no-memory", "measure_memory", "skip the peak-memory subprocess per artifact"),
    Flag("--device-images", "device_images", "a file whose outputs on a device differ from the host's: judge it there "
         "on the images its outcome could change (guided) or on all evaluation images"),
)


def register(subparsers: argparse._SubParsersAction) -> None:
    from pocketml.config import add_flags
    from pocketml.configs.bench import BenchConfig

    p = subparsers.add_parser(
        "bench",
        help="measure every exported file: latency, size, memory beside its verdict; recommend one per platform",
        description="Benchmark every artifact of an export directory beside the Keras original: the verdict the "
        "export recorded (accuracy, agreement on the evaluation images) plus latency, size and memory measured here. "
        "Model files without an export (.tflite, .onnx, .mlpackage) are measured too: accuracy with --data, "
        "a verdict against the Keras model with --reference.",
    )
    p.add_argument("targets", nargs="+", metavar="EXPORT_DIR|FILE",
                   help="a directory written by `pocketml export`, or model files")
    p.add_argument("--out", required=True, metavar="BENCH_DIR",
                   help="where results.json, results.csv, report.html and recommendations.json go")
    add_flags(p, BenchConfig, FLAGS)
    p.add_argument("--reference", "--model", dest="reference", default=None, metavar="MODEL",
                   help="the Keras original (default for an export: the manifest's model.source)")
    p.add_argument("--data", default=None, metavar="DIR", help="files only: images whose test/val split measures accuracy and parity")
    p.add_argument("--labels", default=None, metavar="FILE", help="files only: labels, one per line, for files that carry none")
    p.add_argument("--device", dest="devices", action="append", default=None, metavar="KIND[:VARIANT]",
                   help="also run every file on a device, e.g. arm64 (emulated cortex-a76), arm64:neoverse-n1; "
                        "repeatable (`pocketml device setup KIND` prepares one)")
    p.set_defaults(func=run_bench)
    register_device(subparsers)


def register_device(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "device", help="prepare or inspect a device bench can run files on (arm64: an emulated phone core)",
        description="`setup KIND[:VARIANT]` prepares everything a device needs in ~/.cache/pocketml/KIND (or "
        "$POCKETML_CACHE/KIND); it is idempotent and resumes after an interruption. `status` says what is ready.")
    p.add_argument("action", choices=("setup", "status"))
    p.add_argument("device", nargs="?", default=None, metavar="KIND[:VARIANT]",
                   help="e.g. arm64, arm64:neoverse-n1 (status without one: every known device)")
    p.set_defaults(func=run_device)


def run_device(args: argparse.Namespace) -> int:
    from pocketml.benchmarks.devices import DEVICE_MODULES, device_label, device_module, parse_device

    if args.action == "setup":
        if args.device is None:
            raise PocketMLError(f"name the device to set up; known: {', '.join(DEVICE_MODULES)}")
        kind, variant = parse_device(args.device)
        device_module(kind).setup(variant)
        return 0
    specs = [args.device] if args.device else list(DEVICE_MODULES)
    ready = True
    for spec in specs:
        try:
            kind, variant = parse_device(spec)
        except PocketMLError as exc:
            print(f"{spec}: unavailable: {exc}")
            ready = False
            continue
        state = device_module(kind).status(variant)
        ready &= state.ready
        print(f"{device_label(kind, variant)}: {'ready' if state.ready else 'not ready'}")
        for line in state.missing:
            print(f"  missing: {line}")
        for key, value in state.detail.items():
            print(f"  {key}: {value}")
    return 0 if ready else 1


def config_from_args(args: argparse.Namespace):
    """BenchConfig from the flags that were given, validated as a [bench] table is."""
    from pocketml.config import from_settings, settings_from_flags
    from pocketml.configs.bench import BenchConfig

    settings = {**settings_from_flags(args, FLAGS), "keras_model": args.reference}
    if args.devices:
        settings["devices"] = args.devices
    return from_settings(BenchConfig, settings, "bench")


def run_bench(args: argparse.Namespace) -> int:
    from pathlib import Path

    from pocketml.benchmarks.bench import bench, bench_files

    from pocketml.artifact import MANIFEST_FILE

    targets = [Path(t) for t in args.targets]
    if len(targets) == 1 and (targets[0] / MANIFEST_FILE).is_file():
        if args.data or args.labels:
            raise PocketMLError("--data and --labels are for model files; an export is measured on the images it "
                                "was judged on (`pocketml validate EXPORT_DIR --images DATA` judges it on others)")
        bench(targets[0], args.out, config_from_args(args))
    else:
        bench_files(targets, args.out, config_from_args(args), data=args.data, reference=args.reference,
                    labels=args.labels)
    print(f"wrote {args.out}/results.json, results.csv, report.html, recommendations.json")
    return 0
