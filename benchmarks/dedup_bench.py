"""Near-duplicate search: pocketml's multi-index hashing vs imagededup's own Hamming search.

Both get the same 64-bit hashes (random ones plus planted copies at every distance 0..12, so the
threshold edge is exercised) and must return identical pairs at max distance 10. imagededup runs
in its own venv (.venv-bench, `make bench-env`) as a subprocess calling
`imagededup.handlers.search.retrieval.HashEval` exactly as `Hashing.find_duplicates` does; only
its search is timed, not its import. Sizes grow until imagededup would overrun the time budget;
the speed-up is reported at the largest size it finished. Then pocketml alone at 100k (goal <= 5 s)
and 1M hashes. pocketml's time is the median of 3 runs (1 at 1M), wall clock, with its CPU time
beside it because on a shared machine the two differ a lot.

Then FAISS's binary indexes on the same hashes (the one-large-node alternative: brute-force
IndexBinaryFlat and IndexBinaryMultiHash, pairs checked identical), and the Ray Data block search
(acquisition/neardup_ray.py, the past-one-machine path) on a local Ray instance, pairs checked
identical to the local search.

    python benchmarks/dedup_bench.py [--budget SECONDS] [--skip-million] [--ray-sizes 100000,1000000,10000000]
    python benchmarks/dedup_bench.py --only-scale --faiss-sizes 100000,1000000 --ray-sizes 1000000,10000000
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

PROJECT_ROOT = Path(__file__).resolve().parents[1]
if str(PROJECT_ROOT) not in sys.path:  # run as `python benchmarks/dedup_bench.py` from a checkout
    sys.path.insert(0, str(PROJECT_ROOT))

from pocketml.acquisition.neardup import near_pairs  # noqa: E402
from pocketml.benchmarks.common import machine_info, print_result  # noqa: E402

MAX_DISTANCE = 10
IMAGEDEDUP_SIZES = (2_000, 5_000, 10_000, 20_000, 50_000)
BENCH_PYTHON = PROJECT_ROOT / ".venv-bench" / "bin" / "python"
# Comparisons that need an optional extra: skipped with a note when it is not installed.
OPTIONAL = {"faiss": "pip install 'pocketml[faiss]'", "ray": "pip install 'pocketml[ray]'"}

IMAGEDEDUP_SCRIPT = r"""
import json, resource, sys, time
from multiprocessing import cpu_count
from imagededup.handlers.search.retrieval import HashEval
from imagededup.methods.hashing import Hashing

hashes_file, out_file, threshold = sys.argv[1], sys.argv[2], int(sys.argv[3])
with open(hashes_file) as fh:
    encoding_map = json.load(fh)
def cpu():
    # Its search runs in a process pool: count the (joined) workers' CPU time as well as its own.
    own, workers = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + workers.ru_utime + workers.ru_stime

start, cpu_start = time.perf_counter(), cpu()
result = HashEval(
    test=encoding_map,
    queries=encoding_map,
    distance_function=Hashing.hamming_distance,
    verbose=False,
    threshold=threshold,
    search_method="brute_force_cython",
    num_dist_workers=cpu_count(),
).retrieve_results(scores=True)
seconds, cpu_seconds = time.perf_counter() - start, cpu() - cpu_start
pairs = sorted({tuple(sorted((int(a[1:]), int(b[1:])))) + (d,) for a, found in result.items() for b, d in found})
with open(out_file, "w") as fh:
    json.dump({"seconds": seconds, "cpu_seconds": cpu_seconds, "pairs": pairs}, fh)
"""


def planted_hashes(n: int, seed: int = 0) -> np.ndarray:
    """n hashes: 90% uniform random, 10% copies of those at 0..12 flipped bits."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 2**64, size=n - n // 10, dtype=np.uint64)
    sources = base[rng.integers(0, len(base), size=n // 10)]
    flips = rng.integers(0, 13, size=n // 10)
    bits = rng.random((n // 10, 64)).argsort(axis=1)  # a random bit order per copy
    masks = np.zeros(n // 10, dtype=np.uint64)
    for k in range(13):
        chosen = flips > k
        masks[chosen] |= np.left_shift(np.uint64(1), bits[chosen, k].astype(np.uint64))
    return np.concatenate([base, sources ^ masks])


def ours(hashes: np.ndarray, repeats: int = 3) -> tuple[float, float, set[tuple[int, int, int]]]:
    """(median wall seconds, its CPU seconds, pairs) of pocketml's search over `repeats` runs.

    The median, because on a shared machine one run can be descheduled for longer than it computes.
    """
    runs = []
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        i, j, d = near_pairs(hashes, MAX_DISTANCE)
        runs.append((time.perf_counter() - wall, time.process_time() - cpu))
    wall, cpu = sorted(runs)[len(runs) // 2]
    return wall, cpu, set(zip(i.tolist(), j.tolist(), d.tolist(), strict=True))


def imagededup(
    hashes: np.ndarray, timeout: float
) -> tuple[float, float, float, set[tuple[int, int, int]]] | None:
    """(search seconds, search CPU seconds, subprocess seconds, pairs) from imagededup, or None when
    it overran timeout."""
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        hashes_file, out_file = Path(tmp) / "hashes.json", Path(tmp) / "pairs.json"
        hashes_file.write_text(json.dumps({f"h{k}": f"{int(h):016x}" for k, h in enumerate(hashes)}))
        try:
            subprocess.run(
                [
                    str(BENCH_PYTHON),
                    "-c",
                    IMAGEDEDUP_SCRIPT,
                    str(hashes_file),
                    str(out_file),
                    str(MAX_DISTANCE),
                ],
                check=True,
                timeout=timeout,
                capture_output=True,
                text=True,
            )
        except subprocess.TimeoutExpired:
            return None
        except subprocess.CalledProcessError as exc:
            sys.exit(f"imagededup failed:\n{exc.stderr[-2000:]}")
        data = json.loads(out_file.read_text())
    pairs = {tuple(p) for p in data["pairs"]}
    return data["seconds"], data["cpu_seconds"], time.perf_counter() - started, pairs


def compare_sizes(budget: float) -> list[dict]:
    rows: list[dict] = []
    deadline = time.perf_counter() + budget
    for n in IMAGEDEDUP_SIZES:
        if rows:
            last = rows[-1]
            # Its search is quadratic; importing torch etc. in the subprocess is a fixed cost on top.
            # 1.25: a margin for a busy machine, so a size that cannot finish is not started.
            predicted = 1.25 * (last["imagededup_s"] * (n / last["n"]) ** 2 + last["imagededup_overhead_s"])
            if time.perf_counter() + predicted > deadline:
                print(
                    f"n={n}: imagededup would need ~{predicted:.0f} s, over the budget; stopping", flush=True
                )
                break
        hashes = planted_hashes(n, seed=n)
        wall, cpu, mine = ours(hashes)
        theirs = imagededup(hashes, timeout=max(1.0, deadline - time.perf_counter()))
        if theirs is None:
            print(f"n={n}: imagededup did not finish within the budget", flush=True)
            break
        seconds, their_cpu, subprocess_s, their_pairs = theirs
        if mine != their_pairs:
            sys.exit(
                f"n={n}: pairs differ: {len(mine - their_pairs)} only ours, {len(their_pairs - mine)} only imagededup"
            )
        rows.append(
            {
                "n": n,
                "pairs": len(mine),
                "identical": True,
                "ours_s": round(wall, 4),
                "ours_cpu_s": round(cpu, 4),
                "imagededup_s": round(seconds, 3),
                "imagededup_cpu_s": round(their_cpu, 3),
                "imagededup_overhead_s": round(subprocess_s - seconds, 1),
                "speedup": round(seconds / wall, 1),  # wall clock, both on every core
                "speedup_cpu": round(
                    their_cpu / max(cpu, 1e-6), 1
                ),  # total CPU seconds: robust to machine load
            }
        )
        print(
            f"n={n:>7}: pairs={len(mine):>6} identical  ours {wall:.3f} s (cpu {cpu:.3f})  "
            f"imagededup {seconds:.2f} s (cpu {their_cpu:.2f})  -> {seconds / wall:.0f}x wall, "
            f"{their_cpu / max(cpu, 1e-6):.0f}x cpu",
            flush=True,
        )
    return rows


def solo(n: int, repeats: int) -> dict:
    wall, cpu, pairs = ours(planted_hashes(n, seed=n), repeats)
    print(
        f"n={n:>7}: pairs={len(pairs):>6}  ours {wall:.2f} s (cpu {cpu:.2f} s, {os.cpu_count()} threads)",
        flush=True,
    )
    return {"n": n, "pairs": len(pairs), "ours_s": round(wall, 3), "ours_cpu_s": round(cpu, 3)}


def local_search(hashes: np.ndarray) -> tuple[float, float, np.ndarray]:
    """(wall s, CPU s, pair keys) of one run of pocketml's local search."""
    wall, cpu = time.perf_counter(), time.process_time()
    i, j, _ = near_pairs(hashes, MAX_DISTANCE)
    return time.perf_counter() - wall, time.process_time() - cpu, pair_keys(i, j, len(hashes))


def pair_keys(i: np.ndarray, j: np.ndarray, n: int) -> np.ndarray:
    """Sorted unique i*n+j of pairs i<j: one array to compare two searches exactly."""
    lo, hi = np.minimum(i, j).astype(np.int64), np.maximum(i, j).astype(np.int64)
    return np.unique(lo * n + hi)


def faiss_pairs(hashes: np.ndarray, kind: str) -> tuple[float, float, np.ndarray]:
    """(wall s, CPU s, pair keys) of a FAISS binary index range search over the same hashes.

    flat: brute force. multihash: 4 tables of 16 bits with nflip=2, FAISS's multi-index hashing; by
    the pigeonhole bound ((2 + 1) x 4 > 10) it misses no pair within MAX_DISTANCE.
    """
    import faiss

    codes = np.ascontiguousarray(hashes).view(np.uint8).reshape(-1, 8)
    wall, cpu = time.perf_counter(), time.process_time()
    if kind == "flat":
        index = faiss.IndexBinaryFlat(64)
    else:
        index = faiss.IndexBinaryMultiHash(64, 4, 16)
        index.nflip = 2
    index.add(codes)
    lims, _, found = index.range_search(codes, MAX_DISTANCE + 1)  # FAISS keeps distances < radius
    query = np.repeat(np.arange(len(hashes)), np.diff(lims).astype(np.int64))
    found = found.astype(np.int64)
    keep = query < found
    keys = pair_keys(query[keep], found[keep], len(hashes))
    return time.perf_counter() - wall, time.process_time() - cpu, keys


def compare_faiss(sizes: list[int]) -> list[dict]:
    """FAISS binary indexes (the one-large-node option) against ours, same hashes, same pairs."""
    rows = []
    for n in sizes:
        hashes = planted_hashes(n, seed=n)
        wall, cpu, mine = local_search(hashes)
        row = {"n": n, "pairs": len(mine), "ours_s": round(wall, 3), "ours_cpu_s": round(cpu, 3)}
        for kind in ("multihash", "flat") if n <= 200_000 else ("multihash",):
            f_wall, f_cpu, theirs = faiss_pairs(hashes, kind)
            if not np.array_equal(theirs, mine):
                sys.exit(f"n={n}: FAISS {kind} pairs differ from ours ({len(theirs)} vs {len(mine)})")
            row[f"faiss_{kind}_s"], row[f"faiss_{kind}_cpu_s"] = round(f_wall, 3), round(f_cpu, 3)
        print(f"n={n:>8}: ours {row['ours_s']} s; FAISS " +
              ", ".join(f"{k} {row[f'faiss_{k}_s']} s" for k in ("multihash", "flat") if f"faiss_{k}_s" in row) +
              " (identical pairs)", flush=True)
        rows.append(row)
    return rows


def compare_ray(sizes: list[int]) -> list[dict]:
    """The Ray Data block search (acquisition/neardup_ray.py) on a local Ray instance vs the local search."""
    import ray
    from pocketml.acquisition import neardup_ray

    ray.init(address="local", include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = context.print_on_execution_start = False
    rows = []
    try:
        for n in sizes:
            hashes = planted_hashes(n, seed=n)
            wall, _, mine = local_search(hashes)
            started = time.perf_counter()
            ri, rj, _ = neardup_ray.near_pairs(hashes, MAX_DISTANCE)
            ray_s = time.perf_counter() - started
            if not np.array_equal(pair_keys(ri, rj, n), mine):
                sys.exit(f"n={n}: Ray block search pairs differ from the local search")
            rows.append({"n": n, "pairs": len(mine), "identical": True, "local_s": round(wall, 2),
                         "ray_s": round(ray_s, 2), "ray_over_local": round(ray_s / wall, 1)})
            print(f"n={n:>8}: Ray Data block search {ray_s:.1f} s vs local {wall:.1f} s (identical pairs)", flush=True)
    finally:
        ray.shutdown()
    return rows


def skipped_comparisons(sizes: dict[str, list[int]], imagededup: bool) -> list[str]:
    """One note per comparison whose engine is not installed; its sizes are emptied so it does not run."""
    notes = []
    for module, how in OPTIONAL.items():
        if sizes[module] and importlib.util.find_spec(module) is None:
            notes.append(f"{module} comparison skipped: {module} is not installed ({how})")
            sizes[module] = []
    if imagededup and not BENCH_PYTHON.exists():
        notes.append(f"imagededup comparison skipped: {BENCH_PYTHON} not found "
                     "(`make bench-env` makes it; imagededup lives in its own venv)")
    for note in notes:
        print(f"note: {note}", flush=True)
    return notes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--budget", type=float, default=600.0, help="seconds the imagededup comparison may use in all"
    )
    parser.add_argument("--skip-million", action="store_true", help="leave out the 1M-hash run of ours")
    parser.add_argument("--faiss-sizes", default="100000,1000000", help="sizes for the FAISS comparison ('' skips)")
    parser.add_argument("--ray-sizes", default="100000,1000000",
                        help="sizes for the Ray Data block search, e.g. 100000,1000000,10000000 ('' skips)")
    parser.add_argument("--only-scale", action="store_true", help="only the FAISS and Ray comparisons")
    args = parser.parse_args()
    sizes = {name: [int(x) for x in value.split(",") if x] for name, value in
             (("faiss", args.faiss_sizes), ("ray", args.ray_sizes))}
    skipped = skipped_comparisons(sizes, imagededup=not args.only_scale)
    if args.only_scale:
        faiss_rows, ray_rows = compare_faiss(sizes["faiss"]), compare_ray(sizes["ray"])
        print_result({"benchmark": "dedup_scale", "max_distance": MAX_DISTANCE, "faiss": faiss_rows, "ray": ray_rows,
                      "skipped": skipped, "load_average": os.getloadavg()[0], "machine": machine_info()})
        return
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    print(f"machine: {machine_info()['cpu']} x{os.cpu_count()}, load average {load}", flush=True)
    rows = compare_sizes(args.budget) if BENCH_PYTHON.exists() else []
    at_100k = solo(100_000, repeats=3)
    at_1m = None if args.skip_million else solo(1_000_000, repeats=1)
    faiss_rows, ray_rows = compare_faiss(sizes["faiss"]), compare_ray(sizes["ray"])
    largest = rows[-1] if rows else None
    print_result(
        {
            "benchmark": "dedup_neardup_search",
            "max_distance": MAX_DISTANCE,
            "vs_imagededup": rows,
            "speedup_at_largest": largest["speedup"] if largest else None,
            "speedup_cpu_at_largest": largest["speedup_cpu"] if largest else None,
            "largest_imagededup_n": largest["n"] if largest else None,
            "goal_speedup_100x_met": bool(largest and largest["speedup"] >= 100),
            "ours_100k": at_100k,
            "goal_100k_5s_met": at_100k["ours_s"] <= 5.0,
            "ours_1m": at_1m,
            "faiss": faiss_rows,
            "ray_block_search": ray_rows,
            "skipped": skipped,
            "load_average": load,
            "machine": machine_info(),
        }
    )


if __name__ == "__main__":
    main()
