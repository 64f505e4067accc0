"""The lexical benchmark module runs end to end on small data and agrees with bm25s's quality."""

import json

import pytest

from embedrank.bench import lexical
from tests.conftest import SHARED_DATA

pytest.importorskip("bm25s", reason="bm25s (a peer of the lexical benchmark) is not installed")
pytest.importorskip("tantivy", reason="tantivy (a peer of the lexical benchmark) is not installed")


@pytest.mark.skipif(not (SHARED_DATA / "adi").is_dir(), reason=f"ADI not found at {SHARED_DATA / 'adi'}")
def test_quick_run_writes_every_system(tmp_path):
    out = tmp_path / "lexical.json"
    assert lexical.main(["--datasets", "adi", "--synthetic-docs", "3000", "--output", str(out),
                         "--markdown", str(tmp_path / "lexical.md")]) == 0
    figures = json.loads(out.read_text())
    for name in ("adi", "synthetic-3000"):
        assert set(figures[name]["systems"]) == {"embedrank", "bm25s", "tantivy"}
        for entry in figures[name]["systems"].values():
            assert entry["build_docs_per_s"] > 0 and entry["queries_per_s"] > 0
    adi = figures["adi"]["systems"]
    assert abs(adi["embedrank"]["ndcg@10"] - adi["bm25s"]["ndcg@10"]) <= 0.005  # same analyzer, same BM25
    assert figures["adi"]["max_score_diff_vs_bm25s"] < 1e-4
    assert "| adi | embedrank |" in (tmp_path / "lexical.md").read_text()


def test_synthetic_corpus_is_seeded():
    a = lexical.synthetic_corpus(50, n_queries=5)
    assert a == lexical.synthetic_corpus(50, n_queries=5) and len(a[0]) == 50 and len(a[1]) == 5
