"""Fixtures of the acquisition tests: everything they need is generated, so they run on any clone."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def photo_folder(tmp_path_factory) -> Path:
    """ImageFolder train/val x cat/coffee of pairwise-distinct real photos, ~400x300 (photo_set.py)."""
    from tests.acquisition.photo_set import write_photo_folder

    return write_photo_folder(tmp_path_factory.mktemp("photo_folder"))


@pytest.fixture(scope="session")
def cluster():
    """A real two-node Ray cluster on the loopback interface (ray_cluster.py), shared by the Ray tests."""
    pytest.importorskip("ray", reason="the Ray tests need the ray extra: pip install -e '.[dev,ray]'")
    from tests.acquisition.ray_cluster import RayCluster

    ray_cluster = RayCluster(cpus_per_node=1).start()
    try:
        yield ray_cluster
    finally:
        ray_cluster.stop()
    assert not ray_cluster.processes(), "the cluster outlived its stop"
