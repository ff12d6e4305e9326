"""kill -9 in the middle of a run: the rerun completes, redoes nothing finished, and no half
image is ever left with a real name.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from tests.acquisition.hostile_http import HostileServer

PROJECT = Path(__file__).resolve().parents[2]
RUNNER = """
import json, sys
from pathlib import Path
from pocketml.acquisition.acquire import acquire
from pocketml.config import from_mapping
from pocketml.configs.acquire import AcquireConfig
acquire(from_mapping(AcquireConfig, json.loads(sys.argv[1]), "acquire"), Path(sys.argv[2]))
"""


def finished(db_path: Path) -> dict[str, str]:
    if not db_path.exists():
        return {}
    db = sqlite3.connect(db_path, timeout=5)
    try:
        return dict(db.execute("SELECT url, status FROM urls WHERE status != 'pending'"))
    except sqlite3.OperationalError:  # the run has created the file but not yet its tables
        return {}
    finally:
        db.close()


def children_of(pid: int) -> list[int]:
    kids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # the process ended while we looked
        if int(fields[1]) == pid:
            kids.append(int(stat.parent.name))
    return kids


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_kill_9_then_resume(photo_folder, tmp_path):
    images = sorted((photo_folder / "train").rglob("*.jpg"))[:40]
    out = tmp_path / "ds"
    with HostileServer(images, latency=0.03) as server:
        urls = [server.url(f"/img/{i}") for i in range(240)] + [server.url("/missing")]
        (tmp_path / "urls.txt").write_text("\n".join(urls) + "\n")
        table = {"sources": [{"type": "urls", "path": str(tmp_path / "urls.txt"), "label": "x"}],
                 "shard_size": 40, "workers": 2,
                 "download": {"threads": 4, "per_host": 4, "retries": 0, "total_timeout": 5.0}}
        env = {**os.environ, "PYTHONPATH": str(PROJECT)}
        proc = subprocess.Popen([sys.executable, "-c", RUNNER, json.dumps(table), str(out)], cwd=PROJECT, env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 60
        while len(finished(out / "state.sqlite")) < 60 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
        assert proc.poll() is None, f"run ended before it could be killed: {proc.stderr.read().decode()[-2000:]}"
        workers = children_of(proc.pid)
        os.kill(proc.pid, signal.SIGKILL)  # no cleanup handler runs: the hard case
        proc.wait()
        done_before = finished(out / "state.sqlite")
        assert 60 <= len(done_before) < len(urls)
        hits_before = dict(server.hits)

        from pocketml.acquisition.acquire import acquire

        from pocketml.config import from_mapping
        from pocketml.configs.acquire import AcquireConfig

        summary = acquire(from_mapping(AcquireConfig, table, "acquire"), out)

    time.sleep(1.5)  # workers notice their parent is gone within a second
    assert workers and not [w for w in workers if alive(w)], "verification workers outlived the killed run"
    assert summary["urls"] == len(urls) and summary["by_status"] == {"ok": 40, "duplicate_bytes": 200, "http_error": 1}
    for url in done_before:  # finished before the kill: never requested again
        path = url.removeprefix(server.base)
        assert server.hits[path] == hits_before[path], path
    assert not list(out.rglob("*.tmp")), "a temp file survived the resume"
    for file in (out / "images").rglob("*"):
        if file.is_file():
            assert hashlib.sha256(file.read_bytes()).hexdigest() == file.stem  # whole, never half-written
