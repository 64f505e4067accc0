"""The benchmark report: every section's plotter (embedrank.bench.plots) on data shaped like the
sections' real JSON, on empty or partial data, and build_report on a folder of fake section outputs.

No benchmark runs here: the section JSON is synthetic (trimmed copies of real outputs), except
one index case that reads benchmarks/results/index.json when a benchmark run has left it.
"""

from __future__ import annotations

import copy
import json
import struct
from pathlib import Path

import pytest

matplotlib = pytest.importorskip("matplotlib", reason="plots need matplotlib (pip install 'embedrank[bench]')")
matplotlib.use("Agg")

from embedrank.bench import plots, report  # noqa: E402
from embedrank.bench.suite import SECTIONS  # noqa: E402
from tests.conftest import REPO  # noqa: E402

REAL_INDEX_JSON = REPO / "benchmarks" / "results" / "index.json"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

# --------------------------------------------------------------------------- #
# Synthetic section outputs, shaped like what each section module writes
# --------------------------------------------------------------------------- #

KERNELS = {
    "cpu": "Intel(R) Xeon(R) Processor",
    "capabilities": {"detected": ["avx2", "fma", "avx512f"], "active": "avx512"},
    "openblas_coretype": "SKYLAKEX",
    "read_bandwidth_gbps": 25.47,
    "clustered 384d": {"base": [100000, 384], "queries": [1000, 384], "k": 10, "embedrank_float32_s": 0.3336,
                       "numpy_float32_s": 1.0272, "faiss_float32_s": 0.4290, "faiss-blas_float32_s": 0.3369,
                       "usearch_float32_s": 5.955, "int8_s": 0.0418, "binary_s": 0.0312, "faiss-binary_s": 0.2673},
    "mean_pool_normalize": {"shape": [64, 256, 384], "embedrank_s": 0.000645, "numpy_s": 0.0353},
}

ENCODER = {
    "documents": 5183, "queries": 300, "threads": 2,
    "sentence-transformers": {"docs_per_s": 24.2, "queries_per_s": 227.0, "ndcg@10": 0.6451, "recall@100": 0.925},
    "embedrank-fp32": {"docs_per_s": 27.2, "queries_per_s": 341.2, "ndcg@10": 0.6451, "recall@100": 0.925},
    "embedrank-int8": {"docs_per_s": 38.9, "queries_per_s": 486.3, "ndcg@10": 0.6487, "recall@100": 0.9267},
}


def _sweep(top_qps: float, recalls: list[float]) -> list[dict]:
    efs = (10, 16, 24, 32, 48, 64, 96, 128)
    return [{"ef": ef, "recall": r, "qps": top_qps / (1 + i) ** 0.8} for i, (ef, r) in enumerate(zip(efs, recalls))]


def _index_run(top_qps: float, recalls: list[float], library: str) -> dict:
    points = _sweep(top_qps, recalls)
    run = {"build_s": 1.0, "bytes_per_vector": 1684.6, "sweep": points}
    for target in (0.90, 0.95, 0.99):
        reaching = [p for p in points if p["recall"] >= target]
        run[f"qps_at_{target:.2f}"] = max(reaching, key=lambda p: p["qps"]) if reaching else None
    if library in ("hnswlib", "embedrank"):
        run["single_query"] = {"ef": 24, "qps": top_qps / 3}
    if library == "embedrank":
        run["resident_bytes_per_vector"] = 3221.6
    return run


def _index_section(base: list[int]) -> dict:
    recalls = [0.877, 0.928, 0.961, 0.975, 0.985, 0.993, 0.996]
    runs = {f"{library}/efc{efc}": _index_run(qps * (1.1 if efc == 100 else 1.0), recalls, library)
            for efc in (100, 200)
            for library, qps in (("hnswlib", 49500.0), ("faiss", 18800.0), ("usearch", 29200.0),
                                 ("embedrank", 38300.0))}
    return {"base": base, "queries": [300, base[1]], "threads": 2, "runs": runs,
            "embedrank_over_hnswlib_efc100": {"0.90": 0.80, "0.95": 0.79, "0.99": 0.85, "single_query": 0.70},
            "embedrank_over_hnswlib_efc200": {"0.90": 1.03, "0.95": 0.94, "0.99": 0.96, "single_query": 0.58}}


INDEX = {
    "cpu": "Intel(R) Xeon(R) Processor", "threads": 2, "k": 10, "M": 16, "ef_constructions": [100, 200],
    "memory_measure": "serialized index size / vectors",
    "SciFact MiniLM": _index_section([5183, 384]),
    "GloVe 50k x 50": _index_section([49000, 50]),
    # not ANN sweeps: the plotter must pass over them
    "filters": {"base": [20000, 384], "queries": [1000, 384], "threads": 2, "exact_cost_ratio": 300.0,
                "points": [{"selectivity": 0.01, "allowed": 200, "exact_recall": 1.0, "exact_qps": 40000.0,
                            "auto_recall": 1.0, "auto_qps": 30000.0, "auto_leaks": 0}]},
    "tombstones": {"base": [20000, 384], "ef": 64,
                   "points": [{"tombstone_fraction": 0.0, "recall": 0.989, "qps": 7845.5}]},
    "overhead": {"SciFact MiniLM": {"ef16": {"batch_qps_hnswlib": 35000.0, "batch_qps_embedrank": 33000.0,
                                             "batch_ratio": 0.94}}},
}

RERANKER = {
    "pairs": 1000, "queries": 50, "docs_per_query": 20, "batch_size": 32, "threads": 2, "repeats": 1,
    "max_seq_length": 512, "model": "all-MiniLM-L6-v2 + fresh seeded 1-label head",
    "systems": {
        "sentence-transformers": {"pairs_per_s": 40.1, "seconds": 24.9, "speedup_vs_sentence_transformers": 1.0},
        "embedrank-fp32": {"pairs_per_s": 52.3, "seconds": 19.1, "max_abs_diff_vs_sentence_transformers": 3e-7,
                           "speedup_vs_sentence_transformers": 1.30},
        "embedrank-opt": {"pairs_per_s": 55.0, "seconds": 18.2, "max_abs_diff_vs_sentence_transformers": 3e-7,
                          "spearman_vs_fp32": 1.0, "speedup_vs_sentence_transformers": 1.37},
        "embedrank-int8": {"pairs_per_s": 88.4, "seconds": 11.3, "max_abs_diff_vs_sentence_transformers": 0.02,
                           "spearman_vs_fp32": 0.995, "speedup_vs_sentence_transformers": 2.20},
    },
    "target_speedup": 1.5,
    "target_met": {"embedrank-fp32": False, "embedrank-opt": False, "embedrank-int8": True},
}


def _latency(queries: int, p50: float, p95: float, rerank: float) -> dict:
    return {"queries": queries, "p50_ms": p50, "p95_ms": p95, "mean_ms": (p50 + p95) / 2,
            "stages_mean_ms": {"encode": 6.0, "search": 0.4, "rerank": rerank}}


END_TO_END = {
    "documents": 5183, "windows": 7310, "candidates": 100, "top_k": 10, "threads": 2,
    "encoder": "all-MiniLM-L6-v2 (fp32)", "reranker": "MiniLM + fresh seeded head (int8)", "index": "FlatIndex float32",
    "corpus_build_s": 12.0,
    "without_rerank": {**_latency(300, 6.9, 9.8, 0.0), "ndcg@10": 0.645},
    "with_rerank": _latency(30, 1210.0, 1405.0, 1203.0),
}


def _compression_rows() -> list[dict]:
    rows = []
    for dim, quality in ((384, 0.645), (128, 0.60)):
        for kind, precision, multipliers in (("exact", "float32", (1,)), ("exact", "int8", (1, 4)),
                                             ("exact", "binary", (1, 4)), ("hnsw", "float32", (1, 4))):
            for multiplier in multipliers:
                scanned = {"float32": 4 * dim, "int8": dim, "binary": dim // 8}[precision]
                loss = {"float32": 0.0, "int8": 0.004, "binary": 0.08 / multiplier}[precision]
                rows.append({"precision": precision, "dim": dim, "multiplier": multiplier, "index": kind,
                             "rerank": False, "ndcg@10": quality - loss, "recall@100": 0.92 - loss,
                             "latency_ms_p50": 0.2 * scanned / 384, "latency_ms_mean": 0.25 * scanned / 384,
                             "bytes_per_vector": scanned, "index_bytes_per_vector": 4 * dim + scanned,
                             "build_s": 0.1})
    for row in [rows[0], rows[2]]:
        rows.append({**row, "rerank": True, "ndcg@10": row["ndcg@10"] + 0.04, "latency_ms_p50": 310.0,
                     "latency_ms_mean": 312.0, "rerank_depth": 20, "rerank_ms_per_pair": 15.5, "first_stage_weight": 0.0})
    return rows


COMPRESSION = {"data": "/data/scifact", "documents": 5183, "queries": 300, "k": 100, "threads": 2,
               "model": "/cache/minilm", "reranker": "/cache/reranker-scifact-400steps",
               "note": "rerank rows: ...", "rows": _compression_rows()}

SAMPLES = {"kernels": KERNELS, "encoder": ENCODER, "index": INDEX, "reranker": RERANKER, "end_to_end": END_TO_END,
           "compression": COMPRESSION}
# PNGs each plotter writes for its sample above
EXPECTED_COUNTS = {"kernels": 1, "encoder": 1, "index": 2, "reranker": 1, "end_to_end": 1, "compression": 1}


def assert_png(path: Path, min_bytes: int = 5000) -> None:
    assert path.is_file(), path
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC, f"{path} is not a PNG"
    assert len(data) >= min_bytes, f"{path}: {len(data)} bytes, suspiciously small"
    width, height = struct.unpack(">II", data[16:24])  # the IHDR chunk
    assert width >= 300 and height >= 200, (path, width, height)


@pytest.fixture(autouse=True)
def _no_figures_left_open():
    import matplotlib.pyplot as plt

    plt.close("all")
    yield
    assert plt.get_fignums() == [], "a plotter left a figure open"


# --------------------------------------------------------------------------- #
# Plotters
# --------------------------------------------------------------------------- #


def test_every_section_has_a_plotter():
    assert set(plots.PLOTTERS) == set(SECTIONS)
    assert set(SAMPLES) == set(SECTIONS)


@pytest.mark.parametrize("section", list(SAMPLES))
def test_plotter_writes_pngs(section, tmp_path):
    data = copy.deepcopy(SAMPLES[section])
    written = plots.PLOTTERS[section](data, tmp_path, section)
    assert len(written) == EXPECTED_COUNTS[section]
    assert len(set(written)) == len(written)
    for path in written:
        assert isinstance(path, Path)
        assert path.parent == tmp_path and path.name.startswith(section) and path.suffix == ".png"
        assert_png(path)
    assert sorted(tmp_path.iterdir()) == sorted(written)  # nothing else written
    assert data == SAMPLES[section]  # the data is not modified


@pytest.mark.parametrize("section", list(SAMPLES))
def test_plotter_on_empty_data_returns_nothing(section, tmp_path):
    assert plots.PLOTTERS[section]({}, tmp_path, section) == []
    assert list(tmp_path.iterdir()) == []


PARTIAL = {
    # key: (section, data without what the plot needs) -> no PNG
    "index without runs": ("index", {"cpu": "x", "SciFact MiniLM": {"base": [5183, 384], "threads": 2}}),
    "index with empty sweeps": ("index", {"SciFact MiniLM": {"runs": {"hnswlib/efc100": {"sweep": []},
                                                                      "faiss/efc100": {"build_s": 1.0}}}}),
    "index with malformed sweeps": ("index", {"d": {"runs": {"hnswlib/efc100": {"sweep": [{"ef": 10}, "x", None]},
                                                             "faiss/efc100": None}}}),
    "reranker without systems": ("reranker", {"pairs": 100, "threads": 2}),
    "reranker without rates": ("reranker", {"systems": {"sentence-transformers": {"seconds": 2.0}}}),
    "end_to_end without latencies": ("end_to_end", {"documents": 10, "without_rerank": {"queries": 3}}),
    "compression without rows": ("compression", {"documents": 10, "note": "x"}),
    "compression rows lacking ndcg": ("compression", {"rows": [{"precision": "int8", "bytes_per_vector": 384}]}),
    "kernels without queries": ("kernels", {"clustered 384d": {"base": [10, 4], "int8_s": 0.1}}),
    "kernels without timings": ("kernels", {"clustered 384d": {"base": [10, 4], "queries": [5, 4]}}),
    "encoder without rates": ("encoder", {"documents": 10, "embedrank-fp32": {"ndcg@10": 0.5}}),
}


@pytest.mark.parametrize("case", list(PARTIAL))
def test_plotter_on_data_lacking_what_it_needs_returns_nothing(case, tmp_path):
    section, data = PARTIAL[case]
    assert plots.PLOTTERS[section](data, tmp_path, section) == []
    assert list(tmp_path.iterdir()) == []


SPARSE = {
    # optional keys missing: still a plot
    "index, one library, no efc in the key": ("index", {"d": {"runs": {"embedrank": {"sweep": [
        {"ef": 10, "recall": 0.8, "qps": 5000.0}, {"ef": 64, "recall": 0.99, "qps": 900.0}]}}}}),
    "reranker without the reference or the target": ("reranker", {"systems": {"embedrank-int8": {"pairs_per_s": 80.0}}}),
    "end_to_end without rerank": ("end_to_end", {"without_rerank": {"p50_ms": 6.9, "p95_ms": 9.8}}),
    "end_to_end p50 only": ("end_to_end", {"with_rerank": {"p50_ms": 1200.0}, "without_rerank": {"p50_ms": 7.0}}),
    "compression, unknown precision and kind": ("compression", {"rows": [
        {"precision": "fp16", "index": "ivf", "bytes_per_vector": 768, "ndcg@10": 0.6},
        {"precision": "binary", "bytes_per_vector": 48, "ndcg@10": 0.5, "rerank": True}]}),
}


@pytest.mark.parametrize("case", list(SPARSE))
def test_plotter_tolerates_missing_optional_keys(case, tmp_path):
    section, data = SPARSE[case]
    written = plots.PLOTTERS[section](data, tmp_path, section)
    assert len(written) == 1
    assert_png(written[0], min_bytes=2000)


def test_index_plot_skips_non_finite_points(tmp_path):
    data = copy.deepcopy(INDEX)
    run = data["SciFact MiniLM"]["runs"]["faiss/efc100"]
    run["sweep"] += [{"ef": 768, "recall": float("nan"), "qps": 10.0}, {"ef": 512, "recall": 0.99, "qps": 0.0}]
    written = plots.plot_index(data, tmp_path, "index")
    assert len(written) == 2
    for path in written:
        assert_png(path)


def test_index_plot_from_a_real_run(tmp_path):
    if not REAL_INDEX_JSON.is_file():
        pytest.skip(f"{REAL_INDEX_JSON} not found: written by `python -m embedrank.bench.index` (not run by tests)")
    data = json.loads(REAL_INDEX_JSON.read_text(encoding="utf-8"))
    datasets = [k for k, v in data.items() if isinstance(v, dict) and isinstance(v.get("runs"), dict)]
    written = plots.plot_index(data, tmp_path, "index")
    assert len(written) == len(datasets) > 0
    for path in written:
        assert_png(path, min_bytes=10_000)


# --------------------------------------------------------------------------- #
# build_report
# --------------------------------------------------------------------------- #

MARKDOWN = {
    "kernels": "| data | system | queries/s |\n|---|---|---|\n| clustered 384d | kernels-marker | 2997 |\n",
    "encoder": "| system | docs/s |\n|---|---|\n| encoder-marker | 27.2 |\n",
    "index": "HNSW, M=16, k=10, 2 threads\n\n| data | library |\n|---|---|\n| index-marker | embedrank |\n",
    "reranker": "| system | pairs/s |\n|---|---|\n| reranker-marker | 88.4 |\n",
    "end_to_end": "| pipeline | p50 ms |\n|---|---|\n| end-to-end-marker | 6.9 |\n",
    "compression": "| precision | NDCG@10 |\n|---|---|\n| compression-marker | 0.645 |\n",
}


def _fake_run(out_dir: Path, name: str, data: dict | None, markdown: str | None, log: str = "") -> dict:
    json_path, md_path, log_path = out_dir / f"{name}.json", out_dir / f"{name}.md", out_dir / f"{name}.log"
    if data is not None:
        json_path.write_text(json.dumps(data), encoding="utf-8")
    if markdown is not None:
        md_path.write_text(markdown, encoding="utf-8")
    log_path.write_text(log, encoding="utf-8")
    ok = data is not None
    return {"name": name, "ok": ok, "seconds": 12.3, "returncode": 0 if ok else 1, "json": json_path,
            "markdown": md_path, "log": log_path}


def test_build_report(tmp_path):
    runs = [_fake_run(tmp_path, name, SAMPLES[name], MARKDOWN[name]) for name in SECTIONS]
    path = report.build_report(tmp_path, runs, quick=True)
    assert path == tmp_path / "report.md"
    text = path.read_text(encoding="utf-8")

    assert text.startswith("# embedrank benchmark report")
    assert report.cpu_model() in text
    assert "Quick mode" in text
    positions = []
    for name in SECTIONS:
        heading = f"## {report.TITLES[name]}"
        assert heading in text
        positions.append(text.index(heading))
        assert MARKDOWN[name].strip() in text  # each section's table, whole
    assert positions == sorted(positions)  # in the order of the runs

    links = [line for line in text.splitlines() if line.startswith("![")]
    assert len(links) == sum(EXPECTED_COUNTS.values())
    for name in SECTIONS:
        section_links = [line for line in links if line.startswith(f"![{name}](")]
        assert len(section_links) == EXPECTED_COUNTS[name], name
        for line in section_links:
            png = tmp_path / line[line.index("(") + 1:-1]
            assert_png(png)
            # the image follows its section's heading and precedes the next one
            start = text.index(f"## {report.TITLES[name]}")
            headings = [text.index(f"## {report.TITLES[n]}") for n in SECTIONS]
            assert start < text.index(line) < min([h for h in headings if h > start], default=len(text))

    merged = json.loads((tmp_path / "report.json").read_text(encoding="utf-8"))
    assert merged["quick"] is True
    assert merged["machine"]["cpu"] == report.cpu_model()
    assert list(merged["sections"]) == list(SECTIONS)
    for name in SECTIONS:
        section = merged["sections"][name]
        assert section["ok"] is True and section["seconds"] == 12.3
        assert section["results"] == json.loads(json.dumps(SAMPLES[name]))


def test_build_report_with_failed_and_plotless_sections(tmp_path):
    runs = [
        _fake_run(tmp_path, "kernels", KERNELS, MARKDOWN["kernels"]),
        _fake_run(tmp_path, "index", None, None, log="building...\nModuleNotFoundError: No module named 'hnswlib'\n"),
        _fake_run(tmp_path, "reranker", {"systems": {}}, None),  # ran, but nothing to plot and no table
        _fake_run(tmp_path, "extra", {"x": 1}, "| a |\n|---|\n| extra-marker |\n"),  # no plotter, no title
    ]
    text = report.build_report(tmp_path, runs).read_text(encoding="utf-8")
    assert "Quick mode" not in text
    assert "Not measured: the section failed (exit 1)" in text
    assert "No module named 'hnswlib'" in text  # the log's tail
    assert "(no table)" in text
    assert "## extra" in text and "extra-marker" in text
    links = [line for line in text.splitlines() if line.startswith("![")]
    assert links == ["![kernels](kernels_clustered_384d.png)"]
    merged = json.loads((tmp_path / "report.json").read_text(encoding="utf-8"))
    assert merged["sections"]["index"] == {"ok": False, "seconds": 12.3, "results": None}
    assert merged["sections"]["reranker"]["results"] == {"systems": {}}
    assert merged["sections"]["kernels"]["plots"] == ["kernels_clustered_384d.png"]


def test_build_report_names_an_unreadable_figures_file(tmp_path):
    run = _fake_run(tmp_path, "kernels", KERNELS, MARKDOWN["kernels"])
    run["json"].write_text("{not json", encoding="utf-8")
    text = report.build_report(tmp_path, [run]).read_text(encoding="utf-8")
    assert "Not measured: its figures file kernels.json could not be read" in text


def test_a_rerun_section_leaves_no_stale_plots(tmp_path, monkeypatch):
    from embedrank.bench import suite

    (tmp_path / "kernels_old.png").write_bytes(b"old")
    (tmp_path / "encoder_keep.png").write_bytes(b"other section")
    monkeypatch.setitem(suite.SECTIONS, "kernels", "no_such_module_here")
    result = suite.run_section("kernels", tmp_path, quick=True, timeout_s=60)
    assert not result["ok"] and not (tmp_path / "kernels_old.png").exists()
    assert (tmp_path / "encoder_keep.png").exists()


def test_build_report_survives_a_failing_plotter(tmp_path, monkeypatch, capsys):
    def broken(data, out_dir, name):
        raise KeyError("boom")

    monkeypatch.setitem(report.PLOTTERS, "encoder", broken)
    runs = [_fake_run(tmp_path, "encoder", ENCODER, MARKDOWN["encoder"])]
    text = report.build_report(tmp_path, runs).read_text(encoding="utf-8")
    assert "encoder-marker" in text and "![" not in text
    assert "plot for encoder failed" in capsys.readouterr().err
