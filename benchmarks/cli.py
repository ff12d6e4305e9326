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
    p.set_defaults(func=run_bench)


def config_from_args(args: argparse.Namespace):
    """BenchConfig from the flags that were given, validated as a [bench] table is."""
    from pocketml.config import from_settings, settings_from_flags
    from pocketml.configs.bench import BenchConfig

    return from_settings(BenchConfig, {**settings_from_flags(args, FLAGS), "keras_model": args.reference}, "bench")


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
