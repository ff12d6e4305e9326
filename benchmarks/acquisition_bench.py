"""Acquisition throughput, CPU cost and tail: pocketml (local and Ray executors) vs img2dataset.

Web-like conditions on the loopback interface: one server process answers for HOSTS hosts
(127.0.0.1..127.0.0.HOSTS, one port), each request waits 50-300 ms, 5% are 404, 1% hang (the server
never answers), 1% are an HTML page served as image/jpeg. The images are ~500x375 JPEGs cut from
scikit-image's CC0 / public-domain photographs, every URL with distinct pixels, so no tool can skip
work as a duplicate. Every tool decodes, resizes to at most 256 px on the long side and re-encodes
each image, with 64 downloads in flight, 2 retries and a 10 s timeout.

Figures per tool: images/s (wall), images per CPU-second (user+system of every process of the run,
read from /proc while it runs; for Ray that includes the cluster's own processes), and the tail:
wall time after the busy phase (which ends when the server sent the run's last image). The Ray row
runs on a Ray head started beforehand (as a user's cluster would be), so its start-up is reported
apart, not charged to the run.

Run: .venv/bin/python benchmarks/acquisition_bench.py   (img2dataset comes from .venv-bench, made by
`make bench-env`, and runs as a subprocess; ACQ_BENCH_URLS=N changes the list length.)
"""

from __future__ import annotations

import io
import json
import multiprocessing
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]
if str(PROJECT_ROOT) not in sys.path:
    sys.path.insert(0, str(PROJECT_ROOT))

from pocketml.benchmarks.common import machine_info, print_result  # noqa: E402

URLS = int(os.environ.get("ACQ_BENCH_URLS", "5000"))  # URLs per tool
HOSTS = 40
IN_FLIGHT = 64  # downloads in flight: img2dataset 2 processes x 32 threads; pocketml 4 shard tasks x 16
TIMEOUT = 10.0  # seconds, both tools
END_SLACK = 1.0  # seconds after the last outcome for writing pool.csv and the summary, and leaving Ray
MAX_SIDE = 256
SAMPLE_S = 0.25
IMG2DATASET = PROJECT_ROOT / ".venv-bench" / "bin" / "img2dataset"
RAY = Path(sys.executable).with_name("ray")
CLK = os.sysconf("SC_CLK_TCK")


# ---- the images and the server ---------------------------------------------------------------

def base_photos() -> list:
    """4:3 crops of the CC0 photographs, 500x375."""
    import numpy as np
    import skimage.data
    from PIL import Image

    out = []
    for name in ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry", "retina"):
        photo = np.asarray(getattr(skimage.data, name)())[..., :3]
        height, width = photo.shape[:2]
        for k in range(4):  # four different crops per photograph
            crop_w = int(min(width, height * 4 / 3) * (1.0 - 0.1 * k))
            crop_h = int(crop_w * 3 / 4)
            left, top = (width - crop_w) * k // 4, (height - crop_h) * (3 - k) // 4
            image = Image.fromarray(photo[top:top + crop_h, left:left + crop_w]).resize((500, 375), Image.Resampling.LANCZOS)
            out.append(image)
    return out


def distinct_jpegs(count: int) -> list[bytes]:
    """`count` JPEGs with distinct pixels: a base photo with a few rows and columns cut off, a
    different number for every repeat of that base."""
    bases = base_photos()
    out = []
    for i in range(count):
        image = bases[i % len(bases)]
        rows, cols = divmod(i // len(bases), 40)
        buffer = io.BytesIO()
        image.crop((0, 0, image.width - cols, image.height - rows)).save(buffer, "JPEG", quality=90)
        out.append(buffer.getvalue())
    return out


def behaviour(index: int) -> str:
    slot = index % 100
    return "404" if slot in (7, 27, 47, 67, 87) else "hang" if slot == 13 else "html" if slot == 31 else "image"


def latency(index: int) -> float:
    return 0.05 + 0.25 * ((index * 0.6180339887) % 1.0)


RUNS = ("local", "i2d", "ray")  # URL prefixes; the server notes when it last served an image of each


def serve(images: list[bytes], port: int, ready, last_image) -> None:
    """Server process: http://127.0.0.H:port/<run>/<i>.jpg for every host H; `last_image[k]` is the
    time.time() it last sent an image of run RUNS[k]: the end of that run's busy phase."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args) -> None:
            return

        def do_GET(self) -> None:  # noqa: N802
            index = int(self.path.rsplit("/", 1)[1].split(".")[0])
            time.sleep(latency(index))
            kind = behaviour(index)
            if kind == "hang":
                time.sleep(3 * TIMEOUT * 4)  # past every timeout and retry of both tools
                self.close_connection = True
                return
            if kind == "404":
                return self.reply(404, b"gone", "text/plain")
            if kind == "html":
                return self.reply(200, b"<!DOCTYPE html><html><body>Access denied</body></html>", "image/jpeg")
            self.reply(200, images[index], "image/jpeg")
            run = RUNS.index(self.path.strip("/").split("/")[0])
            last_image[run] = max(last_image[run], time.time())

        def reply(self, status: int, body: bytes, ctype: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    servers = []
    for host in range(1, HOSTS + 1):
        httpd = ThreadingHTTPServer((f"127.0.0.{host}", port), Handler)
        httpd.daemon_threads = True
        httpd.request_queue_size = 256
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        servers.append(httpd)
    ready.set()
    threading.Event().wait()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def url_list(path: Path, port: int, run: str, count: int) -> Path:
    path.write_text("".join(f"http://127.0.0.{1 + i % HOSTS}:{port}/{run}/{i}.jpg\n" for i in range(count)))
    return path


# ---- CPU accounting from /proc ----------------------------------------------------------------

def session_cpu() -> dict[int, dict[int, float]]:
    """{session id: {pid: CPU seconds}} of every live process."""
    out: dict[int, dict[int, float]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        out.setdefault(int(fields[3]), {})[int(entry.name)] = (int(fields[11]) + int(fields[12])) / CLK
    return out


class CpuMeter:
    """Samples the CPU of every process in the given sessions (processes come and go during a run)."""

    def __init__(self, sessions: list[int]):
        self.sessions = sessions
        self.seen: dict[int, float] = {}
        self.base: dict[int, float] = {}
        self._stop = threading.Event()
        self._sample(first=True)
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self, first: bool = False) -> None:
        live = session_cpu()
        for session in self.sessions:
            for pid, cpu in live.get(session, {}).items():
                if first:
                    self.base[pid] = cpu
                self.seen[pid] = max(self.seen.get(pid, 0.0), cpu)

    def _run(self) -> None:
        while not self._stop.wait(SAMPLE_S):
            self._sample()

    def add_session(self, session: int) -> None:
        self.sessions.append(session)

    def start(self) -> CpuMeter:
        self.thread.start()
        return self

    def stop(self) -> None:
        self._sample()
        self._stop.set()
        self.thread.join()

    def total(self) -> float:
        return sum(cpu - self.base.get(pid, 0.0) for pid, cpu in self.seen.items())


def timed(cmd: list[str], env: dict, last_image, run: str, extra_sessions: list[int] | None = None) -> dict:
    """Wall seconds, CPU seconds (every process of the command's session, plus extra sessions) and
    the tail: wall time after the busy phase, which ends when the server sent the run's last image."""
    start, started_at = time.perf_counter(), time.time()
    proc = subprocess.Popen(cmd, env=env, cwd=PROJECT_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)
    meter = CpuMeter([proc.pid, *(extra_sessions or [])]).start()
    _, err = proc.communicate()
    wall = time.perf_counter() - start
    meter.stop()
    if proc.returncode != 0:
        sys.exit(f"{cmd[0]} failed ({proc.returncode}):\n{err.decode()[-3000:]}")
    busy = last_image[RUNS.index(run)] - started_at
    return {"wall_s": round(wall, 2), "cpu_s": round(meter.total(), 2), "busy_s": round(busy, 2),
            "tail_s": round(wall - busy, 2)}


# ---- the tools ----------------------------------------------------------------------------------

POCKETML_RUNNER = """
import json, sys
from pathlib import Path
from pocketml.acquisition.acquire import acquire
from pocketml.config import from_mapping
from pocketml.configs.acquire import AcquireConfig
summary = acquire(from_mapping(AcquireConfig, json.loads(sys.argv[1]), "acquire"), Path(sys.argv[2]))
Path(sys.argv[3]).write_text(json.dumps(summary))
"""


def pocketml_table(url_file: Path, executor: dict) -> dict:
    threads = IN_FLIGHT // 4
    return {"sources": [{"type": "urls", "path": str(url_file), "label": "x"}], "shard_size": 250, **executor,
            "download": {"threads": threads, "per_host": threads, "retries": 2, "backoff": 0.05,
                         "connect_timeout": 5.0, "read_timeout": TIMEOUT, "total_timeout": TIMEOUT,
                         # a hung URL: cut 2 s after its shard drains, then one attempt of 8 s: 10 s in all
                         "defer_after": 2.0, "late_retry_timeout": TIMEOUT - 2.0},
            "verify": {"max_side": MAX_SIDE}}


def run_pocketml(url_file: Path, work: Path, executor: dict, env: dict, last_image,
                 sessions: list[int] | None = None) -> dict:
    out, summary_file = work / f"pm-{url_file.stem}", work / f"pm-{url_file.stem}.json"
    result = timed([sys.executable, "-c", POCKETML_RUNNER, json.dumps(pocketml_table(url_file, executor)), str(out),
                    str(summary_file)], env, last_image, url_file.stem, sessions)
    summary = json.loads(summary_file.read_text())
    stored = summary["by_status"].get("ok", 0) + summary["by_status"].get("duplicate_bytes", 0)
    return {**result, "images": stored, "by_status": summary["by_status"],
            "own_busy_s": summary["this_run"]["busy_s"], "own_tail_s": summary["this_run"]["tail_s"]}


def run_img2dataset(url_file: Path, work: Path, last_image) -> dict:
    out = work / f"i2d-{url_file.stem}"
    cmd = [str(IMG2DATASET), "--url_list", str(url_file), "--output_folder", str(out), "--input_format", "txt",
           "--output_format", "files", "--processes_count", "2", "--thread_count", str(IN_FLIGHT // 2),
           "--image_size", str(MAX_SIDE), "--resize_mode", "keep_ratio_largest", "--resize_only_if_bigger", "True",
           "--number_sample_per_shard", "500", "--retries", "2", "--timeout", str(int(TIMEOUT)),
           "--distributor", "multiprocessing", "--enable_wandb", "False"]
    result = timed(cmd, {**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1"}, last_image, url_file.stem)
    stats = [json.loads(p.read_text()) for p in out.glob("*_stats.json")]
    ok = sum(s.get("successes", 0) for s in stats)
    return {**result, "images": ok, "by_status": {"ok": ok, "failed": sum(s.get("count", 0) for s in stats) - ok}}


class RayHead:
    """A one-node Ray cluster (2 CPUs) in a session of its own, on the loopback interface."""

    def __init__(self) -> None:
        self.port = free_port()
        self.address = f"127.0.0.2:{self.port}"  # Ray would swap 127.0.0.1 for the outward address
        self.temp = Path(tempfile.mkdtemp(prefix="pmrayb", dir="/tmp"))
        auth = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}
        self.env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT), "RAY_USAGE_STATS_ENABLED": "0", **auth}
        started = time.perf_counter()
        self.proc = subprocess.Popen(
            [str(RAY), "start", "--head", "--node-ip-address", "127.0.0.2", "--port", str(self.port), "--num-cpus",
             str(os.cpu_count() or 2), "--include-dashboard", "false", "--disable-usage-stats", "--temp-dir",
             str(self.temp), "--block"], env=self.env, start_new_session=True, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL)
        probe = "import ray, sys; ray.init(address=sys.argv[1], logging_level='ERROR'); print('ok')"
        for _ in range(60):
            done = subprocess.run([sys.executable, "-c", probe, self.address], env=self.env, capture_output=True,
                                  text=True)
            if done.stdout.strip() == "ok":
                break
            time.sleep(1)
        else:
            self.stop()
            sys.exit("Ray head did not start")
        self.startup_s = round(time.perf_counter() - started, 1)
        time.sleep(3)  # let its idle workers finish starting before CPU is counted

    def stop(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for pid in session_cpu().get(self.proc.pid, {}):
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    continue
            time.sleep(3)
        self.proc.wait(timeout=10)
        shutil.rmtree(self.temp, ignore_errors=True)


def rates(result: dict) -> dict:
    return {**result, "images_per_s": round(result["images"] / result["wall_s"], 1),
            "images_per_cpu_s": round(result["images"] / result["cpu_s"], 1) if result["cpu_s"] else None}


def main() -> None:
    if not IMG2DATASET.exists():
        sys.exit(f"{IMG2DATASET} missing: run `make bench-env` first")
    load = os.getloadavg()[0]
    images = distinct_jpegs(URLS)
    port = free_port()
    ctx = multiprocessing.get_context("fork")
    ready, last_image = ctx.Event(), ctx.Array("d", len(RUNS))
    server = ctx.Process(target=serve, args=(images, port, ready, last_image), daemon=True)
    server.start()
    ready.wait(60)
    work = Path(tempfile.mkdtemp(prefix="acq_bench_"))
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    results: dict[str, dict] = {}
    head = None
    try:
        results["pocketml_local"] = rates(run_pocketml(url_list(work / "local.txt", port, "local", URLS), work,
                                                       {"workers": 4}, env, last_image))
        results["img2dataset"] = rates(run_img2dataset(url_list(work / "i2d.txt", port, "i2d", URLS), work,
                                                       last_image))
        head = RayHead()
        ray_exec = {"executor": "ray", "ray_address": head.address, "cpus_per_shard": 0.5}
        results["pocketml_ray"] = rates(run_pocketml(url_list(work / "ray.txt", port, "ray", URLS), work, ray_exec,
                                                     head.env, last_image, [head.proc.pid]))
        results["pocketml_ray"]["cluster_startup_s"] = head.startup_s
    finally:
        if head is not None:
            head.stop()
        server.terminate()
        shutil.rmtree(work, ignore_errors=True)
    for name, r in results.items():
        print(f"{name:15s} {r['images']:5d} images  {r['wall_s']:6.1f} s wall  {r['cpu_s']:6.1f} s CPU  "
              f"{r['images_per_s']:6.1f} img/s  {r['images_per_cpu_s']:6.1f} img/CPU-s  busy {r['busy_s']:5.1f} s  "
              f"tail {r['tail_s']:5.1f} s  {r['by_status']}", flush=True)
    local, i2d, ray_row = results["pocketml_local"], results["img2dataset"], results["pocketml_ray"]
    cpu_ratio = local["images_per_cpu_s"] / i2d["images_per_cpu_s"]
    ray_ratio = ray_row["images_per_cpu_s"] / local["images_per_cpu_s"]
    print(f"pocketml/img2dataset: {local['images_per_s'] / i2d['images_per_s']:.2f}x images/s, {cpu_ratio:.2f}x "
          f"images per CPU-second (goal >= 1.2x); Ray/local: {ray_ratio:.2f}x images per CPU-second (goal >= 0.8); "
          f"tail: local {local['tail_s']:.1f} s, Ray {ray_row['tail_s']:.1f} s, img2dataset {i2d['tail_s']:.1f} s "
          f"(goal <= one total_timeout = {TIMEOUT:.0f} s, + {END_SLACK:.0f} s to write the pool and leave Ray)")
    print_result({"bench": "acquisition", "urls": URLS, "hosts": HOSTS, "in_flight": IN_FLIGHT, "timeout_s": TIMEOUT,
                  **results, "ratio_images_per_s": round(local["images_per_s"] / i2d["images_per_s"], 3),
                  "ratio_images_per_cpu_s": round(cpu_ratio, 3), "ray_vs_local_images_per_cpu_s": round(ray_ratio, 3),
                  "goal_cpu_ratio_met": cpu_ratio >= 1.2, "goal_ray_overhead_met": ray_ratio >= 0.8,
                  "goal_tail_met": max(local["tail_s"], ray_row["tail_s"]) <= TIMEOUT + END_SLACK,
                  "load_average_at_start": load, "machine": machine_info()})


if __name__ == "__main__":
    main()
