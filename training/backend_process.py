"""Training on a Keras backend other than this process's: the same `train` in a child interpreter.

Keras picks its backend once per process, at its first import. `pocketml run` exports with
TensorFlow, so a `[train] backend = "jax"` cannot train in that process: `train` hands the job to
`python -m pocketml.training.backend_process REQUEST.json` with KERAS_BACKEND set, waits, and returns the
same model directory. The child's own output is relayed to this process's console; a PocketMLError in the
child comes back as the same one-line PocketMLError here, and a bug keeps its traceback (printed by
the child) and fails here with the exit code.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from pocketml.errors import PocketMLError

ERROR_EXIT = 2  # the child's exit code for a PocketMLError (the CLI's own code for user errors)


def child_env(backend: str) -> dict[str, str]:
    """This environment with the backend chosen: the child is this interpreter, so it imports this very pocketml."""
    return dict(os.environ, KERAS_BACKEND=backend)


def train_in_backend(backend: str, dataset_dir: str | Path, out_dir: str | Path, config) -> Path:
    """Run training.train.train(dataset_dir, out_dir, config) under `backend` in a child process."""
    config = dataclasses.replace(config, backend=backend)
    with tempfile.TemporaryDirectory(prefix="pocketml-train-") as tmp:
        request, error = Path(tmp) / "request.json", Path(tmp) / "error.txt"
        request.write_text(json.dumps({
            "dataset_dir": str(Path(dataset_dir).resolve()),
            "out_dir": str(Path(out_dir).resolve()),
            "config": dataclasses.asdict(config),
            "error_file": str(error),
        }))
        returncode = _run_relaying_stdout([sys.executable, "-m", "pocketml.training.backend_process", str(request)],
                                          child_env(backend))
        if returncode == ERROR_EXIT and error.is_file():
            raise PocketMLError(error.read_text(encoding="utf-8").strip())
        if returncode != 0:
            raise RuntimeError(f"training on the {backend} backend failed in its subprocess "
                               f"(exit code {returncode}); its traceback is above")
    return Path(out_dir)


def _run_relaying_stdout(command: list[str], env: dict[str, str]) -> int:
    """Run `command`; its stdout (pocketml's own tables and lines: the child keeps its library noise
    in the model directory's log) is copied to this process's console, which stays on the terminal
    while pocketml.console captures other output. Its stderr goes where this process's goes."""
    from pocketml.console import console

    with subprocess.Popen(command, env=env, stdout=subprocess.PIPE, text=True, encoding="utf-8",
                          errors="replace") as child:
        for line in child.stdout:
            console.file.write(line)
            console.file.flush()
    return child.returncode


def main(argv: list[str]) -> int:
    from pocketml.training.train import train

    from pocketml.config import from_mapping
    from pocketml.configs.train import TrainConfig

    request = json.loads(Path(argv[0]).read_text())
    try:
        config = from_mapping(TrainConfig, request["config"], "train")
        train(request["dataset_dir"], request["out_dir"], config)
    except PocketMLError as exc:
        Path(request["error_file"]).write_text(str(exc), encoding="utf-8")
        return ERROR_EXIT
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
