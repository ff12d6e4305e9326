"""`pocketml curate` and `pocketml audit` with `--executor ray` on a real two-node Ray cluster
(ray_cluster.py): the same manifest, removals and report as the local run on the same pool, and a
dataset a node cannot see refused before anything is decoded or written.

The drivers run as `pocketml` subprocesses with the cluster's auth token, as a user's would.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from pocketml.acquisition.audit import audit
from pocketml.acquisition.curate import REMOVED, curate

from pocketml.configs.curate import CurateConfig
from pocketml.dataset import DATASET_MANIFEST
from pocketml.fsutil import sha256_file
from tests.acquisition.curate_pool import image_folder, photo_pool
from tests.acquisition.ray_cluster import PROJECT, RayCluster

pytest.importorskip("ray", reason="the Ray tests need the ray extra: pip install -e '.[dev,ray]'")

SETTINGS = ["--seed", "1", "--ratios", "0.6,0.2,0.2"]


def pocketml_cli(cluster: RayCluster, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", "from pocketml.app.cli import main; raise SystemExit(main())", *args],
                          cwd=PROJECT, env=cluster.env, capture_output=True, text=True, timeout=300)


def outputs(root: Path) -> dict:
    report = json.loads((root / "report" / "report.json").read_text())
    return {"manifest": (root / DATASET_MANIFEST).read_text(), "removed": (root / REMOVED).read_text(),
            "report": report}


def test_curate_and_audit_on_ray_write_what_the_local_run_writes(cluster, photo_folder, tmp_path):
    root, _ = photo_pool(tmp_path / "pool", photo_folder)
    curate(root, CurateConfig(seed=1, ratios=(0.6, 0.2, 0.2)))
    local = outputs(root)
    (root / DATASET_MANIFEST).unlink()

    done = pocketml_cli(cluster, "curate", str(root), *SETTINGS, "--ray-address", cluster.address)

    assert done.returncode == 0, done.stderr[-3000:]
    on_ray = outputs(root)
    assert on_ray["manifest"] == local["manifest"] and on_ray["removed"] == local["removed"]
    assert on_ray["report"] == local["report"]  # what the run found, settings included: where it ran changes none
    assert {"exact_duplicate", "near_duplicate", "label_conflict", "unreadable"} <= set(
        local["report"]["removed_by_reason"])  # the pool's planted trouble was found, on both

    folder = image_folder(tmp_path / "folder", photo_folder)
    local_audit = audit(folder, tmp_path / "audit-local", CurateConfig())
    done = pocketml_cli(cluster, "audit", str(folder), "--out", str(tmp_path / "audit-ray"),
                        "--ray-address", cluster.address)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads((tmp_path / "audit-ray" / "report.json").read_text()) == json.loads(json.dumps(local_audit))


def test_a_dataset_a_node_cannot_see_is_refused_before_anything_is_written(cluster, photo_folder):
    root, _ = photo_pool(cluster.hidden / "ds", photo_folder)
    images = sha256_file(root / "images")

    done = pocketml_cli(cluster, "curate", str(root), "--ray-address", cluster.address)

    assert done.returncode == 2
    line = done.stderr.strip().splitlines()[-1]
    assert "Ray node 127.0.0.1 cannot read" in line and "filesystem every node mounts" in line
    assert not (root / DATASET_MANIFEST).exists() and not (root / REMOVED).exists()
    assert sha256_file(root / "images") == images  # the pool is as it was
