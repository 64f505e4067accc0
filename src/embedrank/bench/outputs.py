"""What every benchmark module writes: JSON figures (--output) and a markdown table (--markdown)."""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path
from typing import Sequence


def repo_root() -> Path | None:
    """The source checkout this package runs from (editable installs), or None."""
    root = Path(__file__).resolve().parents[3]
    return root if (root / "benchmarks").is_dir() and (root / "pyproject.toml").is_file() else None


def default_results_dir() -> Path:
    """benchmarks/results of the checkout when there is one, else ./bench-results."""
    root = repo_root()
    return root / "benchmarks" / "results" if root else Path.cwd() / "bench-results"


def default_data_dir(name: str) -> Path:
    """A BEIR data set: $EMBEDRANK_DATA/<name>, else ../shared/data/<name> beside the checkout or the cwd."""
    if os.environ.get("EMBEDRANK_DATA"):
        return Path(os.environ["EMBEDRANK_DATA"]) / name
    root = repo_root()
    base = root.parent if root else Path.cwd().parent
    return base / "shared" / "data" / name


def add_output_arguments(parser: argparse.ArgumentParser, name: str) -> None:
    parser.add_argument("--output", type=Path, default=default_results_dir() / f"{name}.json",
                        help=f"JSON figures (default: {default_results_dir() / (name + '.json')})")
    parser.add_argument("--markdown", type=Path, default=None, help="also write the table as markdown")


def _write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


def write_outputs(args: argparse.Namespace, results: dict, markdown: str) -> None:
    _write_atomically(args.output, json.dumps(results, indent=2))
    print(f"\nfigures written to {args.output}")
    if args.markdown is not None:
        _write_atomically(args.markdown, markdown)


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A GitHub markdown table; cells are str()-ed, pipes escaped."""
    def cell(value: object) -> str:
        return str(value).replace("|", "\\|")

    lines = ["| " + " | ".join(cell(h) for h in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"
