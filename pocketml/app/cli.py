"""The `pocketml` command. Each stage registers its subcommands from a light `cli` module of its
own, which imports the stage's heavy code (TensorFlow, converters) only inside its handlers, so
`pocketml --help` starts fast.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Sequence

from pocketml import __version__
from pocketml.errors import PocketMLError

# module, in the order their commands appear in --help
COMMAND_MODULES = (
    "pocketml.acquisition.cli_acquire",  # acquire
    "pocketml.acquisition.cli_curate",  # curate, audit
    "pocketml.training.cli",  # train
    "pocketml.export.cli",  # export, validate, package
    "pocketml.benchmarks.cli",  # bench
    "pocketml.app.pipeline",  # run
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pocketml",
        description="Build an image classifier and ship it as Core ML, TFLite and ONNX files, checked against the original.",
    )
    parser.add_argument("--version", action="version", version=f"pocketml {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="show other libraries' logs and progress live (default: in libraries.log of each stage's directory)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def quiet_libraries() -> None:
    """Keep TensorFlow's and the converters' start-up chatter out of the user's terminal."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    logging.getLogger("absl").setLevel(logging.ERROR)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from pocketml.console import set_verbose

    set_verbose(args.verbose)
    if not args.verbose:
        quiet_libraries()
    try:
        return int(args.func(args) or 0)
    except PocketMLError as exc:
        # A user-facing problem: one line, no traceback (bugs still show theirs).
        print(f"pocketml {args.command}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"pocketml {args.command}: interrupted; finished work is kept, rerun to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
