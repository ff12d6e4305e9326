"""Small things a new user met: bench's reason when a platform's format was never asked for, latency
plot labels that overlap, a duplicates sheet whose message loses its spaces, train flags without help."""

from __future__ import annotations

import argparse
import io

import numpy as np
from pocketml.benchmarks import recommend, report


def row(name: str, p50: float, accuracy: float) -> dict:
    fmt, precision = name.split("-", 1)
    return {"name": name, "format": fmt, "precision": precision, "status": "passed", "accuracy": accuracy,
            "accuracy_drop_points": 0.0, "top1_agreement": 1.0, "latency": {"1": {"p50_ms": p50, "threads": 1}},
            "bytes": 1000, "images": 100}


def test_a_platform_whose_format_was_not_asked_for_says_so():
    rows = [{"name": "keras", "accuracy": 0.9}, row("tflite-fp32", 1.0, 0.9), row("onnx-fp32", 1.0, 0.9)]
    ios = {c.platform: c for c in recommend.choose(rows, "latency")}["ios"]
    assert ios.artifact is None and ios.reason == "no ios format was asked for (coreml, coreai not exported)"


def test_latency_plot_labels_do_not_overlap():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # Five files of one format within a fraction of a millisecond and a point of each other.
    points = [(0.31 + 0.001 * i, 90.0 + 0.1 * i, f"tflite-int8-variant-{i}") for i in range(5)]
    points += [(0.62, 90.0, "tflite-fp32"), (0.63, 90.0, "tflite-fp16")]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.scatter([p[0] for p in points], [p[1] for p in points])
    ax.set_xscale("log")
    boxes = report.annotate_apart(ax, points)
    plt.close(fig)
    assert len(boxes) == len(points)
    assert not any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1:])


def test_the_empty_duplicates_sheet_keeps_its_spaces():
    from PIL import Image
    from pocketml.acquisition.report import contact_sheet

    ink = np.asarray(Image.open(io.BytesIO(contact_sheet([], 64))).convert("L")) < 128
    columns = ink.any(axis=0)
    gaps, run = [], 0
    for has_ink in columns[np.argmax(columns):]:  # blank runs between the first and last inked column
        if has_ink:
            gaps, run = gaps + [run] if run else gaps, 0
        else:
            run += 1
    letter_gap = float(np.median(gaps))
    assert sum(g >= 2 * letter_gap for g in gaps) == 3  # "no duplicate clusters found": three spaces


def test_train_flags_have_help():
    from pocketml.training.cli import register

    parser = argparse.ArgumentParser(prog="pocketml")
    register(parser.add_subparsers(dest="command"))
    train = parser._subparsers._group_actions[0].choices["train"]
    helps = {a.dest: a.help for a in train._actions}
    assert all(helps[name] for name in ("batch_size", "dropout", "seed"))
