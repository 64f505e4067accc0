"""`embedrank bench`: run the benchmark sections, each in its own process, then build the report.

A section is a module ``embedrank.bench.<module>`` with ``--output X.json --markdown X.md
[--quick]``. Sections run in separate processes so that each one sets up its BLAS and thread
pools from scratch (faiss's OpenBLAS reads OPENBLAS_CORETYPE only when it loads) and one
failing section (a missing peer, no data) does not stop the others: its error goes in the report.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from embedrank.bench.report import build_report
from embedrank.errors import InvalidValueError

# section name -> module under embedrank.bench, in the order the report shows them.
SECTIONS: dict[str, str] = {
    "kernels": "kernels",
    "encoder": "encoder",
    "index": "index",
    "reranker": "reranker",
    "end_to_end": "end_to_end",
    "compression": "compression_run",
}


def run_section(name: str, out_dir: Path, quick: bool, timeout_s: float | None = None) -> dict:
    """Runs one section; returns {"name", "ok", "seconds", "json", "markdown", "log"}."""
    if name not in SECTIONS:
        raise InvalidValueError(f"unknown section {name!r}; known: {', '.join(SECTIONS)}")
    json_path, md_path, log_path = (out_dir / f"{name}.json", out_dir / f"{name}.md", out_dir / f"{name}.log")
    for stale in (json_path, md_path, *out_dir.glob(f"{name}*.png")):  # a failed rerun must not show old figures
        stale.unlink(missing_ok=True)
    command = [sys.executable, "-m", f"embedrank.bench.{SECTIONS[name]}", "--output", str(json_path),
               "--markdown", str(md_path)] + (["--quick"] if quick else [])
    start = time.perf_counter()
    with open(log_path, "w", encoding="utf-8") as log:
        try:
            code = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, timeout=timeout_s).returncode
        except subprocess.TimeoutExpired:
            code = -1
            log.write(f"\n[embedrank bench] {name} stopped after {timeout_s} s\n")
    seconds = time.perf_counter() - start
    ok = code == 0 and json_path.is_file()
    return {"name": name, "ok": ok, "seconds": seconds, "returncode": code, "json": json_path,
            "markdown": md_path, "log": log_path}


def run_suite(out_dir: Path, sections: list[str], quick: bool = False, show_progress: bool | None = None) -> Path:
    """Runs the sections in order and writes out_dir/report.md (+ plots, JSON); returns its path."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    runs = []
    for name in sections:
        if show_progress is not False:
            print(f"[embedrank bench] {name} ...", file=sys.stderr, flush=True)
        result = run_section(name, out_dir, quick)
        if show_progress is not False:
            status = "done" if result["ok"] else f"FAILED (see {result['log']})"
            print(f"[embedrank bench] {name} {status} in {result['seconds']:.0f} s", file=sys.stderr, flush=True)
        runs.append(result)
    return build_report(out_dir, runs, quick=quick)
