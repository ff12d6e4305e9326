"""`pocketml curate DATASET_DIR` and `pocketml audit IMAGEFOLDER`."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    curate = subparsers.add_parser(
        "curate",
        help="dedup, near-dup, label conflicts, leakage-free splits and a report for an acquired pool",
        description="Read DATASET_DIR/pool.csv and write manifest.csv, removed.csv and report/ beside it.",
    )
    curate.add_argument("dataset_dir", type=Path, metavar="DATASET_DIR")
    curate.add_argument(
        "--config", type=Path, help="TOML file with a [curate] table (or curate keys at top level)"
    )
    curate.add_argument("--seed", type=int, help="split seed (default 0)")
    curate.add_argument("--ratios", help="train,val,test fractions, e.g. 0.8,0.1,0.1 (two numbers: no test)")
    curate.add_argument(
        "--near-distance", type=int, metavar="BITS", help="pHash bits at or below which images are near duplicates"
    )
    add_executor_options(curate)
    curate.set_defaults(func=run_curate)

    audit = subparsers.add_parser(
        "audit",
        help="read-only duplicate, leakage and quality audit of an existing ImageFolder",
        description="Audit IMAGEFOLDER (ROOT/[train|val|test/]label/*.jpg) without changing it.",
    )
    audit.add_argument("imagefolder", type=Path, metavar="IMAGEFOLDER")
    audit.add_argument("--out", type=Path, help="report directory (default: ./audit-<folder name>)")
    audit.add_argument("--config", type=Path, help="TOML file with a [curate] table for thresholds")
    audit.add_argument(
        "--near-distance", type=int, metavar="BITS", help="pHash bits at or below which images are near duplicates"
    )
    add_executor_options(audit)
    audit.set_defaults(func=run_audit)


def add_executor_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--executor", choices=("local", "ray"),
                        help="where decoding and the near-duplicate search run: this machine or a Ray cluster")
    parser.add_argument("--ray-address", metavar="ADDRESS", help="Ray cluster to join (HOST:6379 or ray://HOST:10001); implies "
                        "--executor ray; omit to start a local Ray instance")


def config_from_args(args: argparse.Namespace):
    from pocketml.config import from_mapping, load_toml
    from pocketml.configs.curate import CurateConfig

    table: dict = {}
    if args.config:
        data = load_toml(args.config)
        table = data["curate"] if isinstance(data.get("curate"), dict) else data
    overrides: dict = {}
    if getattr(args, "seed", None) is not None:
        overrides["seed"] = args.seed
    if getattr(args, "ratios", None):
        from pocketml.acquisition.splits import parse_ratios

        overrides["ratios"] = parse_ratios(args.ratios)
    if getattr(args, "ray_address", None):
        overrides["executor"], overrides["ray_address"] = "ray", args.ray_address
    if getattr(args, "executor", None):
        overrides["executor"] = args.executor
    if args.near_distance is not None:
        overrides["near_distance"] = args.near_distance
    # One validation for the TOML table and the flags together, as pocketml.curate(...) validates its settings.
    return from_mapping(CurateConfig, {**table, **overrides}, "curate")


def run_curate(args: argparse.Namespace) -> int:
    from pocketml.acquisition.curate import curate

    curate(args.dataset_dir, config_from_args(args))
    return 0


def run_audit(args: argparse.Namespace) -> int:
    from pocketml.acquisition.audit import audit

    out = args.out or Path.cwd() / f"audit-{args.imagefolder.resolve().name}"
    audit(args.imagefolder, out, config_from_args(args))
    return 0
