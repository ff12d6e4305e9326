"""Near-duplicate search past one machine's memory: pigeonhole blocks grouped by a Ray Data job.

Split each 64-bit hash into r+1 blocks. Two hashes within Hamming distance r differ in at most r
bits, so at least one of the r+1 blocks is identical in both (pigeonhole). Every hash is emitted
once per block as the row (block, block value, index, hash); grouping rows by (block, value) is a
distributed shuffle, and each group is searched on its own worker: exactly with XOR + popcount
(broadcast for small groups, the local multi-index search of neardup.py for large ones). A pair that
agrees on several blocks would be found in each of their groups, so a group keeps only the pairs
whose *first* identical block is its own: every pair comes out exactly once, with no global dedup.
Union-find over the pairs (neardup.connected_components) gives the clusters.

The result is the same set of pairs as `neardup.near_pairs` on the same hashes (tests/acquisition/
test_neardup_ray.py checks it at 100k). No machine ever holds more than its groups; the driver holds
only the pairs. Only this module imports ray.
"""

from __future__ import annotations

import numpy as np
from pocketml.acquisition import neardup
from pocketml.acquisition.neardup import HASH_BITS

from pocketml.errors import PocketMLError

BROADCAST_GROUP = 2048  # members: below this a group is checked all-pairs; above, with the local index
ROWS_PER_BLOCK = 250_000  # hashes per input block of the Ray dataset
ROWS_PER_PARTITION = 2_000_000  # keyed rows per shuffle partition: big enough that each task is worth starting
MIN_PARTITIONS, MAX_PARTITIONS = 2, 400


def block_layout(max_distance: int) -> list[tuple[int, int]]:
    """(shift, bits) of the max_distance + 1 blocks that cover the 64 bits, widest first."""
    count = max_distance + 1
    if not 1 <= count <= HASH_BITS:
        raise PocketMLError(f"max distance {max_distance} is outside 0..{HASH_BITS - 1} bits for block search")
    base, extra = divmod(HASH_BITS, count)
    layout, shift = [], HASH_BITS
    for width in [base + 1] * extra + [base] * (count - extra):
        shift -= width
        layout.append((shift, width))
    return layout


def first_shared_block(a: np.ndarray, b: np.ndarray, layout: list[tuple[int, int]]) -> np.ndarray:
    """Per pair, the index of the first block in which a and b are identical (len(layout) if none)."""
    x = np.bitwise_xor(a, b)
    first = np.full(len(x), len(layout), dtype=np.int64)
    for index in range(len(layout) - 1, -1, -1):
        shift, bits = layout[index]
        same = ((x >> np.uint64(shift)) & np.uint64((1 << bits) - 1)) == 0
        first[same] = index
    return first


def emit_block_keys(batch: dict, layout: list[tuple[int, int]]) -> dict:
    """Each row once per block, keyed by (block index, block value)."""
    index = np.asarray(batch["index"], dtype=np.int64)
    phash = np.asarray(batch["phash"], dtype=np.uint64)
    values = [(phash >> np.uint64(shift)) & np.uint64((1 << bits) - 1) for shift, bits in layout]
    count = len(layout)
    return {"block": np.repeat(np.arange(count, dtype=np.int16), len(index)), "value": np.concatenate(values),
            "index": np.tile(index, count), "phash": np.tile(phash, count)}


def group_pairs(group: dict, layout: list[tuple[int, int]], max_distance: int,
                broadcast_group: int = BROADCAST_GROUP) -> dict:
    """Pairs (i < j by index) within max_distance in one (block, value) group whose first shared
    block is this group's block."""
    index = np.asarray(group["index"], dtype=np.int64)
    phash = np.asarray(group["phash"], dtype=np.uint64)
    block = int(np.asarray(group["block"])[0])
    if len(index) < 2:
        return _pairs(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int16))
    if len(index) <= broadcast_group:
        a, b = np.triu_indices(len(index), k=1)
        d = np.bitwise_count(phash[a] ^ phash[b]).astype(np.int16)
        close = d <= max_distance
        a, b, d = a[close], b[close], d[close]
    else:
        a, b, d = neardup.near_pairs(phash, max_distance, workers=1)
    own = first_shared_block(phash[a], phash[b], layout) == block
    i, j = index[a[own]], index[b[own]]
    return _pairs(np.minimum(i, j), np.maximum(i, j), d[own])


def _pairs(i: np.ndarray, j: np.ndarray, d: np.ndarray) -> dict:
    return {"i": i.astype(np.int64), "j": j.astype(np.int64), "d": d.astype(np.int16)}


def hash_dataset(hashes: np.ndarray):
    """A Ray dataset of (index, phash) rows from an in-memory array (at scale, read parquet instead)."""
    import pyarrow as pa
    import ray

    tables = [pa.table({"index": np.arange(s, min(s + ROWS_PER_BLOCK, len(hashes)), dtype=np.int64),
                        "phash": hashes[s:s + ROWS_PER_BLOCK]}) for s in range(0, len(hashes), ROWS_PER_BLOCK)]
    return ray.data.from_arrow(tables)


def near_pairs(dataset, max_distance: int, partitions: int = 0,
               broadcast_group: int = BROADCAST_GROUP) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All pairs (i < j) within max_distance over a Ray dataset with `index` (int64) and `phash`
    (uint64) columns, or a 1-D uint64 array; sorted by (i, j) like neardup.near_pairs.
    `partitions`: shuffle partitions (0: one per ROWS_PER_PARTITION keyed rows, within bounds);
    `broadcast_group`: groups up to this size are checked all-pairs, larger ones with the local index."""
    try:
        import ray  # noqa: F401
    except ImportError as exc:
        raise PocketMLError("distributed near-duplicate search needs Ray: pip install 'pocketml[ray]'") from exc
    if isinstance(dataset, np.ndarray):
        dataset = hash_dataset(neardup._as_hashes(dataset))
    layout = block_layout(max_distance)
    if not partitions:
        rows = dataset.count() * len(layout)
        partitions = int(np.clip(rows // ROWS_PER_PARTITION, MIN_PARTITIONS, MAX_PARTITIONS))
    keyed = dataset.map_batches(emit_block_keys, fn_kwargs={"layout": layout}, batch_format="numpy")
    found = keyed.groupby(["block", "value"], num_partitions=partitions).map_groups(
        group_pairs, fn_kwargs={"layout": layout, "max_distance": max_distance, "broadcast_group": broadcast_group},
        batch_format="numpy")
    pieces = list(found.iter_batches(batch_format="numpy", batch_size=None))
    if not pieces:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, empty.astype(np.int16)
    i = np.concatenate([p["i"] for p in pieces])
    j = np.concatenate([p["j"] for p in pieces])
    d = np.concatenate([p["d"] for p in pieces])
    order = np.lexsort((j, i))
    return i[order], j[order], d[order]


def clusters(dataset, n: int, max_distance: int, partitions: int = 0) -> np.ndarray:
    """Cluster id per hash (smallest member index): union-find over the distributed pairs."""
    i, j, _ = near_pairs(dataset, max_distance, partitions)
    return neardup.connected_components(n, i, j)
