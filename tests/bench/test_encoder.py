"""The encoder benchmark's batching sweep, with stand-ins for the models (the real run is
`python -m embedrank.bench.encoder`): every setting is run once per system on the same seeded sample."""

from __future__ import annotations

import numpy as np

from embedrank.bench import encoder as bench


class _Recorder:
    def __init__(self):
        self.calls = []

    def encode(self, texts, batch_size=32, normalize_embeddings=True, max_tokens_per_batch="auto"):
        self.calls.append((list(texts), batch_size, max_tokens_per_batch))
        return np.zeros((len(texts), 3), dtype=np.float32)


def test_batching_sweep_runs_every_setting_on_one_sample(monkeypatch):
    monkeypatch.setattr(bench, "SWEEP_DOCUMENTS", 7)
    docs = [f"document {i}" for i in range(20)]
    st, fp32, int8 = _Recorder(), _Recorder(), _Recorder()
    result = bench.batching_sweep(docs, st, {"fp32": fp32, "int8": int8})

    assert result["documents"] == 7
    assert list(result["sentence-transformers"]) == [f"batch {b}" for b in bench.ST_BATCH_SIZES]
    expected = [f"token budget {b}, sorted" for b in bench.TOKEN_BUDGETS] + ["fixed 32 in input order"]
    for system in ("embedrank-fp32", "embedrank-int8"):
        assert list(result[system]) == expected
        assert all(rate > 0 for rate in result[system].values())
    sample = st.calls[0][0]
    assert len(sample) == 7 and len(set(sample)) == 7 and set(sample) <= set(docs)
    assert [c[1] for c in st.calls] == list(bench.ST_BATCH_SIZES)
    for encoder in (fp32, int8):
        budgets = [c[2] for c in encoder.calls[:len(bench.TOKEN_BUDGETS)]]
        assert budgets == list(bench.TOKEN_BUDGETS)
        # fixed batches: input order, no token cap, the whole sample once
        fixed = encoder.calls[len(bench.TOKEN_BUDGETS):]
        assert all(c[2] is None and c[1] == 32 for c in fixed) and sum((c[0] for c in fixed), []) == sample
        assert all(c[0] == sample for c in encoder.calls[:len(bench.TOKEN_BUDGETS)])
    # the same sample for every system and setting, and the same on a second run (seeded)
    again = _Recorder()
    bench.batching_sweep(docs, again, {"fp32": _Recorder(), "int8": _Recorder()})
    assert again.calls[0][0] == sample
    small = _Recorder()
    assert bench.batching_sweep(docs, small, {"fp32": _Recorder(), "int8": _Recorder()}, n_documents=3)["documents"] == 3
    assert len(small.calls[0][0]) == 3


def test_interleaved_passes_cover_every_text_once_per_system_in_rotating_order():
    order = []

    def system(name):
        def encode(texts):
            order.append((name, tuple(texts)))
            return np.array([[float(t.split()[1]), 1.0] for t in texts], dtype=np.float32)
        return encode

    texts = [f"text {i}" for i in range(11)]
    systems = {"a": system("a"), "b": system("b"), "c": system("c")}
    vectors, seconds = bench.interleaved_passes(systems, texts, 4)
    for name in systems:
        # every system's vectors come back whole and in input order
        assert vectors[name].dtype == np.float32 and vectors[name][:, 0].tolist() == list(range(11))
        assert len(seconds[name]) == 4 and all(s >= 0 for s in seconds[name])
    chunks = [order[i:i + 3] for i in range(0, len(order), 3)]
    assert [[name for name, _ in chunk] for chunk in chunks] == [["a", "b", "c"], ["b", "c", "a"], ["c", "a", "b"], ["a", "b", "c"]]
    for chunk in chunks:  # every system sees the same slice within a chunk; slices are consecutive
        assert len({texts for _, texts in chunk}) == 1
    assert sum((list(chunk[0][1]) for chunk in chunks), []) == texts
    # more chunks than texts: one text a chunk; one chunk: the whole list at once
    _, seconds = bench.interleaved_passes({"a": system("a")}, texts[:2], 5)
    assert len(seconds["a"]) == 2
    _, seconds = bench.interleaved_passes({"a": system("a")}, texts, 1)
    assert len(seconds["a"]) == 1


def test_chunk_ratios_are_reference_seconds_over_own_seconds():
    seconds = {"ref": [2.0, 4.0, 3.0], "fast": [1.0, 1.0, 3.0]}
    ratios = bench.chunk_ratios(seconds, "ref")
    assert ratios["ref"] == {"median": 1.0, "min": 1.0, "max": 1.0}
    assert ratios["fast"] == {"median": 2.0, "min": 1.0, "max": 4.0}


def test_seeded_sample_is_reproducible_distinct_and_in_corpus_order():
    docs = [f"document {i}" for i in range(50)]
    sample = bench.seeded_sample(docs, 12)
    assert sample == bench.seeded_sample(docs, 12) and len(set(sample)) == 12
    assert sample == sorted(sample, key=docs.index)
    assert bench.seeded_sample(docs, 500) == docs
