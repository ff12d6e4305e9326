"""`pocketml bench EXPORT_DIR --data DATA --out BENCH_DIR`: light, heavy imports inside the handler."""

from __future__ import annotations

import argparse

from pocketml.errors import PocketMLError


def thread_list(text: str) -> list[int]:
    try:
        threads = [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        threads = []
    if not threads or min(threads) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a thread list; give counts >= 1 like 1,4")
    return threads


def register(subparsers: argparse._SubParsersAction) -> None:
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
    p.add_argument("--out", required=True,
                   help="where results.json, results.csv, report.html and recommendations.json go")
    p.add_argument("--threads", type=thread_list, default=None, help="CPU thread counts to time, e.g. 1,4 (default)")
    p.add_argument("--min-time", type=float, default=None, help="seconds of timed runs per artifact and thread count")
    p.add_argument("--reference", "--model", dest="reference", default=None,
                   help="the Keras original (default for an export: the manifest's model.source)")
    p.add_argument("--data", default=None, help="files only: images whose test/val split measures accuracy and parity")
    p.add_argument("--labels", default=None, help="files only: labels, one per line, for files that carry none")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocess per artifact")
    p.set_defaults(func=run_bench)


def config_from_args(args: argparse.Namespace):
    from pocketml.configs.bench import BenchConfig

    config = BenchConfig()
    if args.threads is not None:
        config.threads = args.threads
    if args.min_time is not None:
        config.min_time_s = args.min_time
    if args.reference is not None:
        config.keras_model = args.reference
    config.measure_memory = not args.no_memory
    return config


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
