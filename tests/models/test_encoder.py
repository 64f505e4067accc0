"""embedrank.Encoder on the real all-MiniLM-L6-v2 export (see conftest.minilm_export)."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest

from embedrank import kernels as K
from embedrank.models.chunking import aggregate_chunk_scores, chunk, default_chunking
from embedrank.models.encoder import Encoder, TruncationWarning
from embedrank.models.folder import ModelFolderError

TEXTS = [
    "A man is eating food.",
    "The Treaty of Westphalia (1648) ended the Thirty Years' War.",
    "",
    "How do I reset my password if I no longer have access to my email account?",
    "Photosynthesis converts light energy into chemical energy stored in glucose. " * 6,
    "x",
    "Stock markets fell sharply on Monday after the central bank raised interest rates again.",
]
LONG_TEXT = "Retrieval systems rank documents by relevance to a query. " * 60  # > 256 tokens


@pytest.fixture(scope="module")
def encoder(minilm_export):
    return Encoder.load(minilm_export)


@pytest.fixture(scope="module")
def torch_reference(minilm_source):
    """Mean-pooled, normalized embeddings from the torch model, texts tokenized at 256 tokens."""
    import torch
    from tokenizers import Tokenizer
    from transformers import AutoModel

    model = AutoModel.from_pretrained(str(minilm_source), local_files_only=True).eval()
    tok = Tokenizer.from_file(str(minilm_source / "tokenizer.json"))
    tok.no_padding()
    tok.enable_truncation(256)

    def embed(texts):
        out = []
        for text in texts:
            e = tok.encode(text)
            ids = torch.tensor([e.ids])
            mask = torch.tensor([e.attention_mask])
            with torch.no_grad():
                hidden = model(input_ids=ids, attention_mask=mask, token_type_ids=torch.tensor([e.type_ids]))[0]
            pooled = (hidden * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
            out.append(torch.nn.functional.normalize(pooled, dim=1)[0].numpy())
        return np.stack(out)

    return embed


def test_model_facts(encoder):
    assert encoder.dim == 384
    assert encoder.max_seq_length == 256
    assert encoder.config.pooling == "mean" and encoder.config.normalize
    assert encoder.providers == ["CPUExecutionProvider"]


def test_embeddings_equal_torch_mean_pool_reference(encoder, torch_reference):
    texts = TEXTS + [LONG_TEXT]
    with pytest.warns(TruncationWarning):
        ours = encoder.encode(texts)
    reference = torch_reference(texts)
    assert ours.dtype == np.float32 and ours.shape == (len(texts), 384)
    assert np.abs(ours - reference).max() <= 1e-4


@pytest.mark.parametrize("variant", ["opt", "pooled"])
def test_optimized_and_pooled_variants_match_fp32(minilm_export, encoder, variant):
    other = Encoder.load(minilm_export, variant=variant)
    assert np.abs(other.encode(TEXTS) - encoder.encode(TEXTS)).max() <= 1e-4


@pytest.mark.parametrize("variant", ["fp16", "pooled_fp16"])
def test_fp16_variants_stay_close(minilm_export, encoder, variant):
    # float16 graphs are meant for the CUDA provider; on a CPU they run too (that is how the
    # export verifies them), within float16 rounding of the fp32 vectors
    other = Encoder.load(minilm_export, variant=variant)
    ours, reference = other.encode(TEXTS), encoder.encode(TEXTS)
    assert ours.dtype == np.float32
    assert np.abs(ours - reference).max() <= 2e-3
    assert (ours * reference).sum(axis=1).min() >= 0.9999


@pytest.mark.parametrize("variant", ["fp32", "opt", "fp16"])
def test_padding_to_a_multiple_leaves_vectors_unchanged(minilm_export, variant, monkeypatch):
    # on CUDA batches are padded to a multiple of sessions.CUDA_PAD_TO_MULTIPLE_OF tokens; the
    # same padding here on the CPU (the fused graphs take the mask as sequence lengths)
    from embedrank.runtime import sessions
    base = Encoder.load(minilm_export, variant=variant).encode(TEXTS, batch_size=3)
    monkeypatch.setattr(sessions, "pad_multiple", lambda provider: 32)  # read when the session opens
    model = Encoder.load(minilm_export, variant=variant)
    lengths = []
    real = model.tokenizer.pad

    def spy(encodings, multiple_of=1):
        batch = real(encodings, multiple_of)
        lengths.append(batch.input_ids.shape[1])
        return batch

    monkeypatch.setattr(model.tokenizer, "pad", spy)
    padded = model.encode(TEXTS, batch_size=3)
    assert lengths and all(n % 32 == 0 for n in lengths)
    assert np.abs(padded - base).max() <= (1e-5 if variant != "fp16" else 1e-3)


def test_int8_variant_stays_close(minilm_export, encoder):
    other = Encoder.load(minilm_export, variant="int8")
    cosine = (other.encode(TEXTS) * encoder.encode(TEXTS)).sum(axis=1)
    assert cosine.min() >= 0.95


def test_int8_vectors_depend_on_the_batch_within_a_bound(minilm_export):
    # dynamic quantization takes one activation scale per batch tensor: a text's int8 vector
    # moves a little with its batch mates (documented); fp32 and opt do not (next test)
    int8 = Encoder.load(minilm_export, variant="int8")
    texts = TEXTS + [LONG_TEXT[: 40 * (i + 1)] for i in range(6)]
    alone = int8.encode(texts, batch_size=1)
    together = int8.encode(texts, batch_size=len(texts), max_tokens_per_batch=None)
    cosine = (alone * together).sum(axis=1)
    assert cosine.min() >= 0.95, cosine  # 0.97 measured for short texts padded beside long ones
    assert np.abs(alone - together).max() > 1e-5  # if this starts failing, int8 became batch-invariant: say so


def test_same_text_same_vector_whatever_the_batch_and_position(encoder):
    base = encoder.encode(TEXTS, batch_size=32)
    rng = np.random.default_rng(0)
    for batch_size in (1, 2, 3):
        order = rng.permutation(len(TEXTS))
        shuffled = encoder.encode([TEXTS[i] for i in order], batch_size=batch_size)
        assert np.abs(shuffled - base[order]).max() <= 1e-5
    budget = encoder.encode(TEXTS, batch_size=64, max_tokens_per_batch=40)
    assert np.abs(budget - base).max() <= 1e-5
    uncapped = encoder.encode(TEXTS, batch_size=32, max_tokens_per_batch=None)
    assert np.abs(uncapped - base).max() <= 1e-5
    # Surrounded by much longer texts, a short text gets padded further: still the same vector.
    with pytest.warns(TruncationWarning):
        mixed = encoder.encode([LONG_TEXT, TEXTS[0], LONG_TEXT], batch_size=3)
    assert np.abs(mixed[1] - base[0]).max() <= 1e-5


def test_default_token_budget_on_cpu(encoder, monkeypatch):
    from embedrank.runtime.sessions import CPU_MAX_TOKENS_PER_BATCH

    shapes = []
    real = encoder._run_batch

    def spy(encodings, *args):
        shapes.append((len(encodings), max(len(e.ids) for e in encodings)))
        return real(encodings, *args)

    monkeypatch.setattr(encoder, "_run_batch", spy)
    texts = [LONG_TEXT] * 9 + TEXTS  # 9 texts cut at 256 tokens, then short ones
    with pytest.warns(TruncationWarning):
        default = encoder.encode(texts)
    assert encoder.providers[0] == "CPUExecutionProvider"
    assert shapes[:3] == [(4, 256)] * 3  # 1024 // 256 texts a batch (the third: 1 long, 3 short)
    assert all(count * longest <= CPU_MAX_TOKENS_PER_BATCH for count, longest in shapes)
    assert sum(count for count, _ in shapes) == len(texts)
    shapes.clear()
    with pytest.warns(TruncationWarning):
        uncapped = encoder.encode(texts, max_tokens_per_batch=None)
    assert shapes[0] == (min(32, len(texts)), 256)
    assert np.abs(uncapped - default).max() <= 1e-5


def test_truncation_is_warned_once_per_call_with_the_count(encoder):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        encoder.encode([LONG_TEXT, "short", LONG_TEXT + " more"])
    messages = [str(w.message) for w in caught if issubclass(w.category, TruncationWarning)]
    assert len(messages) == 1
    assert messages[0].startswith("2 of 3 texts") and "max_seq_length=256" in messages[0]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        encoder.encode(["short", "texts only"])  # no warning at all


def test_prompt_is_prepended(encoder):
    assert np.abs(encoder.encode(["a cat"], prompt="query: ") - encoder.encode(["query: a cat"])).max() == 0


def test_precisions(encoder):
    x = encoder.encode(TEXTS)
    np.testing.assert_array_equal(encoder.encode(TEXTS, precision="ubinary"), np.packbits(x > 0, axis=1))
    binary = encoder.encode(TEXTS, precision="binary")
    assert binary.dtype == np.int8
    np.testing.assert_array_equal(binary.astype(np.int16) + 128, np.packbits(x > 0, axis=1))
    int8 = encoder.encode(TEXTS, precision="int8")
    assert int8.dtype == np.int8 and int8.shape == x.shape
    np.testing.assert_array_equal(int8, K.Int8Quantizer().fit(x).encode(x))
    uint8 = encoder.encode(TEXTS, precision="uint8")
    np.testing.assert_array_equal(uint8.astype(np.int16) - 128, int8)


def test_matryoshka_truncation(encoder):
    full = encoder.encode(TEXTS)
    short = encoder.encode(TEXTS, truncate_dim=128)
    assert short.shape == (len(TEXTS), 128)
    np.testing.assert_allclose(np.linalg.norm(short, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(short, K.truncate_normalize(full, 128), atol=1e-6)
    raw = encoder.encode(TEXTS, truncate_dim=64, normalize=False)
    np.testing.assert_allclose(raw, encoder.encode(TEXTS, normalize=False)[:, :64], atol=1e-6)


def test_empty_single_string_and_empty_text(encoder):
    empty = encoder.encode([])
    assert empty.shape == (0, 384) and empty.dtype == np.float32
    assert encoder.encode([], precision="ubinary").shape == (0, 48)
    one = encoder.encode("A man is eating food.")
    assert one.shape == (1, 384)
    np.testing.assert_allclose(one[0], encoder.encode(TEXTS)[0], atol=1e-6)
    assert np.isfinite(encoder.encode([""])).all()


@pytest.mark.parametrize("bad, error, match", [
    (None, TypeError, "texts must be"),
    ([1, "a"], TypeError, r"texts\[0\]"),
    (["a", None], TypeError, r"texts\[1\]"),
    (b"bytes", TypeError, "texts must be"),
])
def test_bad_texts(encoder, bad, error, match):
    with pytest.raises(error, match=match):
        encoder.encode(bad)


@pytest.mark.parametrize("kwargs, error, match", [
    ({"precision": "float16"}, ValueError, "unknown precision"),
    ({"truncate_dim": 0}, ValueError, "truncate_dim"),
    ({"truncate_dim": 385}, ValueError, "truncate_dim"),
    ({"truncate_dim": 2.5}, TypeError, "truncate_dim"),
    ({"batch_size": 0}, ValueError, "batch_size"),
    ({"max_tokens_per_batch": -1}, ValueError, "max_tokens_per_batch"),
    ({"max_tokens_per_batch": "big"}, ValueError, "max_tokens_per_batch"),
    ({"max_tokens_per_batch": True}, ValueError, "max_tokens_per_batch"),
    ({"max_tokens_per_batch": 2.5}, ValueError, "max_tokens_per_batch"),
    ({"prompt": 3}, TypeError, "prompt"),
])
def test_bad_settings(encoder, kwargs, error, match):
    with pytest.raises(error, match=match):
        encoder.encode(["a"], **kwargs)


def test_bad_model_folders(minilm_export, tmp_path):
    with pytest.raises(ModelFolderError, match="not found"):
        Encoder.load(tmp_path / "nowhere")
    broken = tmp_path / "broken"
    shutil.copytree(minilm_export, broken)
    (broken / "model_int8.onnx").unlink()
    with pytest.raises(ModelFolderError, match="model_int8.onnx"):
        Encoder.load(broken, variant="int8")
    with pytest.raises(ValueError, match="unknown variant"):
        Encoder.load(broken, variant="fp8")
    (broken / "model.onnx").write_bytes(b"not an onnx file")
    with pytest.raises(ValueError, match="model.onnx"):
        Encoder.load(broken)
    (broken / "tokenizer.json").unlink()
    with pytest.raises(ModelFolderError, match="tokenizer.json"):
        Encoder.load(broken)
    (broken / "embedrank.json").unlink()
    with pytest.raises(ModelFolderError, match="embedrank.json"):
        Encoder.load(broken)


def test_mismatched_config_is_refused(minilm_export, tmp_path):
    folder = tmp_path / "mismatch"
    shutil.copytree(minilm_export, folder)
    config = json.loads((folder / "embedrank.json").read_text())
    config["format_version"] = 99
    (folder / "embedrank.json").write_text(json.dumps(config))
    with pytest.raises(ModelFolderError, match="format_version"):
        Encoder.load(folder)


def test_asking_for_cuda_without_it_is_a_clear_error(minilm_export):
    import onnxruntime

    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("this onnxruntime has CUDA")
    with pytest.raises(ValueError, match="CUDAExecutionProvider.*not available"):
        Encoder.load(minilm_export, providers=["CUDAExecutionProvider"])


# -- chunking ---------------------------------------------------------------------------
def test_chunk_offsets_and_overlap(encoder):
    tok = encoder.tokenizer.tokenizer
    text = LONG_TEXT
    pieces = chunk(text, encoder.tokenizer, max_tokens=50, overlap=10)
    assert len(pieces) > 3
    offsets = tok.encode(text, add_special_tokens=False).offsets
    assert pieces[0].start == offsets[0][0] and pieces[-1].end == offsets[-1][1]
    token_spans = []
    for piece in pieces:
        assert text[piece.start:piece.end] == piece.text
        inside = [i for i, (s, e) in enumerate(offsets) if s >= piece.start and e <= piece.end]
        assert len(inside) <= 50
        token_spans.append(inside)
    for previous, current in zip(token_spans, token_spans[1:]):
        assert len(set(previous) & set(current)) == 10
    covered = set().union(*map(set, token_spans))
    assert covered == set(range(len(offsets)))


def test_chunk_short_and_bad_input(encoder):
    assert [c.text for c in chunk("short text", encoder.tokenizer, 50, 10)] == ["short text"]
    assert chunk("", encoder.tokenizer, 50, 10)[0].text == ""
    with pytest.raises(ValueError, match="overlap"):
        chunk("text", encoder.tokenizer, 10, 10)
    with pytest.raises(ValueError, match="max_tokens"):
        chunk("text", encoder.tokenizer, 0, 0)
    with pytest.raises(TypeError, match="text must be a str"):
        chunk(None, encoder.tokenizer, 10, 2)
    assert default_chunking(256) == (224, 32) and default_chunking(512) == (400, 50)


def test_encode_documents_with_chunking(encoder):
    docs = [{"title": "Short", "text": "A brief note."}, LONG_TEXT, "another short one"]
    result = encoder.encode_documents(docs, chunking=True)
    assert result.embeddings.shape == (len(result.chunks), 384)
    counts = np.bincount(result.chunk_to_doc, minlength=3)
    assert counts[0] == 1 and counts[1] >= 2 and counts[2] == 1
    assert result.chunks[0].text == "Short A brief note."
    np.testing.assert_allclose(result.embeddings[0], encoder.encode(["Short A brief note."])[0], atol=1e-5)
    plain = encoder.encode_documents(docs[:1])
    np.testing.assert_allclose(plain, encoder.encode(["Short A brief note."]), atol=1e-6)


def test_aggregate_chunk_scores():
    scores = np.array([[0.1, 0.5, 0.3, 0.9], [1.0, 0.0, 0.2, 0.4]], dtype=np.float32)
    owners = np.array([0, 0, 2, 2])
    np.testing.assert_allclose(aggregate_chunk_scores(scores, owners, 3, "max"), [[0.5, -np.inf, 0.9], [1.0, -np.inf, 0.4]])
    np.testing.assert_allclose(aggregate_chunk_scores(scores, owners, 3, "mean"), [[0.3, -np.inf, 0.6], [0.5, -np.inf, 0.3]], atol=1e-6)
    with pytest.raises(ValueError, match="how"):
        aggregate_chunk_scores(scores, owners, 3, "median")
    with pytest.raises(ValueError, match="outside"):
        aggregate_chunk_scores(scores, owners, 2)


# -- cache ------------------------------------------------------------------------------
def test_cache_hit_miss_and_equal_vectors(minilm_export, tmp_path):
    with Encoder.load(minilm_export, cache=tmp_path / "cache.sqlite3") as cached:
        first = cached.encode(TEXTS[:4])
        assert cached.cache.stats["misses"] == 4
        again = cached.encode(TEXTS[:5])
        assert cached.cache.stats["hits"] == 4 and cached.cache.stats["misses"] == 5
        np.testing.assert_array_equal(again[:4], first)
        other_setting = cached.encode(TEXTS[:2], truncate_dim=64)
        assert other_setting.shape == (2, 64) and cached.cache.stats["misses"] == 7


CHILD = """
import sys, numpy as np
from embedrank import Encoder
enc = Encoder.load(sys.argv[1], cache=sys.argv[2])
np.save(sys.argv[3], enc.encode(["cached across processes", "second text"]))
enc.close()
"""


def test_cache_persists_across_processes(minilm_export, tmp_path, monkeypatch):
    path = tmp_path / "shared.sqlite3"
    subprocess.run([sys.executable, "-c", CHILD, str(minilm_export), str(path), str(tmp_path / "child.npy")],
                   check=True, timeout=300)
    with Encoder.load(minilm_export, cache=path) as cached:
        monkeypatch.setattr(Encoder, "_run_model", lambda *a, **k: pytest.fail("should have been a cache hit"))
        vectors = cached.encode(["cached across processes", "second text"])
    np.testing.assert_array_equal(vectors, np.load(tmp_path / "child.npy"))


def test_corrupt_cache_row_is_recomputed(minilm_export, tmp_path):
    path = tmp_path / "corrupt.sqlite3"
    with Encoder.load(minilm_export, cache=path) as cached:
        good = cached.encode(["a text to corrupt"])
    with sqlite3.connect(path) as db:
        row_id, data = db.execute("SELECT id, data FROM embeddings").fetchone()
        flipped = bytes([data[0] ^ 0xFF]) + data[1:]
        db.execute("UPDATE embeddings SET data = ? WHERE id = ?", (flipped, row_id))
    with Encoder.load(minilm_export, cache=path) as cached:
        again = cached.encode(["a text to corrupt"])
        assert cached.cache.stats["corrupt"] == 1
    np.testing.assert_array_equal(again, good)


# -- streaming to disk -----------------------------------------------------------------
def test_encode_to_file_streams_an_iterable(encoder, tmp_path):
    texts = [f"text number {i} about topic {i % 7}" for i in range(23)]
    out = encoder.encode_to_file((t for t in texts), tmp_path / "vectors.npy", block_size=5)
    assert isinstance(out, np.memmap) and out.shape == (23, 384)
    np.testing.assert_allclose(np.asarray(out), encoder.encode(texts), atol=1e-6)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["vectors.npy"]
    with pytest.raises(TypeError, match=r"texts\[2\]"):
        encoder.encode_to_file(["a", "b", 3], tmp_path / "bad.npy")
    assert not (tmp_path / "bad.npy").exists()
    with pytest.raises(ValueError, match=".npy"):
        encoder.encode_to_file(["a"], tmp_path / "vectors.bin")


# -- reliability: threads, long texts, thread counts, strict inputs and folders ---------
def linked_model(minilm_export, folder, config_changes: dict | None = None, skip=()):
    """A copy of the exported model made of hard links (no copying, no symlinks), with
    embedrank.json changed as asked (a value None removes the field)."""
    folder.mkdir()
    for item in minilm_export.iterdir():
        if item.name != "embedrank.json" and item.name not in skip:
            os.link(item, folder / item.name)
    config = json.loads((minilm_export / "embedrank.json").read_text())
    for name, value in (config_changes or {}).items():
        if value is None:
            config.pop(name, None)
        else:
            config[name] = value
    (folder / "embedrank.json").write_text(json.dumps(config))
    return folder


def thread_texts(n_threads: int) -> list[list[str]]:
    """Per thread, texts of different lengths: short ones, ones just over 256 tokens and ones
    over the model's 512 positions (wrong vectors or an onnxruntime error when not truncated)."""
    out = []
    for t in range(n_threads):
        out.append([f"thread {t} short text {i}" for i in range(3)]
                   + [f"thread {t} " + "ranking passages by relevance " * (70 + 40 * i) for i in range(3)])
    return out


def run_in_threads(work, n_threads: int) -> list:
    import threading

    results, errors = [None] * n_threads, []
    start = threading.Barrier(n_threads)

    def body(t):
        try:
            start.wait()
            results[t] = work(t)
        except Exception as error:  # reported by the test thread
            errors.append(repr(error))

    threads = [threading.Thread(target=body, args=(t,)) for t in range(n_threads)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors[:3]
    return results


def test_one_encoder_shared_by_threads_gives_single_threaded_vectors(encoder):
    n_threads, rounds = 6, 6
    texts = thread_texts(n_threads)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TruncationWarning)
        expected = [encoder.encode(t) for t in texts]
        got = run_in_threads(lambda t: [encoder.encode(texts[t], batch_size=2) for _ in range(rounds)], n_threads)
    for t in range(n_threads):
        for vectors in got[t]:
            np.testing.assert_allclose(vectors, expected[t], atol=1e-5)


def test_long_texts_use_memory_for_the_tokens_kept_not_their_length(minilm_export, tmp_path):
    """Eight 0.9 MB texts: peak RSS growth (Rust allocations included) stays small, and all
    eight are still counted as truncated."""
    script = tmp_path / "long.py"
    script.write_text(textwrap.dedent("""
        import sys, warnings
        from embedrank.models.encoder import Encoder

        def status(field):
            for line in open("/proc/self/status"):
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024

        enc = Encoder.load(sys.argv[1], num_threads=1)
        texts = [f"text {i} " + "relevance ranking of passages " * 30000 for i in range(8)]
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            enc.encode(texts[:1])  # warm up the session at full length
            before = status("VmRSS")
            open("/proc/self/clear_refs", "w").write("5")  # resets the peak (VmHWM) to the current RSS
            enc.encode(texts)
        growth = status("VmHWM") - before
        print(growth, [str(w.message) for w in caught][-1])
    """))
    run = subprocess.run([sys.executable, str(script), str(minilm_export)], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    growth, message = run.stdout.split(" ", 1)
    assert "8 of 8 texts were longer than max_seq_length=256" in message
    assert int(growth) < 100 * 2**20, f"peak RSS grew by {int(growth) / 2**20:.0f} MB"


def test_cut_long_texts_give_the_tokens_and_count_of_the_whole_text(encoder):
    from tokenizers import Tokenizer

    whole = Tokenizer.from_file(str(encoder.tokenizer.path))
    whole.no_padding()
    whole.enable_truncation(encoder.max_seq_length)
    budget = encoder.tokenizer.char_budget
    texts = [
        "word " * 3000,
        "a " + " " * (3 * budget) + "b " * 300,      # a whitespace run longer than the budget
        "x" * (3 * budget),                          # no whitespace: one [UNK] per 100 characters
        "东京大学" * budget,                           # CJK, no spaces
        "tab\tseparated\twords\n" * 2000,
        "y" * (budget - 1) + " z" * 400,             # the budget falls inside a word
        "short " * (budget // 6 - 1),                # just under the budget: kept whole
        "Ünïcödé façade " * 2000,
    ]
    encodings, n_cut = encoder.tokenizer.encode(texts)
    reference = whole.encode_batch(texts)
    assert [e.ids for e in encodings] == [e.ids for e in reference]
    assert n_cut == sum(1 for e in reference if e.overflowing)
    # counts are exact up to max_length, and above it for a cut text
    short_count, long_count = encoder.tokenizer.token_counts([texts[6], texts[4]])
    assert short_count == len(encoder.tokenizer.tokenizer.encode(texts[6], add_special_tokens=False).ids)
    assert long_count > encoder.max_seq_length


def test_session_threads_are_capped_per_core(minilm_export):
    from embedrank.runtime.sessions import MAX_THREADS_PER_CORE
    from embedrank.utils.threads import available_cores

    too_many = MAX_THREADS_PER_CORE * available_cores() + 1
    with pytest.raises(ValueError, match=f"num_threads={too_many} is more than {MAX_THREADS_PER_CORE} threads per core"):
        Encoder.load(minilm_export, num_threads=too_many)
    with pytest.raises(ValueError, match="at most 1024"):
        Encoder.load(minilm_export, num_threads=100000)


@pytest.mark.parametrize("bad, error, match", [
    ({"a": 1, "b": 2}, TypeError, "got dict"),
    ({"a", "b"}, TypeError, "got set"),
    (["fine", "x\ud800"], ValueError, r"texts\[1\] cannot be tokenized"),
])
def test_inputs_that_would_be_coerced_are_refused(encoder, bad, error, match):
    with pytest.raises(error, match=match):
        encoder.encode(bad)


@pytest.mark.parametrize("docs, match", [
    ([{"text": None}], r"docs\[0\]\['text'\] must be a str, got NoneType"),
    ([{"text": "ok"}, {"text": 3}], r"docs\[1\]\['text'\] must be a str, got int"),
    ([{"title": 5, "text": "ok"}], r"docs\[0\]\['title'\] must be a str or None, got int"),
])
def test_documents_with_non_str_fields_are_refused(encoder, docs, match):
    with pytest.raises(TypeError, match=match):
        encoder.encode_documents(docs)


@pytest.mark.parametrize("changes, match", [
    ({"normalize": "false"}, "'normalize' must be true or false, got str"),
    ({"max_seq_length": 2.7}, "'max_seq_length' must be an integer, got float"),
    ({"max_seq_length": True}, "'max_seq_length' must be an integer, got bool"),
    ({"max_seq_length": "256"}, "'max_seq_length' must be an integer, got str"),
    ({"max_seq_length": None}, "lacks the field 'max_seq_length'"),
    ({"dimension": 384.0}, "'dimension' must be an integer"),
    ({"pooling": 1}, "'pooling' must be a string"),
    ({"variants": ["model.onnx"]}, "'variants' must be an object"),
    ({"prompts": {"query": 3}}, "prompts.query must be a string"),
    ({"max_seq_length": 1024}, "max_seq_length=1024 does not run on model.onnx"),
    ({"dimension": 385}, "dimension is 385 but model.onnx gives 384 values per text"),
])
def test_wrong_config_fields_are_refused_at_load(minilm_export, tmp_path, changes, match):
    folder = linked_model(minilm_export, tmp_path / "m", changes)
    with pytest.raises(ModelFolderError, match=match):
        Encoder.load(folder)


@pytest.mark.parametrize("name", ["../model.onnx", "/etc/passwd", "sub/model.onnx", "..", ""])
def test_variant_files_outside_the_folder_are_refused(minilm_export, tmp_path, name):
    config = json.loads((minilm_export / "embedrank.json").read_text())
    folder = linked_model(minilm_export, tmp_path / "m", {"variants": {**config["variants"], "fp32": name}})
    with pytest.raises(ModelFolderError, match="must be a plain file name inside the folder"):
        Encoder.load(folder)


def test_symlinks_leading_outside_the_folder_are_refused(minilm_export, tmp_path):
    folder = linked_model(minilm_export, tmp_path / "m", skip={"model.onnx"})
    (folder / "model.onnx").symlink_to(minilm_export / "model.onnx")
    with pytest.raises(ModelFolderError, match="symlink to .* outside the model folder"):
        Encoder.load(folder)
    (folder / "model.onnx").unlink()
    (folder / "model.onnx").symlink_to(folder / "model_opt.onnx")  # inside the folder: fine
    assert Encoder.load(folder).encode(["x"]).shape == (1, 384)
