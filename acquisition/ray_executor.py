"""The Ray executor: each shard is a Ray task (`shard.run_shard`, threads inside), retried when its
worker or node dies; the driver alone writes the state database, exactly as with the local executor.

Workers write images straight into the run directory's store, so that directory must be the same
path on every node (a shared filesystem: NFS, EFS, Lustre, CephFS...). `RayExecutor` proves it
before the first shard runs: the driver leaves a random token in the run directory and a task
pinned to every node must read it back and write a file beside the images; a node that cannot is
one clear error, before any URL is fetched. Only this module imports ray.
"""

from __future__ import annotations

import math
import os
import secrets
import socket
from pathlib import Path

from pocketml.acquisition.shard import ShardResult, ShardTask, run_shard
from pocketml.acquisition.store import IMAGES_DIR

from pocketml.configs.acquire import AcquireConfig
from pocketml.errors import PocketMLError

PROBE = ".pocketml-store-probe"
SHARED_FILESYSTEM = "a filesystem every node mounts at the same path (NFS, EFS, Lustre)"
# Failures that mean "the worker or its node went away" (retried by Ray up to max_retries first).
LOST = ("WorkerCrashedError", "NodeDiedError", "ObjectLostError", "OwnerDiedError", "LocalRayletDiedError",
        "TaskUnschedulableError", "OutOfMemoryError")


def _import_ray():
    try:
        import ray
    except ImportError as exc:
        raise PocketMLError("executor = \"ray\" needs Ray: pip install 'pocketml[ray]'") from exc
    return ray


def connect(ray_address: str, workers: int):
    """The ray module, joined to the cluster at `ray_address`, or to a private local instance with
    `workers` CPUs (0: all of this machine's) when no address is given."""
    ray = _import_ray()
    # "local" always starts a private instance; a bare ray.init() would join any cluster it finds.
    ray.init(address=ray_address or "local", include_dashboard=False, log_to_driver=False,
             logging_level="ERROR", configure_logging=True, ignore_reinit_error=True,
             **({} if ray_address else {"num_cpus": workers or None}))
    return ray


class RayExecutor:
    def __init__(self, config: AcquireConfig, out_dir: str):
        self.ray = ray = connect(config.ray_address, config.workers)
        self.out_dir = out_dir
        self._check_store_everywhere()
        cpus = ray.cluster_resources().get("CPU", 0)
        if cpus <= 0:
            raise PocketMLError(f"Ray cluster {config.ray_address or '(local)'} has no CPUs to run shards on")
        self.slots = math.ceil(cpus / config.cpus_per_shard) + 1  # +1 queued: no gap between two tasks
        self.remote = ray.remote(run_shard).options(num_cpus=config.cpus_per_shard, max_retries=config.max_retries,
                                                    retry_exceptions=False)
        self.refs: dict = {}
        self._failed: list[str] = []

    @property
    def failed(self) -> list[str]:
        return list(self._failed)

    def submit(self, task: ShardTask) -> None:
        self.refs[self.remote.remote(task)] = task

    def in_flight(self) -> int:
        return len(self.refs)

    def next_result(self) -> ShardResult | None:
        ready, _ = self.ray.wait(list(self.refs), num_returns=1)
        task = self.refs.pop(ready[0])
        try:
            return self.ray.get(ready[0])
        except self.ray.exceptions.RayError as exc:
            if type(exc).__name__ not in LOST:
                raise  # a bug inside run_shard: its traceback, not a silent retry
            self._failed.append(task.shard)
            return None

    def close(self, cancel: bool = False) -> None:
        if cancel:
            for ref in self.refs:
                self.ray.cancel(ref, force=True)
        self.ray.shutdown()  # disconnects from a cluster; stops the instance it started itself

    def _check_store_everywhere(self) -> None:
        token = secrets.token_hex(16)
        probe = Path(self.out_dir) / PROBE
        probe.write_text(token)
        try:
            for node, problem in on_every_node(self.ray, store_problem, self.out_dir, token):
                if problem:
                    raise PocketMLError(
                        f"run directory {self.out_dir} is not usable from Ray node {node}: "
                        f"{problem}; workers write images there, so put --out on {SHARED_FILESYSTEM}")
        finally:
            probe.unlink(missing_ok=True)


def on_every_node(ray, function, *args) -> list[tuple[str, object]]:
    """(node address, function(*args) run on that node) for every live node with CPUs: a probe pinned
    to each node, taking no CPU, so it runs even while the cluster is busy."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    nodes = [n for n in ray.nodes() if n["Alive"] and n["Resources"].get("CPU", 0) > 0]
    probe = ray.remote(num_cpus=0)(function)
    refs = [probe.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)).remote(*args)
            for n in nodes]
    return [(n["NodeManagerAddress"], result) for n, result in zip(nodes, ray.get(refs), strict=True)]


def store_problem(out_dir: str, token: str) -> str:
    """'' when this node sees the driver's run directory and can write images into it; else why not."""
    root = Path(out_dir)
    try:
        seen = (root / PROBE).read_text()
    except OSError as exc:
        return f"{socket.gethostname()} cannot read {root / PROBE} ({exc.strerror or exc})"
    if seen != token:
        return f"{socket.gethostname()} sees a different {root} (another filesystem at the same path)"
    images = root / IMAGES_DIR
    test = images / f".probe-{socket.gethostname()}-{os.getpid()}.tmp"
    try:
        images.mkdir(parents=True, exist_ok=True)
        test.write_bytes(b"ok")
        test.unlink()
    except OSError as exc:
        return f"{socket.gethostname()} cannot write into {images} ({exc.strerror or exc})"
    return ""
