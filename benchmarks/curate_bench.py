"""`pocketml curate` in local processes vs on Ray, on the same generated pool and the same cores.

    python benchmarks/curate_bench.py      # no arguments; ends with RESULT {json}

The pool (built once under runs/curate_bench/, IMAGES photos-like JPEGs of two classes, one in
DUPLICATE_EVERY re-encoded at a smaller size so the near-duplicate search has work) is curated
twice: with executor = "local" and with executor = "ray" on a private local Ray instance. On one
machine Ray has no extra cores to gain, so the figures measure its cost: the decoding pass (the part
that grows with the dataset and that a cluster spreads over its nodes) against local processes, and
its fixed costs (starting Ray, the Ray Data near-duplicate search, stopping). The two runs' manifest,
removed.csv and report must be identical.
"""

from __future__ import annotations

import io
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pocketml.benchmarks.common import PROJECT_ROOT, machine_info, print_result  # noqa: E402

POOL = PROJECT_ROOT / "runs" / "curate_bench" / "pool"
IMAGES = 2000
DUPLICATE_EVERY = 20  # one image in 20 is a smaller re-encoding of another
REPEATS = 3  # decoding passes timed per executor (median): one pass moved by 50 % between runs


def build_pool(root: Path) -> Path:
    """IMAGES JPEGs (smooth random colour fields with grain, 400x300) in acquisition's store, and
    pool.csv written last (atomically), so a half-built pool is never taken for a finished one."""
    import csv

    from PIL import Image
    from pocketml.acquisition import store
    from pocketml.acquisition.pool import POOL_COLUMNS, POOL_FILE

    from pocketml.fsutil import atomic_write_text

    if (root / POOL_FILE).exists():
        return root
    rng = np.random.default_rng(7)
    rows, originals = [], []
    for k in range(IMAGES):
        if k % DUPLICATE_EVERY == DUPLICATE_EVERY - 1:  # a smaller re-encoding, under the original's label
            original, label = originals[int(rng.integers(len(originals)))]
            image, quality = original.resize((280, 210), Image.Resampling.LANCZOS), 70
        else:
            field = Image.fromarray(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)).resize((400, 300), Image.Resampling.BICUBIC)
            grain = rng.normal(0, 12, (300, 400, 3))
            image = Image.fromarray(np.clip(np.asarray(field, dtype=np.float64) + grain, 0, 255).astype(np.uint8))
            label, quality = "a" if k % 2 else "b", 88
            originals.append((image, label))
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=quality)
        sha, rel = store.put(root, buffer.getvalue())
        rows.append({"sha256": sha, "path": rel, "label": label, "source": "bench",
                     "source_url": rel, "width": image.width, "height": image.height, "split": ""})
    text = io.StringIO()
    writer = csv.DictWriter(text, POOL_COLUMNS)
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(root / POOL_FILE, text.getvalue())
    return root


def timed(call, *args):
    start = time.perf_counter()
    result = call(*args)
    return result, round(time.perf_counter() - start, 2)


def outputs(root: Path) -> tuple[str, ...]:
    return tuple((root / name).read_text() for name in ("manifest.csv", "removed.csv", "report/report.json"))


def passes() -> dict:
    """Each pass on its own, local and Ray in turn (this machine's speed drifts by a third between
    minutes, so one engine timed after the other would measure the drift): decoding + hashing, median
    of REPEATS rounds, then the near-duplicate search, and Ray's connecting and disconnecting."""
    from pocketml.acquisition.curate import LOCAL, engine_for, read_pool

    from pocketml.configs.curate import CurateConfig

    paths = [item.path for item in read_pool(POOL)]
    configs = {"local": CurateConfig(executor="local"), "ray": CurateConfig(executor="ray")}
    figures: dict = {name: {} for name in configs}
    start = time.perf_counter()
    with engine_for(configs["ray"]) as on_ray:
        figures["ray"]["start_s"] = round(time.perf_counter() - start, 2)
        engines = {"local": LOCAL, "ray": on_ray}
        rounds: dict = {name: [] for name in engines}
        for _ in range(REPEATS):
            for name, engine in engines.items():
                facts, seconds = timed(engine.facts, paths, configs[name], "hashing")
                rounds[name].append(seconds)
        hashes = np.array([fact.phash for fact in facts], dtype=np.uint64)
        for name, engine in engines.items():
            figures[name]["decode_s"] = float(np.median(rounds[name]))
            _, figures[name]["near_search_s"] = timed(engine.near_pairs, hashes, configs[name].group_distance)
        stop = time.perf_counter()
    figures["ray"]["stop_s"] = round(time.perf_counter() - stop, 2)
    return figures


def main() -> None:
    from pocketml.acquisition.curate import curate

    from pocketml.configs.curate import CurateConfig

    build_pool(POOL)
    figures: dict = {"images": IMAGES, **passes()}
    results = {}
    for executor in ("local", "ray"):
        (POOL / "manifest.csv").unlink(missing_ok=True)
        summary, seconds = timed(curate, POOL, CurateConfig(executor=executor))
        results[executor] = outputs(POOL)
        figures[executor].update(curate_s=seconds, removed=summary["removed_by_reason"], kept=summary["images_kept"])
    figures["identical_outputs"] = results["local"] == results["ray"]
    figures["ray_decode_vs_local"] = round(figures["ray"]["decode_s"] / figures["local"]["decode_s"], 2)
    for executor in ("local", "ray"):
        row = figures[executor]
        fixed = f" | start {row['start_s']:4.2f} s | stop {row['stop_s']:4.2f} s" if executor == "ray" else ""
        print(f"{executor:6s} curate {row['curate_s']:6.2f} s | decode {row['decode_s']:6.2f} s | near search "
              f"{row['near_search_s']:5.2f} s{fixed} | kept {row['kept']} of {IMAGES}")
    print(f"identical manifest, removed.csv and report: {figures['identical_outputs']}")
    print_result({"benchmark": "curate", "machine": machine_info(), "load_avg": os.getloadavg(), **figures})


if __name__ == "__main__":
    main()
