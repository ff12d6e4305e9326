"""Decode every image once and record what curation needs: size, hashes, quality measures, flags,
and the small copy the sanity baseline trains on.

Decoding dominates curation time, so it runs in worker processes (both cores of a small machine);
a file that cannot be decoded becomes a fact with an `error`, never an exception that stops the run.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError
from pocketml.acquisition import hashing, quality

from pocketml.configs.curate import CurateConfig
from pocketml.console import progress
from pocketml.dataset import decode_rgb
from pocketml.errors import reason_of

PARALLEL_FROM = 48  # images; below this, starting worker processes costs more than it saves


@dataclass
class ImageFacts:
    path: Path
    width: int = 0
    height: int = 0
    pixel_hash: str = ""
    phash: int = 0
    dhash: int = 0
    measures: dict[str, float] = field(default_factory=dict)
    flags: list[str] = field(default_factory=list)
    # uint8 RGB bytes of the config.baseline_size-square copy the sanity baseline trains on, made here
    # in the same worker that decodes the file, so that no second pass over every image runs on the driver
    baseline: bytes = b""
    error: str | None = None  # why the file could not be read; None when it was


def facts_of(path: Path, config: CurateConfig) -> ImageFacts:
    """Facts of one file; unreadable files get `error` set."""
    try:
        rgb = decode_rgb(path)  # the file's one decoding: every fact below comes from these pixels
    except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError) as exc:
        return ImageFacts(path=path, error=reason_of(exc))
    height, width = rgb.shape[:2]
    grey = hashing.grey(rgb)
    measured = quality.measures(rgb)
    return ImageFacts(
        path=path,
        width=width,
        height=height,
        pixel_hash=hashing.pixel_hash(rgb),
        phash=hashing.phash(grey),
        dhash=hashing.dhash(grey),
        measures=measured,
        flags=quality.flags(measured, width, height, config),
        baseline=baseline_copy(rgb, config.baseline_size).tobytes(),
    )


def _facts_job(args: tuple[Path, CurateConfig]) -> ImageFacts:
    return facts_of(*args)


def collect_facts(
    paths: Sequence[Path], config: CurateConfig, what: str = "hashing images"
) -> list[ImageFacts]:
    """Facts for every path, in order, with a progress bar."""
    workers = config.workers or os.cpu_count() or 1
    with progress() as bar:
        task = bar.add_task(what, total=len(paths))
        if workers <= 1 or len(paths) < PARALLEL_FROM:
            out = []
            for path in paths:
                out.append(facts_of(path, config))
                bar.advance(task)
            return out
        with ProcessPoolExecutor(max_workers=workers) as pool:
            out = []
            jobs = ((p, config) for p in paths)
            for fact in pool.map(_facts_job, jobs, chunksize=8):
                out.append(fact)
                bar.advance(task)
            return out


def baseline_copy(rgb: np.ndarray, side: int) -> np.ndarray:
    """uint8 [side, side, 3] squashed copy of decoded pixels (aspect ignored: the baseline wants every pixel)."""
    return np.asarray(Image.fromarray(rgb).resize((side, side), Image.Resampling.BOX))


def baseline_pixels(facts: Sequence[ImageFacts], side: int) -> np.ndarray:
    """uint8 [N, side, side, 3]: the baseline copies the facts carry, stacked."""
    return np.frombuffer(b"".join(f.baseline for f in facts), dtype=np.uint8).reshape(len(facts), side, side, 3)
