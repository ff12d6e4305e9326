"""The web bundle and `pocketml serve`: what a web developer copies (the browser-judged file, its
runtime, classify.js, index.html) works offline from a plain static server; `pocketml serve` makes
the page cross-origin isolated; /try/ shows every platform's file beside Keras on a dropped photo."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from PIL import Image

from pocketml.artifact import Recommendation, save_recommendations
from pocketml.errors import PocketMLError
from tests.export.web_helpers import require_web_device, web_benched_export

SCREENSHOTS = os.environ.get("POCKETML_SCREENSHOTS")  # keep the PNGs here to look at them


def test_serve_sends_the_isolation_headers_and_wasm_types(tmp_path):
    from pocketml.export.serve import serving

    (tmp_path / "m.wasm").write_bytes(b"\0asm\1\0\0\0")
    (tmp_path / "c.js").write_text("export const x = 1;")
    with serving(tmp_path) as url:
        for name, mime in (("m.wasm", "application/wasm"), ("c.js", "text/javascript")):
            with urllib.request.urlopen(url + name) as reply:
                assert reply.headers["Content-Type"] == mime
                assert reply.headers["Cross-Origin-Opener-Policy"] == "same-origin"
                assert reply.headers["Cross-Origin-Embedder-Policy"] == "require-corp"


def test_serve_rejects_a_missing_folder_and_a_taken_port(tmp_path):
    from pocketml.export.serve import server, serving

    with pytest.raises(PocketMLError, match="is not a directory"):
        server(tmp_path / "nope")
    with serving(tmp_path) as url, pytest.raises(PocketMLError, match="pass another --port"):
        server(tmp_path, port=int(url.rsplit(":", 1)[1].strip("/")))


def test_serve_offers_try_it_for_a_run_or_bundles_directory_and_plain_files_otherwise(tmp_path):
    from pocketml.export.serve import IsolatedHandler, TryHandler, what_to_serve

    from pocketml.app import cli

    run = tmp_path / "run"
    (run / "bundles" / "onnx").mkdir(parents=True)
    (run / "bundles" / "onnx" / "bundle.json").write_text(json.dumps({"files": [{"file": "model-fp32.onnx"}]}))
    (run / "model").mkdir()
    root, handler = what_to_serve(run, None)
    assert root == run / "bundles" and issubclass(handler, TryHandler)
    assert handler.try_it.keras == run / "model"
    assert [c["name"] for c in handler.try_it.columns()] == ["keras", "onnx"]
    assert what_to_serve(run / "bundles" / "onnx", None) == (run / "bundles" / "onnx", IsolatedHandler)
    with pytest.raises(PocketMLError, match="does not exist"):
        what_to_serve(run / "bundles", tmp_path / "missing.keras")
    assert cli.main(["serve", str(tmp_path / "nowhere")]) == 2


def test_a_web_recommendation_without_the_runtimes_set_up_fails_before_replacing_bundles(
        real_model_dir, photos_dir, tmp_path_factory, tmp_path, monkeypatch):
    from pocketml.export.package import package

    from tests.export.export_helpers import real_tflite_export

    export_dir = real_tflite_export(real_model_dir, photos_dir, tmp_path_factory.getbasetemp())
    monkeypatch.setenv("POCKETML_CACHE", str(tmp_path / "empty-cache"))
    bench = tmp_path / "bench"
    bench.mkdir()
    save_recommendations(bench, [Recommendation("web", "tflite-fp32", "fastest in Chromium")])
    (tmp_path / "bundles").mkdir()
    (tmp_path / "bundles" / "kept.txt").write_text("previous bundles")
    with pytest.raises(PocketMLError, match="pocketml device setup web"):
        package(export_dir, tmp_path / "bundles", bench)
    assert (tmp_path / "bundles" / "kept.txt").read_text() == "previous bundles"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def photo_of(photos_dir: Path, label: str) -> Path:
    return sorted((photos_dir / "test" / label).glob("*.jpg"))[0]


def keep(png: Path) -> None:
    if SCREENSHOTS:
        Path(SCREENSHOTS).mkdir(parents=True, exist_ok=True)
        shutil.copy(png, Path(SCREENSHOTS) / png.name)


@pytest.mark.slow
def test_the_web_bundle_works_offline_from_python_http_server(real_model_dir, photos_dir, tmp_path_factory, tmp_path):
    require_web_device()
    from pocketml.benchmarks.devices.chromium import Chromium
    from pocketml.export.predict import load

    _, bench_dir, bundles = web_benched_export(real_model_dir, photos_dir, tmp_path_factory.getbasetemp())
    web = bundles / "web"
    config = json.loads((web / "bundle.json").read_text())
    recommended = json.loads((bench_dir / "recommendations.json").read_text())
    assert config["recommended"] == next(r["artifact"] for r in recommended if r["platform"] == "web")
    file = config["web"]["file"]
    assert sorted(p.name for p in web.iterdir()) == sorted(["README.md", "bundle.json", "classify.js", "index.html",
                                                            "labels.txt", file, "runtime"])
    assert 'import { classify } from "./classify.js";' in (web / "README.md").read_text()
    port = free_port()
    # The plain static server a user has: no COOP/COEP, so one WASM thread; nothing off this machine.
    server = subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"], cwd=web,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(1.0)
        photo = photo_of(photos_dir, "coffee")
        with Chromium() as browser:
            browser.goto(f"http://127.0.0.1:{port}/index.html")
            browser.wait_for("window.pocketml.ready || window.pocketml.error", timeout=120)
            assert browser.evaluate("window.pocketml.error") is None
            info = browser.evaluate("window.pocketml.info")
            assert info["file"] == file and info["threads"] == 1
            assert browser.evaluate("crossOriginIsolated") is False
            browser.set_files("#file", [photo])
            browser.wait_for("window.pocketml.results", timeout=120)
            results = browser.evaluate("window.pocketml.results")
            png = browser.screenshot(tmp_path / "web_bundle_index.png")
    finally:
        server.terminate()
        server.wait()
    host = load(web / file, labels=web / "labels.txt").classify(photo, top=2)
    assert [r["label"] for r in results] == [label for label, _ in host]
    for answer, (_, p) in zip(results, host, strict=True):
        assert abs(answer["score"] - p) <= 1e-4
    assert Image.open(png).size[0] >= 600
    keep(png)


@pytest.mark.slow
def test_pocketml_serve_makes_the_bundle_cross_origin_isolated(real_model_dir, photos_dir, tmp_path_factory):
    require_web_device()
    from pocketml.benchmarks.devices.chromium import Chromium
    from pocketml.export.serve import serving

    _, _, bundles = web_benched_export(real_model_dir, photos_dir, tmp_path_factory.getbasetemp())
    with serving(bundles / "web") as url, Chromium() as browser:
        browser.goto(url + "index.html")
        browser.wait_for("window.pocketml.ready || window.pocketml.error", timeout=120)
        assert browser.evaluate("crossOriginIsolated") is True
        cores = browser.evaluate("navigator.hardwareConcurrency")
        assert browser.evaluate("window.pocketml.info.threads") == min(cores, 4)


@pytest.mark.slow
def test_try_it_shows_each_platform_file_beside_keras(real_model_dir, photos_dir, tmp_path_factory, tmp_path):
    require_web_device()
    from pocketml.benchmarks.devices.chromium import Chromium
    from pocketml.export.predict import load
    from pocketml.export.serve import serving, what_to_serve

    _, _, bundles = web_benched_export(real_model_dir, photos_dir, tmp_path_factory.getbasetemp())
    run_dir = tmp_path / "run"  # the layout of `pocketml run`: bundles/ and model/
    run_dir.mkdir()
    (run_dir / "bundles").symlink_to(bundles)
    (run_dir / "model").symlink_to(real_model_dir)
    root, handler = what_to_serve(run_dir, None)
    photo = photo_of(photos_dir, "cat")
    with serving(root, handler) as url, Chromium(window=(1100, 700)) as browser:
        browser.goto(url + "try/")
        browser.wait_for("window.tryReady", timeout=120)
        browser.set_files("#file", [photo])
        browser.wait_for("window.pocketml.done || window.pocketml.error", timeout=180)
        assert browser.evaluate("window.pocketml.error") is None
        answers = browser.evaluate("window.pocketml.answers")
        png = browser.screenshot(tmp_path / "try_it.png")
    assert set(answers) == {"keras", "android", "onnx", "web"}
    keras = load(real_model_dir).classify(photo, top=2)
    assert [r["label"] for r in answers["keras"]["top"]] == [label for label, _ in keras]
    for platform in ("android", "onnx", "web"):
        assert answers[platform]["top"][0]["label"] == keras[0][0], platform
        assert abs(answers[platform]["top"][0]["score"] - keras[0][1]) <= 1e-4, platform
    keep(png)
