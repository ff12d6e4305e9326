"""Distributed near-duplicate search (acquisition/neardup_ray.py) on a real local Ray instance: the
same pairs as the local multi-index search, edges of the distance included, each pair once."""

from __future__ import annotations

import numpy as np
import pytest
from pocketml.acquisition import neardup

from tests.acquisition.test_curate_neardup import _python_pairs, _with_planted

ray = pytest.importorskip("ray", reason="the Ray tests need the ray extra: pip install -e '.[dev,ray]'")
neardup_ray = pytest.importorskip("pocketml.acquisition.neardup_ray")


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = context.print_on_execution_start = False
    yield
    ray.shutdown()


def planted(n: int, seed: int) -> np.ndarray:
    """n hashes: 90% random, 10% copies of those at 0..12 flipped bits (as benchmarks/dedup_bench.py)."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 2**64, size=n - n // 10, dtype=np.uint64)
    copies = base[rng.integers(0, len(base), size=n // 10)].copy()
    for k, flips in enumerate(rng.integers(0, 13, size=n // 10)):
        for bit in rng.choice(64, int(flips), replace=False):
            copies[k] ^= np.uint64(1) << np.uint64(bit)
    return np.concatenate([base, copies])


@pytest.mark.parametrize("r", [0, 10])
def test_block_search_equals_a_plain_scan_at_every_distance(r):
    hashes = _with_planted(300, seed=r)
    i, j, d = neardup_ray.near_pairs(hashes, r)
    got = set(zip(i.tolist(), j.tolist(), d.tolist(), strict=True))
    assert got == _python_pairs(hashes, r) and len(got) == len(i)
    assert any(dist == r for *_, dist in got)


def test_pigeonhole_blocks_cover_every_bit_once():
    for r in (0, 5, 10, 63):
        layout = neardup_ray.block_layout(r)
        assert len(layout) == r + 1 and sum(bits for _, bits in layout) == 64
        covered = sum(((1 << bits) - 1) << shift for shift, bits in layout)
        assert covered == 2**64 - 1


def test_identical_pairs_and_clusters_to_the_local_search_with_large_groups():
    hashes = planted(5_000, seed=4)
    hashes[:50] = hashes[50]  # fifty identical copies: 1,275 pairs at distance 0 inside one value
    local = neardup.near_pairs(hashes, 10)
    # Groups above 64 members go through the local index instead of all-pairs: both paths are exercised.
    distributed = neardup_ray.near_pairs(hashes, 10, broadcast_group=64)
    assert all(np.array_equal(a, b) for a, b in zip(local, distributed, strict=True))
    assert np.array_equal(neardup_ray.clusters(hashes, len(hashes), 10),
                          neardup.connected_components(len(hashes), local[0], local[1]))


@pytest.mark.slow
def test_identical_pairs_to_the_local_search_at_100k():
    hashes = planted(100_000, seed=100_000)
    local = neardup.near_pairs(hashes, 10)
    distributed = neardup_ray.near_pairs(hashes, 10)
    assert len(local[0]) > 5_000
    assert all(np.array_equal(a, b) for a, b in zip(local, distributed, strict=True))
