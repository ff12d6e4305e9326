"""What `pocketml bench` leaves behind: a console table, results.json, results.csv and a
self-contained report.html (plots embedded as base64 PNG, so it opens anywhere, offline).
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
from pathlib import Path

from pocketml.artifact import FAILED, PASSED, TOO_FEW
from pocketml.console import console, fmt, print_table
from pocketml.fsutil import atomic_write_bytes, atomic_write_json, atomic_write_text

FAILED_VALIDATION = "failed validation"  # a row's status: exported, but its verdict is outside tolerance
NOT_VALIDATED = "not validated"  # a row's status: exported, no verdict (no evaluation images, or no runtime here)
# A row with no file to measure (the export crashed, or the file is gone) has status FAILED.


def row_status(verdict: str) -> str:
    """A bench row's (or device record's) status for a Parity verdict: the one mapping bench shows."""
    return {PASSED: PASSED, TOO_FEW: TOO_FEW, FAILED: FAILED_VALIDATION}.get(verdict, NOT_VALIDATED)


FIXED_COLUMNS = (
    "name", "format", "precision", "path", "status", "reason", "bytes", "zip_bytes", "params", "macs", "images",
    "accuracy", "accuracy_drop_points", "top1_agreement", "max_abs_diff", "mean_abs_diff",
)  # fmt: skip
LATENCY_FIELDS = ("p50_ms", "p90_ms", "p99_ms", "mean_ms", "std_ms", "runs", "overhead_pct", "overhead_direct_pct")


def latency_keys(rows: list[dict]) -> list[str]:
    """Every latency setting measured, thread counts first in numeric order."""
    keys = {k for row in rows for k in row["latency"]}
    return sorted(keys, key=lambda k: (not k.isdigit(), int(k) if k.isdigit() else 0, k))


DEVICE_FIELDS = ("status", "reason", "basis", "images", "accuracy", "top1_agreement", "max_abs_diff")


def device_labels(results: dict) -> list[str]:
    """The devices that ran beside the host (bench --device), in the order given."""
    return list(results.get("devices") or [])


def device_flat(label: str, record: dict) -> dict:
    """One device record as flat CSV columns "LABEL:field" (cost figures and phone estimates included)."""
    flat = {f"{label}:{f}": record.get(f) for f in DEVICE_FIELDS}
    vs_host = record.get("vs_host") or {}
    flat[f"{label}:vs_host_max_abs_diff"] = vs_host.get("max_abs_diff")
    flat[f"{label}:bit_identical_to_host"] = vs_host.get("bit_identical")
    flat.update({f"{label}:{k}": v for k, v in (record.get("cost") or {}).items()})
    flat.update({f"{label}:estimate_ms[{e['device']}]": e["estimate_ms"] for e in record.get("estimates") or []})
    return flat


def device_cost_text(record: dict | None) -> str | None:
    """A device's cost per inference for the table: M instructions (emulated cores) or ms (real devices)."""
    cost = (record or {}).get("cost") or {}
    if "instructions" in cost:
        return f"{cost['instructions'] / 1e6:.2f} M ({cost['dot'] / 1e6:.2f} M dot)"
    return f"{cost['p50_ms']:.2f} ms" if cost.get("p50_ms") is not None else None


def device_verdict_text(record: dict | None) -> str | None:
    if record is None:
        return None
    stands = (record.get("basis") or "").startswith("host verdict stands")
    return f"{record['status']} (host's)" if stands else record["status"]


def primary_latency(row: dict) -> float | None:
    """The row's headline latency: the best p50 over the thread settings measured."""
    values = [f["p50_ms"] for f in row["latency"].values() if f.get("p50_ms") is not None]
    return min(values) if values else None


# -- files ------------------------------------------------------------------------------
def csv_rows(results: dict) -> tuple[list[str], list[dict]]:
    rows = results["rows"]
    keys = latency_keys(rows)
    columns = list(FIXED_COLUMNS)
    columns += [f"{f}@{k}" for k in keys for f in LATENCY_FIELDS]
    columns += [f"gmacs@{k}" for k in keys] + [f"peak_share@{k}" for k in keys]
    columns += ["latency_note", "peak_rss_mb", "peak_delta_mb", "recommended", "notes"]
    device_rows = [device_flat(label, row["devices"][label]) for row in rows for label in row.get("devices", {})]
    columns += list(dict.fromkeys(k for flat in device_rows for k in flat))
    out = []
    for row in rows:
        flat = {c: row[c] for c in FIXED_COLUMNS}
        for label, record in row.get("devices", {}).items():
            flat.update(device_flat(label, record))
        for k, figures in row["latency"].items():
            flat.update({f"{f}@{k}": figures.get(f) for f in LATENCY_FIELDS})
        for k, figures in row["throughput"].items():
            flat.update({f"gmacs@{k}": figures["gmacs"], f"peak_share@{k}": figures["peak_share"]})
        memory = row["memory"] or {}
        flat["latency_note"] = row["latency_note"]
        flat.update(peak_rss_mb=memory.get("peak_rss_mb"), peak_delta_mb=memory.get("peak_delta_mb"))
        flat.update(recommended=";".join(row["recommended"]), notes=" | ".join(row["notes"]))
        out.append(flat)
    return columns, out


def csv_text(results: dict) -> str:
    columns, rows = csv_rows(results)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


RESULTS_FILE, RESULTS_CSV, REPORT_HTML = "results.json", "results.csv", "report.html"  # what bench writes


def write_all(results: dict, out_dir: Path) -> dict[str, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    return {
        "json": atomic_write_json(out_dir / RESULTS_FILE, results),
        "csv": atomic_write_text(out_dir / RESULTS_CSV, csv_text(results)),
        "html": atomic_write_bytes(out_dir / REPORT_HTML, html_report(results).encode("utf-8")),
    }


# -- console ------------------------------------------------------------------------------
def _mb(value: int | None) -> float | None:
    return value / 1e6 if value is not None else None


def _pct(value: float | None) -> float | None:
    return value * 100 if value is not None else None


def best_throughput(row: dict) -> dict:
    """GMAC/s and share of peak at the row's fastest thread setting."""
    timed = [k for k in row["throughput"] if row["throughput"][k]["gmacs"] is not None]
    if not timed:
        return {"gmacs": None, "peak_share": None}
    return row["throughput"][max(timed, key=lambda k: row["throughput"][k]["gmacs"])]


def summary_rows(results: dict, reasons: bool = False) -> tuple[list[str], list[list[object]]]:
    """The table: one line per row; `reasons` puts each status's reason in its cell (HTML has room)."""
    rows = results["rows"]
    keys = latency_keys(rows)
    columns = ["artifact", "status", "MB", "zip MB", "acc %", "Δ pts", "agree %", "max|Δp|"]
    columns += [f"p50 ms @{k}" for k in keys] + ["GMAC/s", "% peak", "peak MB"]
    devices = device_labels(results)
    for label in devices:
        columns += [f"{label} verdict", f"{label} cost/inference", f"{label} est. ms"]
    columns += ["recommended"]
    if devices:  # timings measured here are the host's, beside a device's
        columns = [f"host {c}" if c.startswith("p50 ms") else c for c in columns]
    table = []
    for row in rows:
        throughput = best_throughput(row)
        status = f"{row['status']}: {row['reason']}" if reasons and row["reason"] else row["status"]
        table.append(
            [row["name"], status, _mb(row["bytes"]), _mb(row["zip_bytes"]), _pct(row["accuracy"]),
             row["accuracy_drop_points"], _pct(row["top1_agreement"]), row["max_abs_diff"]]
            + [row["latency"].get(k, {}).get("p50_ms", "n/a" if row.get("latency_note") else None) for k in keys]
            + [throughput["gmacs"], _pct(throughput["peak_share"]), (row["memory"] or {}).get("peak_delta_mb")]
            + [cell for label in devices for cell in device_cells(row.get("devices", {}).get(label))]
            + [",".join(row["recommended"])]
        )  # fmt: skip
    return columns, table


def device_cells(record: dict | None) -> list[object]:
    estimates = (record or {}).get("estimates") or []
    return [device_verdict_text(record), device_cost_text(record), estimates[0]["estimate_ms"] if estimates else None]


# The console keeps the columns a reader decides on; report.html and results.csv hold every figure.
CONSOLE_COLUMNS = ("artifact", "status", "MB", "acc %", "agree %", "max|Δp|", "p50 ms", "peak MB", "recommended")


def console_rows(results: dict) -> tuple[list[str], list[list[object]]]:
    """summary_rows narrowed to CONSOLE_COLUMNS (every p50 column kept), so the table fits a terminal."""
    columns, table = summary_rows(results)
    keep = [i for i, c in enumerate(columns)
            if c in CONSOLE_COLUMNS or c.startswith(("p50 ms", "host p50 ms")) or c.startswith(tuple(device_labels(results)))]
    return [columns[i] for i in keep], [[row[i] for i in keep] for row in table]


UNMEASURED = ("peak memory not measured", "latency at")  # row notes saying a column has no figure


def print_summary(results: dict) -> None:
    columns, table = console_rows(results)
    data = results["data"]
    print_table(f"pocketml bench: {data['images']} images ({data['split']} split of {data['source']})", columns, table)
    for row in results["rows"]:
        if row["reason"]:
            console.print(f"{row['name']}: {row['status']}: {row['reason']}")
        if row.get("latency_note"):
            console.print(f"{row['name']}: latency {row['latency_note']}")
        for note in row.get("notes") or ():
            if note.startswith(UNMEASURED):  # a "-" in the table says nothing of why
                console.print(f"{row['name']}: {note}", style="yellow", markup=False)
    for row in results["rows"]:
        for label, record in row.get("devices", {}).items():
            line = record.get("reason") if record["status"] != "passed" else record.get("basis")
            console.print(f"{row['name']} on {label}: {record['status']}" + (f": {line}" if line else ""))
            for estimate in record.get("estimates") or []:
                console.print(f"  estimate {estimate['estimate_ms']:.2f} ms on {estimate['device']}, "
                              f"{estimate['runtime']} {estimate['threads']} threads ({estimate['error']})")
    for platform, choice in results["recommendations"].items():
        console.print(f"{platform}: {choice['artifact'] or 'no recommendation'} — {choice['reason']}")
    overhead, budget = results.get("harness_overhead_pct_max"), results["config"].get("max_overhead_pct", 5.0)
    if overhead is not None:
        verdict = "within" if overhead <= budget else "OVER"
        console.print(f"harness overhead vs a bare runtime loop: at most {overhead:.2f}% ({verdict} the {budget:g}% budget)")
    for note in results["notes"]:
        console.print(f"note: {note}")


# -- plots ----------------------------------------------------------------------------------
def pareto_front(points: list[tuple[float, float, str]]) -> list[tuple[float, float, str]]:
    """Points (latency, accuracy, name) no other point beats on both: faster and at least as accurate."""
    front, best = [], float("-inf")
    for point in sorted(points, key=lambda p: (p[0], -p[1])):
        if point[1] > best:
            front.append(point)
            best = point[1]
    return front


def _png(fig) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def latency_accuracy_png(rows: list[dict]) -> str | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    measured = [r for r in rows if r["accuracy"] is not None and primary_latency(r) is not None]
    if not measured:
        return None
    points = [(primary_latency(r), r["accuracy"] * 100, r["name"]) for r in measured]
    # A file that failed validation is shown but never on the front: it is not a trade-off on offer.
    valid = [p for p, r in zip(points, measured, strict=True) if r["status"] == PASSED]
    invalid = [p for p, r in zip(points, measured, strict=True) if r["status"] != PASSED]
    front = pareto_front(valid)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.scatter([p[0] for p in valid], [p[1] for p in valid], color="#9aa5b1", label="passed")
    if invalid:
        ax.scatter([p[0] for p in invalid], [p[1] for p in invalid], marker="x", color="#7f3fbf", label="failed validation")
    if front:
        ax.plot([p[0] for p in front], [p[1] for p in front], "o-", color="#d64545", label="Pareto front")
    ax.set(xlabel="p50 latency, batch 1 (ms, best thread setting)", ylabel="accuracy (%)", xscale="log")
    ax.set_title("Latency vs accuracy")
    ax.legend()
    annotate_apart(ax, points)
    encoded = _png(fig)
    plt.close(fig)
    return encoded


LABEL_OFFSETS = [(4, 4 + 11 * k * sign) for k in range(12) for sign in ((1, -1) if k else (1,))]  # points


def annotate_apart(ax, points: list[tuple[float, float, str]]) -> list:
    """Label each point where its text overlaps no label already placed (files of one format often sit
    within a pixel of each other); returns the labels' boxes in display coordinates."""
    renderer = ax.figure.canvas.get_renderer()
    placed: list = []
    for x, y, name in sorted(points, key=lambda p: (p[0], -p[1])):
        label = ax.annotate(name, (x, y), textcoords="offset points", xytext=LABEL_OFFSETS[0], fontsize=8)
        for offset in LABEL_OFFSETS:
            label.set_position(offset)
            box = label.get_window_extent(renderer)
            if not any(box.overlaps(other) for other in placed):
                break
        placed.append(box)
    return placed


def size_png(rows: list[dict]) -> str | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sized = [r for r in rows if r["bytes"]]
    if not sized:
        return None
    fig, ax = plt.subplots(figsize=(7, 0.4 * len(sized) + 1.2))
    names = [r["name"] for r in sized]
    ax.barh(names, [r["bytes"] / 1e6 for r in sized], color="#4c72b0", label="file")
    ax.barh(names, [r["zip_bytes"] / 1e6 for r in sized], color="#dd8452", height=0.4, label="zip (download)")
    ax.invert_yaxis()
    ax.set(xlabel="MB", title="Size per artifact")
    ax.legend()
    encoded = _png(fig)
    plt.close(fig)
    return encoded


# -- HTML -------------------------------------------------------------------------------------
def _table_html(columns: list[str], rows: list[list[object]]) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(fmt(v))}</td>" for v in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _estimates_html(rows: list[dict]) -> str:
    lines = [
        [r["name"], e["device"], f"{e['runtime']}, {e['threads']} threads", e["estimate_ms"], e["error"], e["basis"],
         e["source"]]
        for r in rows
        for e in r["estimates"]
    ]
    if not lines:
        return "<p>No phone estimates: they come from instruction counts on an emulated core (--device arm64).</p>"
    columns = ["artifact", "phone class", "runtime", "estimated ms", "error (leave-one-out)", "basis", "source"]
    return _table_html(columns, lines)


def _devices_html(rows: list[dict]) -> str:
    lines = [
        [r["name"], label, d["status"], d.get("reason") or d.get("basis"), (d.get("vs_host") or {}).get("max_abs_diff"),
         (d.get("vs_host") or {}).get("bit_identical"), device_cost_text(d)]
        for r in rows
        for label, d in r.get("devices", {}).items()
    ]
    if not lines:
        return "<p>No device ran (bench --device arm64 runs every TFLite and ONNX file on an emulated phone core).</p>"
    columns = ["artifact", "device", "verdict", "basis / reason", "max|Δp| vs host", "bit-identical", "cost per inference"]
    return _table_html(columns, lines)


STYLE = """body{font-family:system-ui,sans-serif;margin:2em;max-width:1400px}
table{border-collapse:collapse;font-size:13px;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 6px;text-align:left}
th{background:#f3f3f3}pre{background:#f7f7f7;padding:1em;overflow:auto}"""


def html_report(results: dict) -> str:
    rows = results["rows"]
    columns, table = summary_rows(results, reasons=True)
    plots = [("Latency vs accuracy (Pareto front in red)", latency_accuracy_png(rows)), ("Size", size_png(rows))]
    images = "".join(
        f"<h3>{html.escape(title)}</h3><img alt='{html.escape(title)}' src='data:image/png;base64,{data}'>"
        for title, data in plots
        if data
    )
    recs = "".join(
        f"<li><b>{html.escape(p)}</b>: {html.escape(c['artifact'] or 'no recommendation')} — {html.escape(c['reason'])}</li>"
        for p, c in results["recommendations"].items()
    )
    notes = "".join(
        f"<li>{html.escape(r['name'])}: {html.escape(n)}</li>"
        for r in rows
        for n in [*r["notes"], *([f"latency {r['latency_note']}"] if r["latency_note"] else [])]
    )
    runtimes = "".join(
        f"<li>{html.escape(r['name'])}: {html.escape(r['runtime'])}</li>" for r in rows if r["status"] != FAILED
    )
    context = {k: results[k] for k in ("machine", "libraries", "config", "peak_gflops", "data")}
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>pocketml bench</title>"
        f"<style>{STYLE}</style></head><body><h1>pocketml bench — {html.escape(results['export_dir'])}</h1>"
        f"<h2>Results</h2>{_table_html(columns, table)}"
        f"<p>Harness overhead vs a bare runtime loop: at most {fmt(results['harness_overhead_pct_max'])} % "
        f"(budget {fmt(results['config']['max_overhead_pct'])} %): the harness's own cost per call (clock reads, "
        "bookkeeping) over the bare call's time. GMAC/s share compares with a float32 matmul probe: int8 kernels "
        "can exceed it, and a probe that met a busy machine reads low.</p>"
        f"<h2>Runtimes</h2><ul>{runtimes}</ul><h2>Recommended</h2><ul>{recs}</ul>"
        f"<h2>Plots</h2>{images}"
        f"<h2>Devices</h2>{_devices_html(rows)}"
        "<h2>Phone estimates</h2><p>Estimates, not measurements: instructions per inference counted on the emulated "
        "core, turned into milliseconds by a fit on published latencies of the same runtime on that phone; the "
        f"fit's leave-one-out error is stated on every line.</p>{_estimates_html(rows)}"
        f"<h2>Notes</h2><ul>{notes or '<li>none</li>'}</ul>"
        f"<h2>Machine, libraries, settings</h2><pre>{html.escape(json.dumps(context, indent=2, default=str))}</pre>"
        "</body></html>"
    )
