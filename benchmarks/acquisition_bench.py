"""Acquisition throughput: pocketml vs img2dataset on the same URL list, same server, same run.

A local server (its own process) serves the real hot-dog JPEGs from ../shared/data/hotdog under
many URLs (each repeat cropped by a row more, so every URL has distinct pixels and both tools
store every image), with injected latency per request and injected failures (5% 404, 5% a 500 that
recovers on retry). Both tools download, decode, resize to at most 256 px and re-encode every
image, with 2 retries, 32 threads and one process per core. Figures: images/s wall-clock, and
images per CPU-second (user+sys of the tool's processes; "per core"), and their ratios.

Run: .venv/bin/python benchmarks/acquisition_bench.py   (img2dataset comes from .venv-bench, made
by `make bench-env`; it is run as a subprocess, never imported here).
"""

from __future__ import annotations

import json
import multiprocessing
import os
import resource
import shutil
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

from benchmarks.common import machine_info, print_result, shared_data  # noqa: E402

URLS = int(os.environ.get("ACQ_BENCH_URLS", "5000"))  # URLs per tool
LATENCY = 0.02  # seconds each request waits server-side (a far-away host)
THREADS = 32  # download threads, both tools
STARTUP_URLS = 20  # a run this short measures each tool's fixed start-up cost
IMG2DATASET = PROJECT_ROOT / ".venv-bench" / "bin" / "img2dataset"


def serve(images: list[bytes], port_out, latency: float) -> None:
    """Server process: /<run>/img/<i>.jpg -> image i, 404 for i%20==7, one 500 first for i%20==13."""
    failed_once: set[str] = set()
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args) -> None:
            return

        def do_GET(self) -> None:  # noqa: N802
            time.sleep(latency)
            index = int(self.path.rsplit("/", 1)[1].split(".")[0])
            if index % 20 == 7:
                return self.reply(404, b"gone", "text/plain")
            if index % 20 == 13:
                with lock:
                    first = self.path not in failed_once
                    failed_once.add(self.path)
                if first:
                    return self.reply(500, b"try again", "text/plain")
            return self.reply(200, images[index % len(images)], "image/jpeg")

        def reply(self, status: int, body: bytes, ctype: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    httpd.request_queue_size = 256
    port_out.put(httpd.server_address[1])
    httpd.serve_forever()


def distinct_jpegs(photos: list[Path], count: int) -> list[bytes]:
    """`count` JPEGs with distinct pixels (the real photos, each cropped by a different number of
    rows per repeat), so neither tool can skip work as a duplicate and both store every image."""
    import io

    from PIL import Image

    decoded = [Image.open(p).convert("RGB") for p in photos]
    out = []
    for i in range(count):
        image = decoded[i % len(decoded)]
        rows = i // len(decoded)
        buffer = io.BytesIO()
        image.crop((0, 0, image.width, image.height - rows)).save(buffer, "JPEG", quality=90)
        out.append(buffer.getvalue())
    return out


def child_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed(cmd: list[str], env: dict | None = None) -> tuple[float, float]:
    """(wall seconds, CPU seconds of the command and its children)."""
    cpu0, t0 = child_cpu(), time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, cwd=PROJECT_ROOT)
    return time.perf_counter() - t0, child_cpu() - cpu0


POCKETML_RUNNER = """
import json, sys
from pathlib import Path
from acquisition.acquire import acquire
from pocketml.config import from_mapping
from pocketml.configs.acquire import AcquireConfig
summary = acquire(from_mapping(AcquireConfig, json.loads(sys.argv[1]), "acquire"), Path(sys.argv[2]))
Path(sys.argv[3]).write_text(json.dumps(summary))
"""


def run_pocketml(url_file: Path, work: Path) -> dict:
    table = {"sources": [{"type": "urls", "path": str(url_file), "label": "x"}], "shard_size": 1000, "workers": 0,
             "download": {"threads": THREADS, "per_host": THREADS, "retries": 2, "backoff": 0.05},
             "verify": {"max_side": 256}}
    out = work / "pocketml"
    wall, cpu = timed([sys.executable, "-c", POCKETML_RUNNER, json.dumps(table), str(out), str(work / "pm.json")],
                      env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT)})
    summary = json.loads((work / "pm.json").read_text())
    stored = summary["by_status"].get("ok", 0) + summary["by_status"].get("duplicate_bytes", 0)
    return {"wall_s": wall, "cpu_s": cpu, "images": stored, "by_status": summary["by_status"]}


def run_img2dataset(url_file: Path, work: Path) -> dict:
    out = work / "img2dataset"
    cmd = [str(IMG2DATASET), "--url_list", str(url_file), "--output_folder", str(out), "--input_format", "txt",
           "--output_format", "files", "--processes_count", str(os.cpu_count() or 1), "--thread_count", str(THREADS),
           "--image_size", "256", "--resize_mode", "keep_ratio", "--resize_only_if_bigger", "True",
           "--number_sample_per_shard", "1000", "--retries", "2", "--timeout", "10", "--distributor", "multiprocessing",
           "--enable_wandb", "False"]
    env = {**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1"}
    wall, cpu = timed(cmd, env=env)
    stats = [json.loads(p.read_text()) for p in out.glob("*_stats.json")]
    return {"wall_s": wall, "cpu_s": cpu, "images": sum(s.get("successes", 0) for s in stats),
            "by_status": {"ok": sum(s.get("successes", 0) for s in stats), "failed": sum(s.get("failed_to_download", 0) for s in stats)}}


def rates(result: dict, startup: dict) -> dict:
    """Rates over the whole run, plus the wall time of a STARTUP_URLS-URL run: the tool's fixed
    start-up cost, which a short list pays in full (reported, not subtracted: on a shared machine
    the difference of two noisy timings is noise)."""
    return {**result, "images_per_s": result["images"] / result["wall_s"],
            "images_per_cpu_s": result["images"] / result["cpu_s"] if result["cpu_s"] else None,
            "startup_wall_s": startup["wall_s"], "startup_cpu_s": startup["cpu_s"]}


def main() -> None:
    hotdog = shared_data("hotdog")
    images = distinct_jpegs(sorted(hotdog.rglob("*.jpg")), URLS)
    ctx = multiprocessing.get_context("fork")
    ports = ctx.Queue()
    server = ctx.Process(target=serve, args=(images, ports, LATENCY), daemon=True)
    server.start()
    base = f"http://127.0.0.1:{ports.get(timeout=30)}"
    work = Path(tempfile.mkdtemp(prefix="acq_bench_"))
    try:
        results = {}
        for tool, runner in (("pocketml", run_pocketml), ("img2dataset", run_img2dataset)):
            if tool == "img2dataset" and not IMG2DATASET.exists():
                sys.exit(f"{IMG2DATASET} missing: run `make bench-env` first")
            small = work / f"{tool}-startup.txt"
            small.write_text("".join(f"{base}/{tool}-startup/img/{i}.jpg\n" for i in range(STARTUP_URLS)))
            startup = runner(small, work / "startup")
            url_file = work / f"{tool}.txt"
            url_file.write_text("".join(f"{base}/{tool}/img/{i}.jpg\n" for i in range(URLS)))
            results[tool] = rates(runner(url_file, work), startup)
            print(f"{tool:12s} {results[tool]['images']:5d} images  {results[tool]['wall_s']:6.2f} s wall  "
                  f"(start-up run: {startup['wall_s']:5.2f} s)  "
                  f"{results[tool]['cpu_s']:6.2f} s CPU  {results[tool]['images_per_s']:7.1f} img/s  "
                  f"{results[tool]['images_per_cpu_s']:7.1f} img/CPU-s  {results[tool]['by_status']}", flush=True)
    finally:
        server.terminate()
        shutil.rmtree(work, ignore_errors=True)
    pm, i2d = results["pocketml"], results["img2dataset"]
    wall_ratio = pm["images_per_s"] / i2d["images_per_s"]
    cpu_ratio = pm["images_per_cpu_s"] / i2d["images_per_cpu_s"]
    cores = os.cpu_count() or 1
    print(f"ratio pocketml/img2dataset: {wall_ratio:.2f}x images/s on {cores} cores "
          f"({pm['images_per_s'] / cores:.1f} vs {i2d['images_per_s'] / cores:.1f} img/s per core), "
          f"{cpu_ratio:.2f}x images per CPU-second; goal >= 2x")
    print_result({"bench": "acquisition", "urls": URLS, "latency_s": LATENCY, "threads": THREADS,
                  "pocketml": pm, "img2dataset": i2d, "ratio_images_per_s": round(wall_ratio, 3),
                  "ratio_per_core": round(wall_ratio, 3), "ratio_images_per_cpu_s": round(cpu_ratio, 3),
                  "goal_met": wall_ratio >= 2.0, "machine": machine_info()})


if __name__ == "__main__":
    main()
