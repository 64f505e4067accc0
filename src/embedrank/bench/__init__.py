"""embedrank's benchmark suite (extra `bench`): kernels, encoder, index, reranker, end to end,
the compression sweep, and the report builder behind `embedrank bench`.

Each section is a module runnable as ``python -m embedrank.bench.<section>`` that writes JSON
(--output) and a markdown table (--markdown); :mod:`embedrank.bench.suite` runs them and
:mod:`embedrank.bench.report` assembles report.md with plots.
"""

from __future__ import annotations


def __getattr__(name: str):
    if name == "compression_sweep":
        from embedrank.bench.compression import compression_sweep

        return compression_sweep
    raise AttributeError(f"module 'embedrank.bench' has no attribute {name!r}")
