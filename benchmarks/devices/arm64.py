"""arm64: an ARM phone core emulated by qemu-user, running the real aarch64 wheels of LiteRT and ONNX
Runtime (the versions installed here) inside an arm64 Python from Debian's own packages.

`pocketml device setup arm64` prepares, in cache_dir("arm64"):
    root/       Debian bookworm's arm64 python3.11 (debootstrap --foreign, debs unpacked with dpkg-deb -x)
    wheels/     the aarch64 wheels of the installed ai-edge-litert / onnxruntime / numpy (pip --target)
    cores/C/    the prefix qemu's -L gets for core C: links into root/ plus proc/cpuinfo describing C
                (the runtimes' cpuinfo library reads /proc/cpuinfo and crashes on the host's x86 text)
    plugin/     arm64_count.c built against qemu-plugin.h from Debian's qemu source of the installed qemu
Each step leaves a stamp naming what it was built from; a step whose stamp matches is skipped, so the
command is idempotent and resumes after an interruption. Nothing here is needed by the rest of pocketml.

Only named cores are offered: `-cpu max` on qemu 7.2 computes wrong int8 results (its SME emulation).
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pocketml.benchmarks.devices import DeviceRun, DeviceStatus, arrays_per_file, cache_dir

from pocketml.errors import PocketMLError
from pocketml.fsutil import atomic_write_text

KIND = "arm64"
DEFAULT_VARIANT = "cortex-a76"
FORMATS = ("tflite", "onnx")
PLATFORMS = ("android", "onnx")
COST_KEY = "instructions"  # what ranks files on this device when no millisecond estimate exists

SUITE, MIRROR = "bookworm", "http://deb.debian.org/debian"
PYTHON = "usr/bin/python3.11"
RUNTIMES = ("ai-edge-litert", "onnxruntime", "numpy")  # the wheels, at the versions installed here
GUEST = Path(__file__).with_name("arm64_guest.py")
PLUGIN_SOURCE = Path(__file__).with_name("arm64_count.c")
REPEATS = 3  # costed calls per file after the warm-up; the fewest is reported (region_cost)
SPREAD_NOTE = 1e-3  # counted calls differing by more than this are said in the file's notes
PROCESS_TIMEOUT_S = 3600  # one emulated process; emulation is ~300-700x slower than native


@dataclass(frozen=True)
class Core:
    """What /proc/cpuinfo says on a phone with this core (the MIDR fields and the feature flags)."""

    part: int
    variant: int
    revision: int
    features: str


_V82 = "fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp"
CORES = {
    "cortex-a76": Core(part=0xD0B, variant=0x4, revision=1, features=_V82),
    "neoverse-n1": Core(part=0xD0C, variant=0x4, revision=1, features=_V82 + " ssbs"),
}
VARIANTS = tuple(CORES)


def cpuinfo_text(core: Core, cpus: int = 1) -> str:
    """/proc/cpuinfo as an aarch64 Linux kernel writes it for `cpus` identical cores."""
    block = ("processor\t: {n}\nBogoMIPS\t: 50.00\nFeatures\t: {f}\nCPU implementer\t: 0x41\n"
             "CPU architecture: 8\nCPU variant\t: {v:#x}\nCPU part\t: {p:#05x}\nCPU revision\t: {r}\n\n")
    return "".join(block.format(n=n, f=core.features, v=core.variant, p=core.part, r=core.revision)
                   for n in range(cpus))


def core_of(variant: str) -> Core:
    if variant not in CORES:
        raise PocketMLError(f"arm64 core {variant!r} is not offered; known: {', '.join(CORES)} "
                            "(qemu 7.2's -cpu max computes wrong int8 results)")
    return CORES[variant]


# -- what is installed here ---------------------------------------------------------------------
def runtime_versions() -> dict[str, str]:
    try:
        return {name: importlib.metadata.version(name) for name in RUNTIMES}
    except importlib.metadata.PackageNotFoundError as exc:
        raise PocketMLError(f"{exc.name} is not installed here; arm64 runs the aarch64 build of the same version") from None


def qemu_version() -> str | None:
    """The installed qemu-user package version (the plugin must be built against its header)."""
    if not shutil.which("qemu-aarch64"):
        return None
    found = subprocess.run(["dpkg-query", "-W", "-f=${source:Version}", "qemu-user"], capture_output=True, text=True)
    if found.returncode == 0 and found.stdout.strip():
        return found.stdout.strip()
    text = subprocess.run(["qemu-aarch64", "--version"], capture_output=True, text=True).stdout
    return text.split("version", 1)[-1].split()[0] if "version" in text else "unknown"


# -- stamps: a step is done when its stamp records the same inputs ----------------------------------
def _stamp(cache: Path, step: str) -> Path:
    return cache / "stamps" / f"{step}.json"


def done(cache: Path, step: str, inputs: dict) -> bool:
    try:
        return json.loads(_stamp(cache, step).read_text()) == inputs
    except (OSError, ValueError):
        return False


def mark_done(cache: Path, step: str, inputs: dict) -> None:
    _stamp(cache, step).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(_stamp(cache, step), json.dumps(inputs, sort_keys=True))


def steps(cache: Path, variant: str) -> list[tuple[str, dict, Callable[[], None]]]:
    """(name, inputs, build) in order; a build writes into a temporary folder and renames it in place."""
    versions = runtime_versions()
    qemu = qemu_version() or "none"
    return [
        ("root", {"suite": SUITE, "python": PYTHON}, lambda: build_root(cache)),
        ("wheels", versions, lambda: build_wheels(cache, versions)),
        (f"core-{variant}", {"cpuinfo": cpuinfo_text(core_of(variant))}, lambda: build_core(cache, variant)),
        ("plugin", {"qemu": qemu, "source": PLUGIN_SOURCE.read_text()}, lambda: build_plugin(cache, qemu)),
    ]


def status(variant: str = DEFAULT_VARIANT) -> DeviceStatus:
    cache = cache_dir(KIND)
    missing = [] if shutil.which("qemu-aarch64") else [f"qemu-aarch64: {TOOLS['qemu-aarch64']}"]
    pending = [name for name, inputs, _ in steps(cache, variant) if not done(cache, name, inputs)]
    missing += [f"{name}: not prepared (run `pocketml device setup arm64:{variant}`)" for name in pending]
    detail = {"cache": str(cache), "core": variant, "qemu": qemu_version(), **runtime_versions()}
    return DeviceStatus(ready=not missing, missing=missing, detail=detail)


def setup(variant: str = DEFAULT_VARIANT, log: Callable[[str], None] = print) -> None:
    """Prepare everything `run` needs for `variant` (idempotent: finished steps are skipped)."""
    core_of(variant)
    cache = cache_dir(KIND)
    todo = [(name, inputs, build) for name, inputs, build in steps(cache, variant) if not done(cache, name, inputs)]
    needed = ["qemu-aarch64", *(tool for name, _, _ in todo for tool in TOOLS_BY_STEP.get(name, ()))]
    absent = [f"{tool}: {TOOLS[tool]}" for tool in dict.fromkeys(needed) if shutil.which(tool) is None]
    if absent:
        raise PocketMLError(f"arm64 setup needs {'; '.join(absent)}")
    for name, inputs, build in todo:
        log(f"arm64 setup: {name} ...")
        started = time.time()
        build()
        mark_done(cache, name, inputs)
        log(f"arm64 setup: {name} done in {time.time() - started:.0f} s")
    log(f"arm64:{variant} ready in {cache}")


TOOLS = {
    "qemu-aarch64": "install qemu-user (apt-get install qemu-user)",
    "debootstrap": "install debootstrap (apt-get install debootstrap)",
    "dpkg-deb": "install dpkg (Debian/Ubuntu hosts only)",
    "apt-get": "the plugin header comes from Debian's qemu source package (Debian/Ubuntu hosts only)",
    "gcc": "install gcc (apt-get install gcc)",
    "tar": "install tar",
}
TOOLS_BY_STEP = {"root": ("debootstrap", "dpkg-deb"), "plugin": ("apt-get", "gcc", "tar")}


def _check(command: list[str], what: str, **kwargs) -> subprocess.CompletedProcess:
    done_ = subprocess.run(command, capture_output=True, text=True, **kwargs)
    if done_.returncode != 0:
        lines = [line for line in (done_.stderr + done_.stdout).splitlines() if line.strip()]
        last = lines[-1].strip()[:300] if lines else f"exit {done_.returncode}"
        raise PocketMLError(f"arm64 setup: {what} failed ({last}); check the network to Debian/PyPI and rerun")
    return done_


def _replace(target: Path, built: Path) -> None:
    """Move a finished build into place (the old one, if any, goes first)."""
    if target.exists():
        shutil.rmtree(target)
    built.rename(target)


def build_root(cache: Path) -> None:
    """Debian's arm64 python3.11: the first debootstrap stage downloads the packages, dpkg-deb unpacks them
    (the second stage, which would need to execute arm64 code as root, is not needed to run Python)."""
    if os.geteuid() != 0:
        raise PocketMLError("arm64 setup: debootstrap needs root for the arm64 Python root; run "
                            "`sudo pocketml device setup arm64` once (later runs need no root)")
    cache.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="root.", dir=cache))
    _check(["debootstrap", "--arch=arm64", "--foreign", "--variant=minbase",
            "--include=python3.11,libstdc++6", SUITE, str(work), MIRROR], "debootstrap (arm64 Debian packages)")
    for deb in sorted((work / "var/cache/apt/archives").glob("*.deb")):
        _check(["dpkg-deb", "-x", str(deb), str(work)], f"unpacking {deb.name}")
    if not (work / PYTHON).is_file():
        raise PocketMLError(f"arm64 setup: {PYTHON} is missing after unpacking the Debian packages")
    shutil.rmtree(work / "var/cache/apt/archives", ignore_errors=True)
    _replace(cache / "root", work)


def wheel_platforms() -> list[str]:
    """aarch64 manylinux tags bookworm's glibc 2.36 accepts (pip does not widen an explicit --platform)."""
    return ["manylinux2014_aarch64"] + [f"manylinux_2_{minor}_aarch64" for minor in range(17, 37)]


def build_wheels(cache: Path, versions: dict[str, str]) -> None:
    import sys

    cache.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="wheels.", dir=cache))
    platforms = [arg for tag in wheel_platforms() for arg in ("--platform", tag)]
    _check([sys.executable, "-m", "pip", "install", "--quiet", "--target", str(work), "--only-binary=:all:",
            *platforms, "--python-version", "3.11", "--implementation", "cp",
            *[f"{name}=={version}" for name, version in versions.items()]],
           "pip install of the aarch64 wheels " + ", ".join(f"{n}=={v}" for n, v in versions.items()))
    _replace(cache / "wheels", work)


def build_core(cache: Path, variant: str) -> None:
    """cores/VARIANT: a link to each top-level entry of root/, and proc/cpuinfo for this core (qemu's -L
    prefix redirects /proc/cpuinfo to it; everything else under /proc stays the host's)."""
    root = cache / "root"
    if not root.is_dir():
        raise PocketMLError("arm64 setup: the arm64 Python root is missing; rerun `pocketml device setup arm64`")
    work = Path(tempfile.mkdtemp(prefix="core.", dir=cache))
    for entry in root.iterdir():
        if entry.name != "proc":
            (work / entry.name).symlink_to(Path("..", "..", "root", entry.name))
    (work / "proc").mkdir()
    (work / "proc" / "cpuinfo").write_text(cpuinfo_text(core_of(variant)))
    (cache / "cores").mkdir(exist_ok=True)
    _replace(cache / "cores" / variant, work)


def build_plugin(cache: Path, qemu: str) -> None:
    """arm64_count.c compiled against the qemu-plugin.h of the installed qemu's Debian source package
    (Debian does not package the header; it is GPL-2.0-or-later, so it is fetched here, never shipped)."""
    if qemu == "none":
        raise PocketMLError("arm64 setup: qemu-aarch64 is missing; install qemu-user (apt-get install qemu-user)")
    work = Path(tempfile.mkdtemp(prefix="plugin.", dir=cache))
    header = fetch_plugin_header(work, qemu)
    _check(["gcc", "-O2", "-shared", "-fPIC", "-Wall", f"-I{header.parent}", "-o", str(work / "count.so"),
            str(PLUGIN_SOURCE)], "compiling the instruction-count plugin")
    for leftover in work.iterdir():
        if leftover.name not in ("count.so", "qemu-plugin.h"):
            shutil.rmtree(leftover) if leftover.is_dir() else leftover.unlink()
    _replace(cache / "plugin", work)


def fetch_plugin_header(work: Path, qemu: str) -> Path:
    """qemu-plugin.h from `apt-get source --download-only qemu=VERSION`, with a private apt state that
    lists only Debian's deb-src entries (the system's apt configuration is left alone)."""
    state = work / "apt"
    for sub in ("lists/partial", "cache/archives/partial"):
        (state / sub).mkdir(parents=True, exist_ok=True)
    (state / "sources.list").write_text(
        f"deb-src {MIRROR} {SUITE} main\ndeb-src {MIRROR} {SUITE}-updates main\n"
        f"deb-src http://deb.debian.org/debian-security {SUITE}-security main\n")
    options = [f"-oDir::Etc::SourceList={state / 'sources.list'}", "-oDir::Etc::SourceParts=/dev/null",
               f"-oDir::State::Lists={state / 'lists'}", f"-oDir::Cache={state / 'cache'}",
               "-oDebug::NoLocking=1", "-oAPT::Sandbox::User=root"]
    _check(["apt-get", "-qq", *options, "update"], "apt-get update of Debian's source lists")
    source = work / "source"
    source.mkdir()
    _check(["apt-get", "-qq", *options, "source", "--download-only", f"qemu={qemu}"],
           f"downloading Debian's qemu {qemu} source", cwd=source)
    tarballs = sorted(source.glob("qemu_*.orig.tar.*"))
    if not tarballs:
        raise PocketMLError(f"arm64 setup: Debian's qemu {qemu} source has no .orig tarball")
    _check(["tar", "-xf", str(tarballs[0]), "-C", str(source), "--wildcards", "*/include/qemu/qemu-plugin.h"],
           "extracting qemu-plugin.h")
    found = sorted(source.glob("*/include/qemu/qemu-plugin.h"))
    if not found:
        raise PocketMLError(f"arm64 setup: qemu {qemu}'s source has no include/qemu/qemu-plugin.h (plugins need qemu >= 4.2)")
    header = work / "qemu-plugin.h"
    shutil.copyfile(found[0], header)
    shutil.rmtree(state)
    shutil.rmtree(source)
    return header


# -- running files ------------------------------------------------------------------------------
def parse_regions(text: str) -> list[tuple[int, int, int]]:
    """The plugin's lines "total simd dot", one per closed region, in the order the guest closed them."""
    regions = []
    for number, line in enumerate(text.splitlines(), 1):
        fields = line.split()
        if len(fields) != 3 or not all(f.isdigit() for f in fields):
            raise PocketMLError(f"instruction-count line {number} is not 'total simd dot': {line!r}")
        regions.append((int(fields[0]), int(fields[1]), int(fields[2])))
    return regions


def region_cost(regions: list[tuple[int, int, int]]) -> dict:
    """Per-inference cost from one file's regions: the first is the warm-up (dropped); of the rest the call
    with the fewest instructions is reported, with the spread (max - min) / min. Why not the median: ONNX
    Runtime's calls on one fp16 file alternate between ~47.73 M and ~48.2 M instructions (allocator work
    that follows the process's history), so the median of 3 moved 0.6 % between processes while the
    fewest repeated within 0.02 %."""
    timed = regions[1:]
    if not timed:
        return {}
    fewest = min(timed, key=lambda r: r[0])
    most = max(r[0] for r in timed)
    return {"instructions": fewest[0], "simd": fewest[1], "dot": fewest[2], "threads": 1, "repeats": len(timed),
            "spread": (most - fewest[0]) / fewest[0] if fewest[0] else 0.0}


@dataclass(frozen=True)
class Unit:
    """One emulated process's share of one file: images [start, stop) of that file's images, and whether
    this process also counts the file's cost (one process per file does)."""

    file: int
    start: int
    stop: int
    cost: bool


def deal(counts: list[int], workers: int, cost: bool) -> list[list[Unit]]:
    """Every file's images split into `workers` contiguous chunks, chunk p to process p, so each process
    gets the same share of every file whatever a file costs to emulate (an fp16 ONNX file emulates ~8x
    slower than an int8 one, which dealing whole files by size cannot foresee). File f's cost is counted
    in process f mod workers, spreading the costed calls too."""
    workers = max(1, min(workers, max(counts, default=1)))
    groups: list[list[Unit]] = [[] for _ in range(workers)]
    for file, count in enumerate(counts):
        bounds = np.linspace(0, count, workers + 1).round().astype(int)
        for process in range(workers):
            start, stop = int(bounds[process]), int(bounds[process + 1])
            costed = cost and process == file % workers
            if stop > start or costed:
                groups[process].append(Unit(file, start, stop, costed))
    return [group for group in groups if group]


def guest_command(cache: Path, variant: str, job: Path, counts: Path | None) -> list[str]:
    prefix = cache / "cores" / variant
    command = ["qemu-aarch64", "-L", str(prefix), "-cpu", variant,
               "-E", f"PYTHONPATH={cache / 'wheels'}", "-E", "PYTHONHASHSEED=0", "-E", "OMP_NUM_THREADS=1"]
    if counts is not None:
        command += ["-plugin", f"{cache / 'plugin' / 'count.so'},out={counts}"]
    return command + [str(prefix / PYTHON), str(GUEST), str(job)]


def run(files: list[Path], formats: list[str], images: np.ndarray | list[np.ndarray], variant: str = DEFAULT_VARIANT,
        *, cost: bool = True, workers: int | None = None) -> list[DeviceRun]:
    """Each file's outputs on `images` (uint8 [N,H,W,3]; or a list, one array per file) and, with `cost`, its
    instructions per inference at 1 thread on `variant`. Every file's images are shared out over `workers`
    emulated processes (default: the CPUs here)."""
    ready = status(variant)
    if not ready.ready:
        raise PocketMLError(f"arm64:{variant} is not ready: {ready.missing[0]}")
    unknown = sorted(set(formats) - set(FORMATS))
    if unknown:
        raise PocketMLError(f"arm64 runs {', '.join(FORMATS)} files; not {', '.join(unknown)}")
    per_file = arrays_per_file(images, len(files))
    cache = cache_dir(KIND)
    batches = [images_per_run(files[i], formats[i]) for i in range(len(files))]
    groups = deal([len(a) for a in per_file], workers or os.cpu_count() or 1, cost)
    with tempfile.TemporaryDirectory(prefix="pocketml-arm64-") as tmp:
        arrays = {}  # one .npy per distinct image array: the common case is one for every file
        for array in per_file:
            if id(array) not in arrays:
                arrays[id(array)] = Path(tmp) / f"images-{len(arrays)}.npy"
                np.save(arrays[id(array)], np.ascontiguousarray(array, dtype=np.uint8))
        processes = []
        for number, group in enumerate(groups):
            out = Path(tmp) / f"p{number}"
            out.mkdir()
            job = {"files": [{"path": str(Path(files[u.file]).resolve()), "format": formats[u.file],
                              "images": str(arrays[id(per_file[u.file])]), "start": u.start, "stop": u.stop,
                              "cost": u.cost, "batch": batches[u.file]} for u in group],
                   "out": str(out), "repeats": REPEATS}
            (out / "job.json").write_text(json.dumps(job))
            counts = out / "counts.txt" if cost else None
            log = open(out / "log.txt", "w")  # noqa: SIM115 - closed after the process ends
            processes.append((group, out, log, subprocess.Popen(
                guest_command(cache, variant, out / "job.json", counts), stdout=log, stderr=subprocess.STDOUT)))
        parts: dict[int, list[tuple[Unit, Share]]] = {i: [] for i in range(len(files))}
        for group, out, log, process in processes:
            try:
                process.wait(timeout=PROCESS_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            log.close()
            for unit, result in zip(group, collect(out, group, process.returncode), strict=True):
                parts[unit.file].append((unit, result))
    return [joined(parts[i], per_file[i]) for i in range(len(files))]


def images_per_run(path: Path, fmt: str) -> int:
    """Images per runtime call, as the host's predictor feeds this file (export/onnx.py images_per_run)."""
    if fmt != "onnx":
        return 1
    from pocketml.export.onnx import images_per_run as onnx_batch
    from pocketml.export.onnx import read_graph

    return onnx_batch(read_graph(path))


def joined(parts: list[tuple[Unit, Share]], images: np.ndarray) -> DeviceRun:
    """One file's DeviceRun from its processes' shares: outputs in image order, the cost of the process
    that counted it, every note; the first error fails the file."""
    parts = sorted(parts, key=lambda part: part[0].start)
    errors = [result.error for _, result in parts if result.error]
    if errors:
        return DeviceRun(outputs=None, error=errors[0])
    shares = [result.outputs for unit, result in parts if unit.stop > unit.start]
    outputs = np.concatenate(shares) if shares else np.zeros((0, 0), np.float32)
    if len(outputs) != len(images):
        return DeviceRun(outputs=None, error=f"{len(outputs)} outputs for {len(images)} images")
    cost = next((result.cost for unit, result in parts if unit.cost), {})
    seconds = sum(result.seconds for _, result in parts)
    notes = [f"emulated {seconds:.0f} s in {len(parts)} process{'es' if len(parts) > 1 else ''}"]
    notes += [note for _, result in parts for note in result.notes]
    return DeviceRun(outputs=outputs, cost=cost, notes=notes)


@dataclass
class Share:
    """What one emulated process returned for one Unit."""

    outputs: np.ndarray | None
    cost: dict
    notes: list[str]
    seconds: float
    error: str | None = None


def collect(out: Path, group: list[Unit], returncode: int) -> list[Share]:
    """The Shares of one emulated process, from its status.json, outputs and plugin lines."""
    try:
        status_list = json.loads((out / "status.json").read_text())
    except (OSError, ValueError):
        status_list = []
    counted = (out / "counts.txt").exists()
    regions = parse_regions((out / "counts.txt").read_text()) if counted else []
    tail = (out / "log.txt").read_text(errors="replace").strip().splitlines()[-1:] if (out / "log.txt").exists() else []
    results, cursor = [], 0
    for index, unit in enumerate(group):
        if index >= len(status_list):
            why = f"the emulated process ended (exit {returncode}) before this file: {' '.join(tail)[:200]}"
            results.append(Share(None, {}, [], 0.0, why))
            continue
        entry = status_list[index]
        mine, cursor = regions[cursor: cursor + entry["regions"]], cursor + entry["regions"]
        if entry["error"]:
            results.append(Share(None, {}, [], entry["seconds"], entry["error"]))
            continue
        figures = region_cost(mine) if unit.cost else {}
        notes = []
        if unit.cost and not figures:
            notes.append("no instruction count: the plugin wrote no regions")
        if figures.get("spread", 0) > SPREAD_NOTE:
            notes.append(f"the {figures['repeats']} counted calls differ by up to {figures['spread']:.2%}: the fewest "
                         "is reported")
        outputs = np.load(out / f"outputs-{index}.npy") if unit.stop > unit.start else None
        results.append(Share(outputs, figures, notes, entry["seconds"]))
    return results
