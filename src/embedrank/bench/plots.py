"""PNG plots of the sections' JSON figures (matplotlib, Agg backend; called by report.py).

Each plotter takes (data, out_dir, name) and returns the PNG paths it wrote; data it cannot
use (a section's JSON lacking what the plot needs, or {}) gives [] rather than an error.
"""

from __future__ import annotations

import math
from pathlib import Path

LIBRARY_COLORS = {"embedrank": "tab:blue", "hnswlib": "tab:orange", "faiss": "tab:green", "usearch": "tab:purple"}
PRECISION_COLORS = {"float32": "tab:blue", "int8": "tab:orange", "binary": "tab:green"}
# (index kind, reranked) -> marker
KIND_MARKERS = {("exact", False): "o", ("hnsw", False): "^", ("exact", True): "s", ("hnsw", True): "D"}
LINESTYLES = ("-", "--", ":", "-.")


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in str(text).lower())


def _number(value) -> float | None:
    """value as a finite float, else None (missing, NaN, a string, a bool)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _save(fig, path: Path) -> Path:
    import matplotlib.pyplot as plt

    try:
        fig.tight_layout()
        fig.savefig(path, dpi=110)
    finally:
        plt.close(fig)
    return path


def _bars(title: str, labels: list[str], values: list[float], ylabel: str, path: Path, highlight: str = "embedrank",
          reference: tuple[float, str] | None = None) -> Path:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(max(5.0, 0.9 * len(labels) + 2), 3.6))
    try:
        colors = ["tab:blue" if label.startswith(highlight) else "tab:gray" for label in labels]
        bars = ax.bar(range(len(labels)), values, color=colors)
        ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right", fontsize=8)
        ax.set_ylabel(ylabel)
        ax.set_title(title, fontsize=10)
        for bar, value in zip(bars, values):
            ax.annotate(f"{value:.3g}", (bar.get_x() + bar.get_width() / 2, bar.get_height()), ha="center",
                        va="bottom", fontsize=7)
        if reference is not None:
            ax.axhline(reference[0], color="tab:red", linestyle="--", linewidth=0.8, label=reference[1])
            ax.legend(fontsize=7, loc="upper left")
    except BaseException:
        plt.close(fig)
        raise
    return _save(fig, path)


def plot_kernels(data: dict, out_dir: Path, name: str) -> list[Path]:
    """Queries/s of exact search per system, one bar chart per data set."""
    written = []
    for dataset, figures in data.items():
        queries = figures.get("queries") if isinstance(figures, dict) else None
        if not isinstance(queries, list) or not queries or not _number(queries[0]):
            continue
        n_queries = queries[0]
        systems = {
            "embedrank float32": figures.get("embedrank_float32_s"),
            "embedrank int8": figures.get("int8_s"),
            "embedrank binary": figures.get("binary_s"),
            "faiss flat (BLAS)": figures.get("faiss-blas_float32_s"),
            "faiss flat": figures.get("faiss_float32_s"),
            "faiss binary": figures.get("faiss-binary_s"),
            "numpy": figures.get("numpy_float32_s"),
            "usearch exact": figures.get("usearch_float32_s"),
        }
        labels = [k for k, v in systems.items() if _number(v)]
        if not labels:
            continue
        values = [n_queries / systems[k] for k in labels]
        base = figures.get("base")
        shape = f" ({base[0]:,} x {base[1]})" if isinstance(base, list) and len(base) == 2 else ""
        written.append(_bars(f"exact top-10, {dataset}{shape}", labels, values,
                             "queries/s (higher is better)", out_dir / f"{name}_{_slug(dataset)}.png"))
    return written


def plot_encoder(data: dict, out_dir: Path, name: str) -> list[Path]:
    """Documents/s of sentence-transformers and embedrank's variants on SciFact."""
    labels = [k for k, v in data.items() if isinstance(v, dict) and _number(v.get("docs_per_s"))]
    if not labels:
        return []
    values = [data[k]["docs_per_s"] for k in labels]
    return [_bars(f"encoding SciFact documents ({data.get('documents')} docs, {data.get('threads')} threads)", labels,
                  values, "documents/s", out_dir / f"{name}_throughput.png")]


def _sweep_points(run) -> list[tuple[float, float]]:
    """(recall, qps) of a run's ef sweep, in sweep order; points lacking either are dropped."""
    if not isinstance(run, dict) or not isinstance(run.get("sweep"), list):
        return []
    points = []
    for point in run["sweep"]:
        if isinstance(point, dict):
            recall, qps = _number(point.get("recall")), _number(point.get("qps"))
            if recall is not None and qps is not None and qps > 0:
                points.append((recall, qps))
    return points


def plot_index(data: dict, out_dir: Path, name: str) -> list[Path]:
    """recall@10 against batch QPS (log scale) from each run's ef sweep: one PNG per data set, one
    line per library (colour) and ef_construction (line style)."""
    import matplotlib.pyplot as plt

    written = []
    for dataset, section in data.items():
        runs = section.get("runs") if isinstance(section, dict) else None
        if not isinstance(runs, dict):
            continue
        curves = []  # (library, efc, points)
        for key, run in runs.items():
            points = _sweep_points(run)
            if not points:
                continue
            library, _, efc = str(key).partition("/")
            curves.append((library, efc.removeprefix("efc"), points))
        if not curves:
            continue
        efcs = sorted({efc for _, efc, _ in curves}, key=lambda e: (0, int(e), "") if e.isdigit() else (1, 0, e))
        fig, ax = plt.subplots(figsize=(6.4, 4.2))
        try:
            for library, efc, points in curves:
                recalls, qps = zip(*points)
                color = LIBRARY_COLORS.get(library, "tab:gray")
                style = LINESTYLES[efcs.index(efc) % len(LINESTYLES)]
                label = f"{library}, ef_constr. {efc}" if efc else library
                ax.plot(recalls, qps, style, marker="o", markersize=3, color=color, label=label,
                        linewidth=1.8 if library == "embedrank" else 1.2)
            for target in (0.90, 0.95, 0.99):
                ax.axvline(target, color="lightgray", linewidth=0.7, zorder=0)
            ax.set_yscale("log")
            ax.set_xlabel("recall@10")
            ax.set_ylabel("queries/s, batch (log scale)")
            base = section.get("base")
            shape = f" ({base[0]:,} x {base[1]})" if isinstance(base, list) and len(base) == 2 else ""
            threads = f", {section['threads']} threads" if "threads" in section else ""
            ax.set_title(f"HNSW M=16, {dataset}{shape}{threads}", fontsize=10)
            ax.grid(True, which="both", linewidth=0.3, alpha=0.5)
            ax.legend(fontsize=7, ncol=2)
        except BaseException:
            plt.close(fig)
            raise
        written.append(_save(fig, out_dir / f"{name}_{_slug(dataset)}.png"))
    return written


def plot_reranker(data: dict, out_dir: Path, name: str) -> list[Path]:
    """Cross-encoder pairs/s: sentence-transformers against embedrank's variants (target line at
    target_speedup x sentence-transformers when both are known)."""
    systems = data.get("systems")
    if not isinstance(systems, dict):
        return []
    labels = [k for k, v in systems.items() if isinstance(v, dict) and _number(v.get("pairs_per_s"))]
    if not labels:
        return []
    labels.sort(key=lambda k: k.startswith("embedrank"))  # the reference first, embedrank's variants after it
    values = [systems[k]["pairs_per_s"] for k in labels]
    reference = None
    st = systems.get("sentence-transformers")
    target = _number(data.get("target_speedup"))
    if isinstance(st, dict) and _number(st.get("pairs_per_s")) and target:
        reference = (target * st["pairs_per_s"], f"target: {target:g}x sentence-transformers")
    details = ", ".join(f"{label} {data[key]}" for key, label in
                        (("pairs", "pairs"), ("batch_size", "batch"), ("threads", "threads")) if key in data)
    return [_bars(f"cross-encoder throughput ({details})" if details else "cross-encoder throughput", labels, values,
                  "pairs/s (higher is better)", out_dir / f"{name}_throughput.png", reference=reference)]


def plot_end_to_end(data: dict, out_dir: Path, name: str) -> list[Path]:
    """p50 / p95 ms per query, bi-encoder only and with reranking, side by side."""
    import matplotlib.pyplot as plt

    pipelines = []
    reranked = f"+ rerank {data.get('candidates', '')}".strip()
    for key, label in (("without_rerank", "bi-encoder only"), ("with_rerank", reranked)):
        summary = data.get(key)
        if not isinstance(summary, dict):
            continue
        p50, p95 = _number(summary.get("p50_ms")), _number(summary.get("p95_ms"))
        if p50 is None and p95 is None:
            continue
        queries = summary.get("queries")
        pipelines.append((f"{label}\n({queries} queries)" if queries is not None else label, p50, p95))
    if not pipelines:
        return []
    fig, ax = plt.subplots(figsize=(5.6, 3.8))
    try:
        width = 0.38
        for offset, (stat, index, color) in ((-width / 2, ("p50", 1, "tab:blue")), (width / 2, ("p95", 2, "tab:gray"))):
            xs = [i + offset for i, p in enumerate(pipelines) if p[index] is not None]
            ys = [p[index] for p in pipelines if p[index] is not None]
            bars = ax.bar(xs, ys, width, label=stat, color=color)
            for bar, value in zip(bars, ys):
                text = f"{value:,.0f}" if value >= 100 else f"{value:.3g}"
                ax.annotate(text, (bar.get_x() + bar.get_width() / 2, bar.get_height()), ha="center", va="bottom",
                            fontsize=7)
        values = [v for p in pipelines for v in p[1:] if v is not None and v > 0]
        if values and max(values) / min(values) > 30:
            ax.set_yscale("log")
            ax.set_ylabel("ms per query (log scale)")
        else:
            ax.set_ylabel("ms per query (lower is better)")
        ax.set_xticks(range(len(pipelines)), [p[0] for p in pipelines], fontsize=8)
        threads = f", {data['threads']} threads" if "threads" in data else ""
        docs = f"{data['documents']} docs" if "documents" in data else "SciFact"
        ax.set_title(f"end-to-end latency, one query per call ({docs}{threads})", fontsize=10)
        ax.legend(fontsize=8)
    except BaseException:
        plt.close(fig)
        raise
    return [_save(fig, out_dir / f"{name}_latency.png")]


def _row_label(row: dict) -> str:
    label = f"{row.get('precision')} {row.get('dim')}d"
    if row.get("index") == "hnsw":
        label += f" hnsw ef={row.get('multiplier')}xk"
    elif row.get("precision") != "float32" and row.get("multiplier") is not None:
        label += f" x{row.get('multiplier')}"
    return label + (" +rerank" if row.get("rerank") else "")


def plot_compression(data: dict, out_dir: Path, name: str) -> list[Path]:
    """NDCG@10 against bytes per vector scanned by the first pass (log scale): colour by precision,
    marker by index kind and rerank; the Pareto frontier (no smaller row scores higher) labelled."""
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    rows = data.get("rows")
    if not isinstance(rows, list):
        return []
    points = []
    for row in rows:
        if not isinstance(row, dict):
            continue
        size, ndcg = _number(row.get("bytes_per_vector")), _number(row.get("ndcg@10"))
        if size is not None and size > 0 and ndcg is not None:
            points.append((size, ndcg, row))
    if not points:
        return []
    fig, ax = plt.subplots(figsize=(6.8, 4.4))
    try:
        for size, ndcg, row in points:
            key = (row.get("index", "exact"), bool(row.get("rerank")))
            ax.scatter(size, ndcg, color=PRECISION_COLORS.get(row.get("precision"), "tab:gray"),
                       marker=KIND_MARKERS.get(key, "P"), s=30, alpha=0.8, edgecolors="black", linewidths=0.3)
        best = -math.inf
        for size, ndcg, row in sorted(points, key=lambda p: (p[0], -p[1])):
            if ndcg > best:
                best = ndcg
                ax.annotate(_row_label(row), (size, ndcg), xytext=(4, 3), textcoords="offset points", fontsize=6,
                            color="dimgray")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("bytes per vector scanned by the first pass (log scale)")
        ax.set_ylabel("NDCG@10")
        details = ", ".join(f"{data[key]} {key}" for key in ("documents", "queries") if key in data)
        ax.set_title("compression sweep" + (f" ({details})" if details else ""), fontsize=10)
        ax.grid(True, linewidth=0.3, alpha=0.5)
        precisions = list(dict.fromkeys(row.get("precision") for _, _, row in points))
        kinds = list(dict.fromkeys((row.get("index", "exact"), bool(row.get("rerank"))) for _, _, row in points))
        handles = [Line2D([], [], linestyle="", marker="o", color=PRECISION_COLORS.get(p, "tab:gray"), label=str(p))
                   for p in precisions]
        handles += [Line2D([], [], linestyle="", marker=KIND_MARKERS.get(k, "P"), color="black",
                           markerfacecolor="white", label=f"{k[0]}{' + rerank' if k[1] else ''}") for k in kinds]
        ax.legend(handles=handles, fontsize=7, loc="lower right")
    except BaseException:
        plt.close(fig)
        raise
    return [_save(fig, out_dir / f"{name}_ndcg_vs_bytes.png")]


# section name (embedrank.bench.suite.SECTIONS) -> plotter
PLOTTERS = {"kernels": plot_kernels, "encoder": plot_encoder, "index": plot_index, "reranker": plot_reranker,
            "end_to_end": plot_end_to_end, "compression": plot_compression}
