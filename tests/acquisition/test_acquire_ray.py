"""The Ray executor on a real two-node Ray cluster (ray_cluster.py): the same per-URL statuses as the
local executor on the hostile server, a shard whose worker is SIGKILLed is rerun with no URL lost
or duplicated, a SIGKILLed driver's rerun completes, and a run directory a node cannot see is refused.

Drivers run as subprocesses (as a user's `pocketml acquire --executor ray` would), each with the
cluster's auth token; the state database they leave is what the tests read.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from pocketml.acquisition.acquire import acquire

from pocketml.config import from_mapping
from pocketml.configs.acquire import AcquireConfig
from tests.acquisition.hostile_http import EXPECTED, HostileServer
from tests.acquisition.ray_cluster import PROJECT, RayCluster
from tests.acquisition.test_acquire import DOWNLOAD

pytest.importorskip("ray", reason="the Ray tests need the ray extra: pip install -e '.[dev,ray]'")

RUNNER = """
import json, sys
from pathlib import Path
from pocketml.acquisition.acquire import acquire
from pocketml.config import from_mapping
from pocketml.configs.acquire import AcquireConfig
acquire(from_mapping(AcquireConfig, json.loads(sys.argv[1]), "acquire"), Path(sys.argv[2]))
"""


def table_for(url_file: Path, shard_size: int, download: dict, cluster: RayCluster | None) -> dict:
    table = {"sources": [{"type": "urls", "path": str(url_file), "label": "x"}], "shard_size": shard_size,
             "download": download}
    if cluster is None:
        return {**table, "workers": 2}
    return {**table, "executor": "ray", "ray_address": cluster.address, "cpus_per_shard": 0.5}


def start_driver(cluster: RayCluster, table: dict, out: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", RUNNER, json.dumps(table), str(out)], cwd=PROJECT,
                            env=cluster.env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def run_driver(cluster: RayCluster, table: dict, out: Path, timeout: float = 180) -> None:
    proc = start_driver(cluster, table, out)
    _, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err.decode()[-3000:]


def statuses(out: Path) -> dict[str, str]:
    with sqlite3.connect(out / "state.sqlite") as db:
        return dict(db.execute("SELECT url, status FROM urls"))


def finished(out: Path) -> dict[str, str]:
    if not (out / "state.sqlite").exists():
        return {}
    db = sqlite3.connect(out / "state.sqlite", timeout=5)
    try:
        return dict(db.execute("SELECT url, status FROM urls WHERE status != 'pending'"))
    except sqlite3.OperationalError:  # created, tables not yet
        return {}
    finally:
        db.close()


def assert_store_whole(out: Path) -> None:
    assert not list(out.rglob("*.tmp")), "a temp file survived"
    for file in (out / "images").rglob("*.jpg"):
        assert hashlib.sha256(file.read_bytes()).hexdigest() == file.stem  # never half-written
    with open(out / "pool.csv", newline="") as fh:
        pool = list(csv.DictReader(fh))
    assert len({row["source_url"] for row in pool}) == len(pool)  # no URL twice
    assert len({row["sha256"] for row in pool}) == len(pool)  # no image twice
    assert all((out / row["path"]).is_file() for row in pool)


def test_hostile_server_through_ray_gives_the_local_statuses(cluster, photo_folder, tmp_path):
    images = sorted((photo_folder / "train" / "cat").glob("*.jpg"))[:10]
    with HostileServer(images) as server:
        by_run = {}
        for run in ("local", "ray"):
            # A query per run: the server's per-path counters (429 once, two 500s) start afresh.
            url_file = tmp_path / f"{run}.txt"
            url_file.write_text("".join(f"{server.url(p)}?run={run}\n" for p in EXPECTED))
            table = table_for(url_file, 7, DOWNLOAD, cluster if run == "ray" else None)
            if run == "local":
                acquire(from_mapping(AcquireConfig, table, "acquire"), tmp_path / run)
            else:
                run_driver(cluster, table, tmp_path / run)
            by_run[run] = {u.removeprefix(server.base).split("?")[0]: s for u, s in statuses(tmp_path / run).items()}
        # --retry-failed through Ray: only the retryable failures are asked for again.
        before = dict(server.hits)
        run_driver(cluster, {**table, "retry_failed": True}, tmp_path / "ray")
        asked = {path.split("?")[0] for path, n in server.hits.items() if n > before.get(path, 0)}
    assert asked == {"/drip", "/reset", "/busy-forever"}
    for got in by_run.values():
        assert sorted([got.pop("/dup/a"), got.pop("/dup/b")]) == ["duplicate_bytes", "ok"]
    assert by_run["ray"] == by_run["local"] == {p: s for p, s in EXPECTED.items() if not p.startswith("/dup/")}
    summary = json.loads((tmp_path / "ray" / "acquisition.json").read_text())
    assert summary["this_run"]["executor"] == "ray" and summary["shards"] == {"done": 3, "seen": 3}
    assert_store_whole(tmp_path / "ray")


def test_a_run_directory_a_node_cannot_see_is_refused_before_any_fetch(cluster, tmp_path):
    url_file = tmp_path / "urls.txt"
    url_file.write_text("http://127.0.0.1:9/never-fetched.jpg\n")
    proc = start_driver(cluster, table_for(url_file, 10, DOWNLOAD, cluster), cluster.hidden / "ds")
    _, err = proc.communicate(timeout=120)
    message = err.decode()
    assert proc.returncode != 0
    assert "is not usable from Ray node 127.0.0.1" in message and "filesystem every node mounts" in message
    assert set(statuses(cluster.hidden / "ds").values()) == {"pending"}  # refused before any fetch


SLOW_DOWNLOAD = {"threads": 2, "per_host": 2, "retries": 0, "total_timeout": 5.0}


@pytest.mark.slow
def test_sigkill_of_a_worker_reruns_its_shard_and_loses_nothing(cluster, photo_folder, tmp_path):
    images = sorted((photo_folder / "train").rglob("*.jpg"))[:48]
    out = tmp_path / "ds"
    with HostileServer(images, latency=0.1) as server:
        urls = [server.url(f"/img/{i}") for i in range(240)]
        (tmp_path / "urls.txt").write_text("\n".join(urls) + "\n")
        proc = start_driver(cluster, table_for(tmp_path / "urls.txt", 30, SLOW_DOWNLOAD, cluster), out)
        deadline, victim = time.monotonic() + 90, None
        while victim is None and time.monotonic() < deadline and proc.poll() is None:
            busy = cluster.task_workers()
            if busy and sum(server.hits.values()) >= 20:
                victim = busy[0]
            time.sleep(0.1)
        assert victim is not None, f"no shard task seen running: {proc.stderr.read().decode()[-2000:]}"
        hits_at_kill = sum(server.hits.values())
        os.kill(victim, signal.SIGKILL)
        _, err = proc.communicate(timeout=240)
        assert proc.returncode == 0, err.decode()[-3000:]
        hits = dict(server.hits)
    got = statuses(out)
    assert sorted(got) == sorted(urls)  # every URL once (the key is the URL)
    assert set(got.values()) == {"ok", "duplicate_bytes"} and list(got.values()).count("ok") == 48
    # The killed task's URLs were fetched again by its rerun: some were requested twice.
    assert sum(hits.values()) > len(urls) and hits_at_kill < len(urls)
    assert json.loads((out / "acquisition.json").read_text())["this_run"]["lost_shards"] == []
    assert_store_whole(out)


@pytest.mark.slow
def test_sigkill_of_the_driver_then_rerun_completes_with_nothing_lost(cluster, photo_folder, tmp_path):
    images = sorted((photo_folder / "train").rglob("*.jpg"))[:48]
    out = tmp_path / "ds"
    with HostileServer(images, latency=0.05) as server:
        urls = [server.url(f"/img/{i}") for i in range(240)] + [server.url("/missing")]
        (tmp_path / "urls.txt").write_text("\n".join(urls) + "\n")
        table = table_for(tmp_path / "urls.txt", 20, SLOW_DOWNLOAD, cluster)
        proc = start_driver(cluster, table, out)
        deadline = time.monotonic() + 120
        while len(finished(out)) < 60 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
        assert proc.poll() is None, f"run ended before it could be killed: {proc.stderr.read().decode()[-2000:]}"
        os.kill(proc.pid, signal.SIGKILL)  # no cleanup runs: Ray cancels the dead driver's tasks
        proc.wait()
        done_before = finished(out)
        assert 60 <= len(done_before) < len(urls)
        hits_before = dict(server.hits)
        run_driver(cluster, table, out)
    got = statuses(out)
    assert sorted(got) == sorted(urls)
    assert sorted(set(got.values())) == ["duplicate_bytes", "http_error", "ok"]
    assert list(got.values()).count("ok") == 48
    for url in done_before:  # finished before the kill: never requested again
        path = url.removeprefix(server.base)
        assert server.hits[path] == hits_before[path], path
    assert_store_whole(out)
