"""PNG plots of the sections' JSON figures (matplotlib, Agg backend; called by report.py).

Each plotter takes (data, out_dir, name) and returns the PNG paths it wrote.
"""

from __future__ import annotations

from pathlib import Path


def _bars(title: str, labels: list[str], values: list[float], ylabel: str, path: Path, highlight: str = "embedrank") -> Path:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(max(5.0, 0.9 * len(labels) + 2), 3.6))
    colors = ["tab:blue" if label.startswith(highlight) else "tab:gray" for label in labels]
    bars = ax.bar(range(len(labels)), values, color=colors)
    ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    for bar, value in zip(bars, values):
        ax.annotate(f"{value:.3g}", (bar.get_x() + bar.get_width() / 2, bar.get_height()), ha="center", va="bottom", fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_kernels(data: dict, out_dir: Path, name: str) -> list[Path]:
    """Queries/s of exact search per system, one bar chart per data set."""
    written = []
    for dataset, figures in data.items():
        if not isinstance(figures, dict) or "queries" not in figures:
            continue
        n_queries = figures["queries"][0]
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
        labels = [k for k, v in systems.items() if v]
        values = [n_queries / systems[k] for k in labels]
        slug = "".join(c if c.isalnum() else "_" for c in dataset.lower())
        written.append(_bars(f"exact top-10, {dataset} ({figures['base'][0]:,} x {figures['base'][1]})", labels, values,
                             "queries/s (higher is better)", out_dir / f"{name}_{slug}.png"))
    return written


def plot_encoder(data: dict, out_dir: Path, name: str) -> list[Path]:
    """Documents/s of sentence-transformers and embedrank's variants on SciFact."""
    labels = [k for k, v in data.items() if isinstance(v, dict) and "docs_per_s" in v]
    values = [data[k]["docs_per_s"] for k in labels]
    return [_bars(f"encoding SciFact documents ({data.get('documents')} docs, {data.get('threads')} threads)", labels,
                  values, "documents/s", out_dir / f"{name}_throughput.png")]


PLOTTERS = {"kernels": plot_kernels, "encoder": plot_encoder}
