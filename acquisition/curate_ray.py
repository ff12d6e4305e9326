"""Curation's two costly passes on a Ray cluster (`executor = "ray"` in [curate], or `--executor ray`):
decoding, hashing and thumbnailing every image, as Ray tasks of up to FACTS_PER_TASK files each,
and the near-duplicate search, as neardup_ray's block search in Ray Data. Each task runs
image_facts.facts_of on the same files and the search finds the same pairs, so manifest.csv,
removed.csv and the report are the local run's; the driver alone writes them.

Workers read the images at the paths the driver reads them, so the dataset directory must be mounted
at the same path on every node (as `acquire --executor ray` requires of --out). A file the driver sees
and a node does not is an error naming that node, never an "unreadable" removal: a missing mount must
not shrink a dataset. A task whose worker or node dies is rerun by Ray (the passes only read).
Only this module, ray_executor.py and neardup_ray.py import ray.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from pocketml.acquisition import neardup_ray
from pocketml.acquisition.curate import Engine
from pocketml.acquisition.image_facts import ImageFacts, facts_of
from pocketml.acquisition.ray_executor import SHARED_FILESYSTEM, connect, on_every_node

from pocketml.configs.curate import CurateConfig
from pocketml.console import progress
from pocketml.errors import PocketMLError

FACTS_PER_TASK = 256  # files per task at most: long enough (~1 s of decoding) that scheduling costs little
TASKS_PER_CPU = 2  # fewer files than FACTS_PER_TASK x this per CPU: smaller tasks, so every CPU gets some
PROBED_FILES = 3  # files each node must see at the driver's size before any task runs


@contextmanager
def ray_engine(config: CurateConfig) -> Iterator[Engine]:
    """An Engine whose passes run on the cluster at config.ray_address (none: a local instance with
    config.workers CPUs); disconnected afterwards."""
    ray = connect(config.ray_address, config.workers)
    quiet_ray_data()
    try:
        remote = ray.remote(facts_of_files)

        def facts(paths: Sequence[Path], config: CurateConfig, what: str) -> list[ImageFacts]:
            return _facts_on_cluster(ray, remote, paths, config, what)

        yield Engine(facts=facts, near_pairs=neardup_ray.near_pairs)
    finally:
        ray.shutdown()  # disconnects from a cluster; stops the instance it started itself


def quiet_ray_data() -> None:
    """Ray Data's own progress bars stay (on a terminal); its per-dataset banners and its INFO log lines,
    which fill a log or CI output with one block per stage every few seconds, go."""
    import logging

    from ray.data import DataContext

    DataContext.get_current().print_on_execution_start = False
    logging.getLogger("ray.data").setLevel(logging.WARNING)


def _facts_on_cluster(ray, remote, paths: Sequence[Path], config: CurateConfig, what: str) -> list[ImageFacts]:
    _check_files_everywhere(ray, paths)
    cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
    size = max(1, min(FACTS_PER_TASK, -(-len(paths) // (TASKS_PER_CPU * cpus))))
    chunks = [list(paths[start:start + size]) for start in range(0, len(paths), size)]
    refs = {remote.remote(chunk, config): k for k, chunk in enumerate(chunks)}
    found: list[list[ImageFacts]] = [[] for _ in chunks]
    pending = list(refs)
    with progress() as bar:
        task = bar.add_task(what, total=len(paths))
        while pending:
            ready, pending = ray.wait(pending, num_returns=1)
            facts, problem = ray.get(ready[0])
            if problem:
                for ref in pending:
                    ray.cancel(ref)
                raise PocketMLError(problem)
            found[refs[ready[0]]] = facts
            bar.advance(task, len(facts))
    return [fact for chunk in found for fact in chunk]


def _check_files_everywhere(ray, paths: Sequence[Path]) -> None:
    """One clear error, before any decoding, when a node cannot see the dataset as the driver does."""
    if not paths:
        return
    picked = sorted({0, len(paths) // 2, len(paths) - 1})[:PROBED_FILES]
    expected = {str(paths[k]): Path(paths[k]).stat().st_size for k in picked}
    for node, problem in on_every_node(ray, files_problem, expected):
        if problem:
            raise PocketMLError(f"Ray node {node} {problem}; curate on Ray reads every image on the nodes, so the "
                                f"dataset must be on {SHARED_FILESYSTEM}")


def files_problem(expected: dict[str, int]) -> str:
    """'' when this node sees each file at the size the driver saw, else what it sees instead."""
    for name, size in expected.items():
        try:
            seen = Path(name).stat().st_size
        except OSError as exc:
            return f"cannot read {name} ({exc.strerror or exc})"
        if seen != size:
            return f"sees {name} at {seen} bytes, the driver at {size} (another filesystem at the same path)"
    return ""


def facts_of_files(paths: list[Path], config: CurateConfig) -> tuple[list[ImageFacts], str]:
    """(facts of each file, in order; '') on a node that sees every file, else ([], why not)."""
    import ray

    missing = next((path for path in paths if not Path(path).is_file()), None)
    if missing is not None:
        return [], (f"Ray node {ray.util.get_node_ip_address()} cannot see {missing}, which the driver reads; "
                    f"curate on Ray needs the dataset on {SHARED_FILESYSTEM}")
    return [facts_of(path, config) for path in paths], ""
