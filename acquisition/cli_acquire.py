"""`pocketml acquire`: build the raw image pool of a dataset directory."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "acquire",
        help="download/import images into a dataset directory (resumable)",
        description="Fetch, verify and store images from the sources of CONFIG.toml ([acquire] section, or a "
        "file holding just that table) and/or the quick sources given as options. Rerunning resumes.",
    )
    p.add_argument("config", nargs="?", type=Path, help="TOML with an [acquire] section (or the acquire table itself)")
    p.add_argument("--out", required=True, type=Path, help="dataset directory to create or resume")
    p.add_argument("--urls", type=Path, action="append", default=[], help="a URL list (text, CSV/TSV, fall11; .gz/.tgz)")
    p.add_argument("--label", default="", help="label for items of --urls text lists")
    p.add_argument("--folder", type=Path, action="append", default=[], help="an ImageFolder with one subfolder per class")
    p.add_argument("--imagenet-term", action="append", default=[], metavar="TERM", help="ImageNet term, e.g. 'hot dog' (needs --words)")
    p.add_argument("--words", default="", metavar="FILE", help="ImageNet words.txt (path or URL) for --imagenet-term")
    p.add_argument("--is-a", default="", metavar="FILE", help="ImageNet wordnet.is_a.txt (path or URL) to include hyponyms")
    p.add_argument("--threads", type=int, help="concurrent downloads")
    p.add_argument("--workers", type=int, help="verification processes (0 = one per core)")
    p.add_argument("--max-side", type=int, metavar="PIXELS", help="resize stored images so the long side is at most this")
    p.add_argument("--executor", choices=("local", "ray"), help="where shards run: local processes or a Ray cluster")
    p.add_argument("--ray-address", metavar="ADDRESS", help="Ray cluster to join (HOST:6379 or ray://HOST:10001); omit to start a "
                   "local Ray instance. The --out directory must be on a filesystem every node mounts")
    p.add_argument("--retry-failed", action="store_true",
                   help="refetch only URLs whose last outcome was retryable (timeout, connection error, 5xx, 429)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pocketml.acquisition.acquire import acquire

    acquire(config_of(args), args.out)
    return 0


def config_of(args: argparse.Namespace):
    """The AcquireConfig of CONFIG.toml with the command-line options laid over it."""
    from pocketml.config import from_mapping, load_toml
    from pocketml.configs.acquire import AcquireConfig
    from pocketml.errors import PocketMLError

    table: dict = {}
    if args.config:
        loaded = load_toml(args.config)
        table = loaded.get("acquire", loaded) if isinstance(loaded.get("acquire"), dict) else loaded
    table = dict(table)
    table["sources"] = list(table.get("sources", [])) + quick_sources(args)
    download = dict(table.get("download", {}))
    verify = dict(table.get("verify", {}))
    if args.threads is not None:
        download["threads"] = args.threads
    if args.workers is not None:
        table["workers"] = args.workers
    if args.max_side is not None:
        verify["max_side"] = args.max_side
    if args.ray_address:
        table["executor"], table["ray_address"] = "ray", args.ray_address
    if args.executor:
        table["executor"] = args.executor
    if args.retry_failed:
        table["retry_failed"] = True
    table["download"], table["verify"] = download, verify
    if not table["sources"]:
        raise PocketMLError("no sources: give CONFIG.toml with [[acquire.sources]] or --urls/--folder/--imagenet-term")
    return from_mapping(AcquireConfig, table, "acquire")


def quick_sources(args: argparse.Namespace) -> list[dict]:
    sources: list[dict] = [{"type": "urls", "path": str(p), "label": args.label} for p in args.urls]
    sources += [{"type": "folder", "path": str(p)} for p in args.folder]
    if args.imagenet_term:
        sources.append({"type": "imagenet", "terms": args.imagenet_term, "words": args.words, "is_a": args.is_a})
    return sources
