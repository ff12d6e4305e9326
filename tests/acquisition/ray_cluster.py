"""A real two-node Ray cluster on this machine for the Ray executor tests.

`ray start --head` on the loopback interface plus a second `ray start --address` node, 1 CPU each,
each in a new session of its own, with a private temp dir and an auth token of their own. Stopping kills exactly the processes of that
session (by their ids, read from /proc), never `ray stop`, which would stop every Ray on the machine.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[2]
RAY = Path(sys.executable).with_name("ray")
HEAD_IP = "127.0.0.2"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def session_of(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[3])
    except (OSError, IndexError, ValueError):
        return None


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def pids() -> list[int]:
    return [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()]


class RayCluster:
    def __init__(self, cpus_per_node: int = 1):
        self.cpus = cpus_per_node
        self.port = free_port()
        # 127.0.0.2, not .1: Ray swaps 127.0.0.1 (and "localhost") for the machine's outward address,
        # but keeps any other loopback address. The second node and the drivers reach the head from
        # 127.0.0.1, so every byte stays on the loopback interface.
        self.address = f"{HEAD_IP}:{self.port}"
        # Short: Ray's socket paths must fit in 107 bytes.
        self.temp = Path(tempfile.mkdtemp(prefix="pmray", dir="/tmp"))
        # A token of its own: the GCS listens on every interface, so nobody else may join or submit.
        self.token = secrets.token_hex(32)
        self.client_env = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": self.token}
        self.env = {**os.environ, "PYTHONPATH": str(PROJECT), "RAY_USAGE_STATS_ENABLED": "0", **self.client_env}
        self.hidden = self.temp / "hidden"  # a directory the second node cannot see (see _start_nodes)
        self.hidden.mkdir()
        self.sessions: list[int] = []
        self.starters: list[subprocess.Popen] = []

    def start(self) -> RayCluster:
        try:
            self._start_nodes()
        except BaseException:
            self.stop()
            raise
        return self

    def node_addresses(self) -> list[str]:
        probe = ("import ray, sys; ray.init(address=sys.argv[1], logging_level='ERROR', log_to_driver=False); "
                 "print(' '.join(n['NodeManagerAddress'] for n in ray.nodes() if n['Alive']))")
        out = subprocess.run([sys.executable, "-c", probe, self.address], env=self.env, capture_output=True,
                             text=True, timeout=60, check=True)
        return out.stdout.split()

    def _start_nodes(self) -> None:
        common = ["--num-cpus", str(self.cpus), "--object-store-memory", str(150 * 2**20), "--disable-usage-stats",
                  "--block"]
        self._start([str(RAY), "start", "--head", "--node-ip-address", HEAD_IP, "--port", str(self.port),
                     "--include-dashboard", "false", "--temp-dir", str(self.temp), *common])
        self._wait_for_nodes(1)
        # The second node lives in a mount namespace of its own where `hidden` is an empty tmpfs: a
        # directory the driver sees and that node cannot, as on a cluster without a shared filesystem.
        joiner = " ".join([str(RAY), "start", "--address", self.address, *common])
        self._start(["unshare", "--mount", "--propagation", "private", "sh", "-c",
                     f"mount -t tmpfs pmhidden {self.hidden} && exec {joiner}"])
        self._wait_for_nodes(2)

    def _start(self, cmd: list[str]) -> None:
        with open(self.temp / f"start{len(self.starters)}.log", "wb") as log:  # the child keeps its own copy
            proc = subprocess.Popen(cmd, env=self.env, cwd=PROJECT, start_new_session=True,
                                    stdout=subprocess.DEVNULL, stderr=log)
        self.starters.append(proc)
        self.sessions.append(proc.pid)  # start_new_session: its pid is the session id

    def _wait_for_nodes(self, count: int, timeout: float = 90.0) -> None:
        probe = ("import ray, sys; ray.init(address=sys.argv[1], logging_level='ERROR', log_to_driver=False); "
                 "print(sum(1 for n in ray.nodes() if n['Alive']))")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for proc in self.starters:
                if proc.poll() is not None:
                    raise RuntimeError(f"ray start exited {proc.returncode}: {self.logs()}")
            out = subprocess.run([sys.executable, "-c", probe, self.address], env=self.env,
                                 capture_output=True, text=True, timeout=60)
            if out.returncode == 0 and out.stdout.strip().isdigit() and int(out.stdout.strip()) >= count:
                return
            time.sleep(1.0)
        raise RuntimeError(f"Ray cluster did not reach {count} nodes: {self.logs()}")

    def logs(self) -> str:
        return " | ".join(p.read_text(errors="replace")[-1500:] for p in sorted(self.temp.glob("start*.log")))

    def processes(self) -> list[int]:
        """Every live process of this cluster (its two sessions)."""
        own = set(self.sessions)
        return [pid for pid in pids() if session_of(pid) in own]

    def task_workers(self, function: str = "run_shard") -> list[int]:
        """Worker processes of this cluster running `function` right now (Ray titles them ray::NAME)."""
        return [pid for pid in self.processes() if cmdline(pid).startswith(f"ray::{function}")]

    def stop(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for pid in self.processes():
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    continue
            deadline = time.monotonic() + 5
            while self.processes() and time.monotonic() < deadline:
                time.sleep(0.2)
            if not self.processes():
                break
        for proc in self.starters:
            proc.wait(timeout=10)
        self.starters.clear()
        shutil.rmtree(self.temp, ignore_errors=True)
