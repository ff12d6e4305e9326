"""Python 3.13 proof: pocketml's wheel, installed with its dependencies from PyPI into a Debian 13
(trixie) root whose python3.13 runs natively in a chroot, exports a small Keras model to TFLite, ONNX
and Core ML (fp32) and predicts with each file.

Needs root, `debootstrap` (apt-get install debootstrap) and network to Debian and PyPI; the Debian
root (about 300 MB) and the venv (about 2 GB) are kept under --root, so a rerun only reinstalls the
wheel. The host's CA bundle is copied into the root, so a TLS-intercepting proxy works as on the host.

    sudo python benchmarks/py313_check.py [--root /var/tmp/pocketml-trixie]

Ends with one line `RESULT {json}`: the Python version, the versions of the runtimes, each format's
verdict and the label `pocketml predict` gave, and the seconds each step took.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SUITE = "trixie"  # Debian 13: python3.13 is its python3
PACKAGES = "python3.13,python3.13-venv,ca-certificates,libgl1,libglib2.0-0t64"  # libGL: mediapipe's import
CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")

# Runs inside the chroot with the venv's python: a small model, a split photo folder, export, predict.
SMOKE = r'''
import json, subprocess, sys, time
from pathlib import Path
import numpy as np
from PIL import Image
import keras

work = Path(sys.argv[1])
rng = np.random.default_rng(0)
for split, count in (("train", 24), ("test", 12)):
    for label, channel in (("red", 0), ("blue", 2)):
        folder = work / "images" / split / label
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(count):
            pixels = rng.integers(0, 90, (48, 48, 3), dtype=np.uint8)
            pixels[..., channel] = rng.integers(160, 255, (48, 48), dtype=np.uint8)
            Image.fromarray(pixels).save(folder / f"{i}.png")
inputs = keras.Input((32, 32, 3))
x = keras.layers.Rescaling(1 / 255)(inputs)
x = keras.layers.Conv2D(4, 3, activation="relu")(x)
x = keras.layers.GlobalAveragePooling2D()(x)
model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(x))
model.save(work / "model.keras")
(work / "labels.txt").write_text("blue\nred\n")
pocketml = str(Path(sys.executable).parent / "pocketml")
steps = {}
start = time.perf_counter()
subprocess.run([pocketml, "export", str(work / "model.keras"), "--out", str(work / "exp"), "--labels",
                str(work / "labels.txt"), "--formats", "tflite,onnx,coreml", "--precisions", "fp32",
                "--calibration", str(work / "images"), "--strict"], check=True)
steps["export_s"] = round(time.perf_counter() - start, 1)
manifest = json.loads((work / "exp" / "manifest.json").read_text())
verdicts = {a["format"]: a["parity"]["status"] for a in manifest["artifacts"]}
predictions = {}
for artifact in manifest["artifacts"]:
    start = time.perf_counter()
    out = subprocess.run([pocketml, "predict", str(work / "exp" / artifact["path"]),
                          str(work / "images" / "test" / "red" / "0.png"), "--json"],
                         check=True, capture_output=True, text=True).stdout
    predictions[artifact["format"]] = json.loads(out)[0]["top"][0]
    steps[f"predict_{artifact['format']}_s"] = round(time.perf_counter() - start, 1)
print("SMOKE " + json.dumps({"verdicts": verdicts, "predictions": predictions, "steps": steps}))
'''


def run(command: list[str], **kwargs) -> subprocess.CompletedProcess:
    print("+ " + " ".join(command), flush=True)
    return subprocess.run(command, check=True, **kwargs)


def debian_root(root: Path) -> None:
    """A minimal Debian 13 root with python3.13 (made once, then reused)."""
    if (root / "usr" / "bin" / "python3.13").exists():
        return
    if shutil.which("debootstrap") is None:
        sys.exit("debootstrap is not installed: apt-get install debootstrap")
    run(["debootstrap", "--variant=minbase", f"--include={PACKAGES}", SUITE, str(root), "http://deb.debian.org/debian"])


def mount(root: Path) -> list[Path]:
    """/dev and /proc inside the root (pip and Python need them), the host's CA bundle and DNS; returns
    the mounts made here, for `unmount`."""
    made = []
    for target, args in ((root / "dev", ["--bind", "/dev"]), (root / "proc", ["-t", "proc", "proc"])):
        if not os.path.ismount(target):
            run(["mount", *args, str(target)])
            made.append(target)
    shutil.copy(CA_BUNDLE, root / "etc/ssl/certs/ca-certificates.crt")
    shutil.copy("/etc/resolv.conf", root / "etc/resolv.conf")
    return made


def unmount(targets: list[Path]) -> None:
    for target in reversed(targets):
        run(["umount", str(target)])


def wheel(out: Path) -> Path:
    run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(out),
         str(PROJECT_ROOT)])
    return next(out.glob("pocketml-*.whl"))


def chroot(root: Path, *command: str, capture: bool = False) -> subprocess.CompletedProcess:
    env = ["/usr/bin/env", "-i", "PATH=/usr/bin:/bin", "HOME=/root", "PIP_DISABLE_PIP_VERSION_CHECK=1",
           "PIP_DEFAULT_TIMEOUT=180", "PIP_CERT=/etc/ssl/certs/ca-certificates.crt", "TF_CPP_MIN_LOG_LEVEL=2"]
    return run(["chroot", str(root), *env, *command], capture_output=capture, text=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path("/var/tmp/pocketml-trixie"),
                        help="where the Debian 13 root is made and kept")
    parser.add_argument("--venv", default="/opt/pocketml-venv", help="the venv's path inside the root (kept)")
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("run as root: debootstrap, mount and chroot need it")
    steps, started = {}, time.perf_counter()
    debian_root(args.root)
    steps["debian_root_s"] = round(time.perf_counter() - started, 1)
    mounts = mount(args.root)
    try:
        found, versions = smoke(args.root, args.venv, steps)
    finally:
        unmount(mounts)
    names = ("python", "tensorflow-cpu", "keras", "ai-edge-litert", "onnxruntime", "coremltools", "tf2onnx")
    ok = set(found["verdicts"]) == {"tflite", "onnx", "coreml"} and set(found["verdicts"].values()) == {"passed"}
    print("RESULT " + json.dumps({"benchmark": "py313_check", "ok": ok, **dict(zip(names, versions, strict=True)),
                                  **found, "steps": {**steps, **found["steps"]}}))
    if not ok:
        sys.exit(1)


def smoke(root: Path, venv: str, steps: dict) -> tuple[dict, list[str]]:
    """Install the wheel into the root's venv and run SMOKE there: (its findings, the library versions)."""
    with tempfile.TemporaryDirectory() as tmp:
        built = wheel(Path(tmp))
        shutil.copy(built, root / "opt" / built.name)
    started = time.perf_counter()
    if not (root / venv.lstrip("/") / "pyvenv.cfg").exists():  # bin/python links into the root
        chroot(root, "/usr/bin/python3.13", "-m", "venv", venv)
    chroot(root, f"{venv}/bin/pip", "install", "-q", "--force-reinstall", "--no-deps", f"/opt/{built.name}")
    chroot(root, f"{venv}/bin/pip", "install", "-q", f"/opt/{built.name}")
    steps["install_s"] = round(time.perf_counter() - started, 1)
    versions = chroot(root, f"{venv}/bin/python", "-c",
                      "import sys, importlib.metadata as m; print(sys.version.split()[0], *(m.version(p) for p in "
                      "('tensorflow-cpu', 'keras', 'ai-edge-litert', 'onnxruntime', 'coremltools', 'tf2onnx')))",
                      capture=True).stdout.split()
    work = root / "opt" / "smoke"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    (work / "smoke.py").write_text(SMOKE)
    done = chroot(root, f"{venv}/bin/python", "/opt/smoke/smoke.py", "/opt/smoke", capture=True)
    print(done.stdout[-4000:], done.stderr[-4000:], sep="\n")
    found = json.loads(next(line for line in done.stdout.splitlines() if line.startswith("SMOKE "))[6:])
    return found, versions


if __name__ == "__main__":
    main()
