"""The benchmark report: report.md (machine, every section's table, plots), report.json, PNGs.

Every figure comes from the section's own JSON, measured in that section's single process, so
each ratio in the report compares numbers taken in the same run on the same machine.
"""

from __future__ import annotations

import datetime
import importlib.metadata
import json
import platform
import sys
from pathlib import Path
from typing import Callable

from embedrank import kernels
from embedrank.bench.plots import PLOTTERS
from embedrank.utils.threads import available_cores

PEER_PACKAGES = ("onnxruntime", "numpy", "sentence-transformers", "torch", "faiss-cpu", "hnswlib", "usearch")
TITLES = {
    "kernels": "Kernels: exact float32 / int8 / binary search and pooling",
    "encoder": "Encoder: throughput and quality against sentence-transformers",
    "index": "Indexes: HNSW against hnswlib, faiss and usearch",
    "reranker": "Reranker: cross-encoder pairs/s against sentence-transformers",
    "end_to_end": "End to end: latency per query on SciFact",
    "compression": "Compression sweep on SciFact: quality, latency, memory",
}


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info() -> dict:
    versions = {}
    for package in ("embedrank",) + PEER_PACKAGES:
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = None
    caps = kernels.capabilities()
    return {"cpu": cpu_model(), "cores": available_cores(), "isa_active": caps["active"],
            "isa_detected": caps["detected"], "python": platform.python_version(), "versions": versions,
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _log_tail(path: Path, lines: int = 8) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace").strip().splitlines()
    except OSError:
        return "(no log)"
    return "\n".join(text[-lines:])


def _plot(plotter: Callable, data: dict, out_dir: Path, name: str) -> list[Path]:
    try:
        import matplotlib
    except ImportError:
        return []
    matplotlib.use("Agg")
    try:
        return plotter(data, out_dir, name)
    except Exception as error:  # a plot must never cost the report its tables
        print(f"[embedrank bench] plot for {name} failed: {error}", file=sys.stderr)
        return []


def build_report(out_dir: Path, runs: list[dict], quick: bool = False) -> Path:
    """Writes out_dir/report.md and out_dir/report.json from the sections' outputs."""
    out_dir = Path(out_dir)
    machine = machine_info()
    installed = ", ".join(f"{k} {v}" for k, v in machine["versions"].items() if v)
    lines = ["# embedrank benchmark report", "",
             f"{machine['date']} on {machine['cpu']} ({machine['cores']} cores); embedrank ISA path "
             f"`{machine['isa_active']}` (CPU flags: {', '.join(machine['isa_detected'])}).",
             f"Installed: {installed}.",
             "Every ratio compares numbers measured in the same process of the same run." +
             (" Quick mode: reduced sizes; do not quote these figures." if quick else ""), ""]
    merged: dict = {"machine": machine, "quick": quick, "sections": {}}
    for run in runs:
        name = run["name"]
        lines += [f"## {TITLES.get(name, name)}", ""]
        data = _read_json(run["json"]) if run["ok"] else None
        merged["sections"][name] = {"ok": run["ok"], "seconds": run["seconds"], "results": data}
        if data is None:
            why = (f"the section failed (exit {run['returncode']})" if not run["ok"] else
                   f"its figures file {run['json'].name} could not be read")
            lines += [f"Not measured: {why}. Last lines of its log "
                      f"({run['log'].name}):", "", "```", _log_tail(run["log"]), "```", ""]
            continue
        markdown = run["markdown"].read_text(encoding="utf-8") if run["markdown"].is_file() else ""
        lines += [markdown.strip() or "(no table)", "", f"_{run['seconds']:.0f} s; figures in {run['json'].name}_", ""]
        plotter = PLOTTERS.get(name)
        pngs = _plot(plotter, data, out_dir, name) if plotter else []
        merged["sections"][name]["plots"] = [png.name for png in pngs]
        for png in pngs:
            lines += [f"![{name}]({png.name})", ""]
    report = out_dir / "report.md"
    report.write_text("\n".join(lines), encoding="utf-8")
    (out_dir / "report.json").write_text(json.dumps(merged, indent=1, default=str), encoding="utf-8")
    return report
