import itertools

import numpy as np
import pytest
from pocketml.acquisition import neardup

from pocketml.errors import PocketMLError


def _with_planted(n: int, seed: int) -> np.ndarray:
    """Random hashes plus copies at every distance 0..16 from some of them (edges included)."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 2**64, size=n, dtype=np.uint64)
    planted = []
    for k, distance in enumerate(itertools.chain.from_iterable(itertools.repeat(range(17), 6))):
        value = int(base[k % n])
        for bit in rng.choice(64, distance, replace=False):
            value ^= 1 << int(bit)
        planted.append(value)
    return np.concatenate([base, np.array(planted, dtype=np.uint64)])


def _python_pairs(hashes: np.ndarray, r: int) -> set[tuple[int, int, int]]:
    values = [int(h) for h in hashes]
    return {
        (i, j, (values[i] ^ values[j]).bit_count())
        for i, j in itertools.combinations(range(len(values)), 2)
        if (values[i] ^ values[j]).bit_count() <= r
    }


@pytest.mark.parametrize("r", [0, 1, 3, 9, 10, 11, 16])
def test_near_pairs_equal_a_plain_python_scan_at_every_distance(r):
    hashes = _with_planted(300, seed=r)
    i, j, d = neardup.near_pairs(hashes, r)
    got = set(zip(i.tolist(), j.tolist(), d.tolist(), strict=True))
    assert got == _python_pairs(hashes, r)
    assert len(got) == len(i)  # no pair reported twice
    assert any(dist == r for *_, dist in got)  # the edge distance itself is included


def test_threaded_search_on_a_larger_set_equals_blocked_brute_force():
    hashes = _with_planted(20_000, seed=7)  # above PARALLEL_FROM: chunks are searched on threads
    reference = neardup.brute_force_pairs(hashes, 10)
    for workers in (1, 2):
        ours = neardup.near_pairs(hashes, 10, workers=workers)
        for a, b in zip(ours, reference, strict=True):
            np.testing.assert_array_equal(a, b)
    assert len(reference[0]) >= 6 * 11  # every planted copy within 10 bits


def test_identical_hashes_pair_with_each_other_and_their_neighbours():
    hashes = np.array([5, 5, 5, 7, 1 << 40], dtype=np.uint64)  # 5 ^ 7 = 0b10: one bit
    i, j, d = neardup.near_pairs(hashes, 1)
    assert set(zip(i.tolist(), j.tolist(), d.tolist(), strict=True)) == {
        (0, 1, 0),
        (0, 2, 0),
        (1, 2, 0),
        (0, 3, 1),
        (1, 3, 1),
        (2, 3, 1),
    }


def test_clusters_are_transitive_and_ids_are_the_smallest_member():
    a = 0
    b = 0b111  # 3 bits from a
    c = 0b111111  # 3 bits from b, 6 from a
    far = 2**64 - 1
    clusters = neardup.hash_clusters(np.array([far, c, a, b], dtype=np.uint64), 3)
    assert clusters.tolist() == [0, 1, 1, 1]


def test_many_copies_of_one_hash_cluster_without_pair_explosion():
    hashes = np.concatenate([np.full(50_000, 42, dtype=np.uint64), np.array([43, 2**63], dtype=np.uint64)])
    clusters = neardup.hash_clusters(hashes, 2)
    assert (clusters[:50_001] == 0).all() and clusters[-1] == 50_001


def test_bad_inputs_are_user_errors():
    with pytest.raises(PocketMLError, match="uint64"):
        neardup.near_pairs(np.array([1, 2]), 3)
    with pytest.raises(PocketMLError, match="0..64"):
        neardup.near_pairs(np.array([1, 2], dtype=np.uint64), 65)


def test_chunk_radii_follow_the_pigeonhole_bound():
    # r = 10 over 4 chunks: 10 = 2*4 + 2, so chunks 0-2 at radius 2 and chunk 3 at radius 1.
    assert neardup.chunk_radii(4, 10) == [2, 2, 2, 1]
    assert neardup.chunk_radii(4, 0) == [0, -1, -1, -1]
    assert sum(w for _, w in neardup.chunk_layout(100_000)) == 64


def test_union_find_components_match_scipy_connected_components():
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components as scipy_components

    rng = np.random.default_rng(0)
    n = 3000
    i, j = rng.integers(0, n, 2500), rng.integers(0, n, 2500)
    ours = neardup.connected_components(n, i, j)
    _, theirs = scipy_components(coo_matrix((np.ones(len(i)), (i, j)), shape=(n, n)), directed=False)
    # Same partition: a bijection between our ids and scipy's.
    assert (
        len(set(zip(ours.tolist(), theirs.tolist(), strict=True)))
        == len(set(ours.tolist()))
        == len(set(theirs.tolist()))
    )
    assert all(ours[k] <= k for k in range(n))  # ids are the smallest member


def test_split_groups_from_the_analysis_equal_a_fresh_search_over_the_kept_images():
    from pathlib import Path

    from pocketml.acquisition import splits
    from pocketml.acquisition.curate import Item, analyse, split_items
    from pocketml.acquisition.image_facts import ImageFacts

    from pocketml.configs.curate import CurateConfig

    hashes = _with_planted(400, seed=3)
    labels = ["cat" if k % 3 else "dog" for k in range(len(hashes))]
    items = [Item(index=k, path=Path(f"{k}.jpg"), rel_path=f"{k}.jpg", label=labels[k],
                  facts=ImageFacts(path=Path(f"{k}.jpg"), pixel_hash=str(k), phash=int(h)))
             for k, h in enumerate(hashes)]
    config = CurateConfig(seed=2, group_distance=12)
    analysis = analyse(items, config)
    kept = [it for it in items if it.index % 4 != 1]  # as if dedup and conflicts had removed some

    fresh = neardup.hash_clusters(np.array([it.facts.phash for it in kept], dtype=np.uint64), config.group_distance)
    expected = splits.assign_splits([it.label for it in kept], fresh.tolist(), config.ratios, config.seed,
                                    [None] * len(kept))

    assert split_items(kept, items, analysis, config) == expected
    assert len(set(fresh.tolist())) < len(kept)  # groups of similar images were there to keep together
