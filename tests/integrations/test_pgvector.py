"""PgVectorIndex against a real Postgres 18 + pgvector 0.8 (the embedded server of conftest.py):
the same answers and the same errors as FlatIndex, COPY atomicity, server restarts, hostile names."""

from __future__ import annotations

import importlib
import sys
import threading
import time
from types import SimpleNamespace

import numpy as np
import pytest

from embedrank.errors import (IndexFormatError, InvalidTypeError, InvalidValueError, MissingDependencyError,
                              UnknownIdError)
from embedrank.index import FlatIndex, load_index
from embedrank.models.encoder import Encoder
from embedrank.retrieval.retriever import Retriever

psycopg = pytest.importorskip("psycopg", reason="needs psycopg 3: pip install 'embedrank[pgvector]'")
pgvector_module = importlib.import_module("embedrank.integrations.pgvector")
PgVectorIndex = pgvector_module.PgVectorIndex

DIM = 24


def unit_rows(n: int, dim: int = DIM, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


_counter = iter(range(10**6))


@pytest.fixture
def name():
    """A fresh table name per test."""
    return f"t{next(_counter)}_{int(time.time() * 1000) % 10**8}"


@pytest.fixture
def admin(pg):
    """An autocommit connection for poking at the tables behind the index's back."""
    with psycopg.connect(pg.conninfo(), autocommit=True) as conn:
        yield conn


def open_index(pg, name, dim=DIM, **kwargs) -> PgVectorIndex:
    return PgVectorIndex(pg.conninfo(), name, dim, **kwargs)


def assert_same_results(got, want, atol=1e-5):
    """ids equal and scores within atol, except that two hits whose scores are within atol may swap."""
    assert got.ids.shape == want.ids.shape
    np.testing.assert_allclose(got.scores, want.scores, atol=atol, rtol=0)
    for g_row, w_row, s_row in zip(got.ids.tolist(), want.ids.tolist(), want.scores.tolist()):
        for column, (g, w) in enumerate(zip(g_row, w_row)):
            if g != w:
                near = [w_row[j] for j in range(len(w_row)) if abs(s_row[j] - s_row[column]) <= 2 * atol]
                assert g in near, (g_row, w_row)


# -- same answers as FlatIndex -------------------------------------------------------------------------
@pytest.mark.parametrize("precision, rescore, flat", [
    ("float32", None, {"precision": "float32"}),
    ("binary", "float32", {"precision": "binary", "rescore": "float32"}),
    ("binary", None, {"precision": "binary", "rescore": None}),
])
def test_exact_search_equals_flat_index(pg, name, precision, rescore, flat):
    x, queries = unit_rows(3000), unit_rows(25, seed=1)
    index = open_index(pg, name, precision=precision, rescore=rescore)
    reference = FlatIndex(DIM, **flat)
    for part in np.array_split(np.arange(3000), 3):  # several adds: ids and ties follow insertion order
        assert index.add(x[part]).tolist() == reference.add(x[part]).tolist()
    assert len(index) == 3000 and index.ids().tolist() == list(range(3000))
    for k in (1, 10, 57):
        assert_same_results(index.search(queries, k, exact=True), reference.search(queries, k))
    single = index.search(queries[0], 5)  # one query as [dim]; no ANN index: the scan is exact too
    assert single.ids.shape == (1, 5)
    assert_same_results(single, reference.search(queries[0], 5))


def test_float16_scores_are_those_of_the_rounded_vectors(pg, name):
    x, queries = unit_rows(1000), unit_rows(10, seed=2)
    index = open_index(pg, name, precision="float16")
    index.add(x)
    reference = FlatIndex(DIM)
    reference.add(x.astype(np.float16).astype(np.float32))
    assert_same_results(index.search(queries, 10), reference.search(queries.astype(np.float16).astype(np.float32), 10))
    with pytest.raises(InvalidValueError, match="beyond float16's range"):
        index.add(np.full((1, DIM), 7e4, dtype=np.float32))
    assert len(index) == 1000


def test_str_ids_metadata_and_padding(pg, name):
    x = unit_rows(6)
    index, reference = open_index(pg, name), FlatIndex(DIM)
    ids = ["a", "b", "c", "d", "e", "é"]
    meta = [{"n": i, "tag": "x"} if i % 2 else None for i in range(6)]
    index.add(x, ids=ids, metadata=meta)
    reference.add(x, ids=ids, metadata=meta)
    got, want = index.search(x[:2], 8, return_metadata=True), reference.search(x[:2], 8, return_metadata=True)
    assert got.ids.dtype == object and got.ids.tolist() == want.ids.tolist()  # padding None past 6
    assert got.metadata == want.metadata
    np.testing.assert_allclose(got.scores, want.scores, atol=1e-5)
    assert index.get_metadata(["b", "a"]) == [{"n": 1, "tag": "x"}, None]
    assert "é" in index and "z" not in index and 1 not in index and None not in index
    assert index.ids().tolist() == ids
    big = index.search(x[0], 5000)  # k far above the size: padding stops at MAX_PADDED_K columns
    assert big.ids.shape == reference.search(x[0], 5000).ids.shape == (1, 1024)


def test_an_empty_or_missing_table_answers_like_an_empty_index(pg, name):
    index = open_index(pg, name)
    assert len(index) == 0 and index.ids().tolist() == [] and 3 not in index
    result = index.search(unit_rows(2), 3, filter={"a": 1})
    assert result.ids.tolist() == [[-1] * 3] * 2 and np.isneginf(result.scores).all()
    assert index.add(np.empty((0, DIM), dtype=np.float32)).tolist() == []
    with pytest.raises(UnknownIdError, match=r"ids not in the index: \[3\]"):
        index.remove([3])
    with pytest.raises(InvalidValueError, match="add vectors first"):
        index.create_index("hnsw")


METADATA = [
    {"lang": "en", "year": 2020, "score": 0.5, "flag": True, "tags": ["a", "b"], "n": None, "s": "1"},
    {"lang": "de", "year": 2021, "score": 1.0, "flag": False, "tags": "a", "s": 1},
    {"lang": "en", "year": 2021.0, "score": 1, "flag": 1, "nested": {"lang": "en"}},
    None,
    {"lang": "fr", "year": 2019, "quote": "it's \"x\"; DROP TABLE t; --"},
    {"lang": "en", "year": 2022, "flag": True, "n": 0},
]
FILTERS = [
    {"lang": "en"}, {"lang": ["en", "fr"]}, {"year": 2021}, {"year": [2020, 2021]}, {"year": 2021.0},
    {"score": 1}, {"score": 0.5}, {"flag": True}, {"flag": 1}, {"flag": [True, False]}, {"lang": "en", "year": 2021},
    {"missing": 1}, {"lang": []}, {}, {"n": None}, {"tags": "a"}, {"s": "1"}, {"s": 1}, {"lang": ("de",)},
    {"quote": "it's \"x\"; DROP TABLE t; --"}, {"it's": "x"}, {"nested": "en"},
]


@pytest.mark.parametrize("filter", FILTERS + [[0, 2, 5], [4], [], range(3), {3, 5}, np.array([1, 99])],
                         ids=lambda f: repr(f)[:40])
def test_filters_equal_flat_index(pg, filter, request):
    index = request.getfixturevalue("filter_index")
    reference = request.getfixturevalue("filter_reference")
    queries = unit_rows(3, seed=5)
    got = index.search(queries, 4, filter=filter, return_metadata=True)
    want = reference.search(queries, 4, filter=filter, return_metadata=True)
    assert got.ids.tolist() == want.ids.tolist()
    assert got.metadata == want.metadata
    np.testing.assert_allclose(got.scores, want.scores, atol=1e-5)


@pytest.fixture(scope="module")
def filter_data():
    return unit_rows(len(METADATA), seed=4)


@pytest.fixture(scope="module")
def filter_index(pg_server, filter_data):
    index = PgVectorIndex(pg_server.conninfo(), "filters_shared", DIM)
    index.drop_table()
    index = PgVectorIndex(pg_server.conninfo(), "filters_shared", DIM)
    index.add(filter_data, metadata=METADATA)
    yield index
    index.close()


@pytest.fixture(scope="module")
def filter_reference(filter_data):
    reference = FlatIndex(DIM)
    reference.add(filter_data, metadata=METADATA)
    return reference


def test_filters_use_containment_a_gin_index_can_serve(pg, name, admin):
    index = open_index(pg, name)
    index.add(unit_rows(3000), metadata=[{"g": i % 100} for i in range(3000)])
    gin = index.create_metadata_index()
    admin.execute("ANALYZE " + name)
    admin.execute("SET enable_seqscan = off")
    plan = "\n".join(row[0] for row in admin.execute(
        f"EXPLAIN SELECT id FROM {name} WHERE metadata @> %s::jsonb", ('{"g": 7}',)))
    assert gin in plan
    found = index.search(unit_rows(1), 50, filter={"g": 7}).ids[0]
    assert sorted(found[found >= 0].tolist()) == list(range(7, 3000, 100)) and (found[30:] == -1).all()


# -- same errors as FlatIndex --------------------------------------------------------------------------
def raised(call):
    try:
        call()
    except Exception as exc:  # noqa: BLE001 - the point is to compare what was raised
        return exc
    return None


BAD_CALLS = [
    ("add", lambda ix: ix.add(np.ones((2, DIM + 1), dtype=np.float32))),
    ("add", lambda ix: ix.add(np.ones(3, dtype=np.float32))),
    ("add", lambda ix: ix.add(np.array([[np.nan] * DIM], dtype=np.float32))),
    ("add", lambda ix: ix.add(np.array([[1e300] * DIM]))),
    ("add", lambda ix: ix.add(np.ones((1, DIM), dtype=np.int64))),
    ("add", lambda ix: ix.add(None)),
    ("add", lambda ix: ix.add(np.ones((2, DIM), dtype=np.float32), ids=[10, 10])),
    ("add", lambda ix: ix.add(np.ones((2, DIM), dtype=np.float32), ids=[1, 10])),
    ("add", lambda ix: ix.add(np.ones((2, DIM), dtype=np.float32), ids=[10])),
    ("add", lambda ix: ix.add(np.ones((2, DIM), dtype=np.float32), ids=[10, "x"])),
    ("add", lambda ix: ix.add(np.ones((2, DIM), dtype=np.float32), ids=["x", "y"])),
    ("add", lambda ix: ix.add(np.ones((2, DIM), dtype=np.float32), ids=[10, -3])),
    ("add", lambda ix: ix.add(np.ones((2, DIM), dtype=np.float32), ids=[10.0, 11.0])),
    ("add", lambda ix: ix.add(np.ones((2, DIM), dtype=np.float32), ids=[10, 11], metadata=[{"a": 1}])),
    ("add", lambda ix: ix.add(np.ones((2, DIM), dtype=np.float32), ids=[10, 11], metadata=[{"a": float("nan")}, None])),
    ("add", lambda ix: ix.add(np.ones((2, DIM), dtype=np.float32), ids=[10, 11], metadata=[{1: "x"}, None])),
    ("add", lambda ix: ix.add(np.ones((2, DIM), dtype=np.float32), ids=[10, 11], metadata=[{"b": object()}, None])),
    ("search", lambda ix: ix.search(np.ones(DIM, dtype=np.float32), 0)),
    ("search", lambda ix: ix.search(np.ones(DIM, dtype=np.float32), 2.0)),
    ("search", lambda ix: ix.search(np.ones(DIM + 2, dtype=np.float32), 2)),
    ("search", lambda ix: ix.search(np.full(DIM, np.nan, dtype=np.float32), 2)),
    ("search", lambda ix: ix.search(np.ones(DIM, dtype=np.float32), 2, filter={"lang": {"$ne": "en"}})),
    ("search", lambda ix: ix.search(np.ones(DIM, dtype=np.float32), 2, filter={"lang": [["en"]]})),
    ("search", lambda ix: ix.search(np.ones(DIM, dtype=np.float32), 2, filter={"year": float("nan")})),
    ("search", lambda ix: ix.search(np.ones(DIM, dtype=np.float32), 2, filter={3: "en"})),
    ("search", lambda ix: ix.search(np.ones(DIM, dtype=np.float32), 2, filter="en")),
    ("search", lambda ix: ix.search(np.ones(DIM, dtype=np.float32), 2, filter=["a", "b"])),
    ("search", lambda ix: ix.search(np.ones(DIM, dtype=np.float32), 2, filter=[1.5])),
    ("remove", lambda ix: ix.remove([0, 7, 1, 9])),
    ("remove", lambda ix: ix.remove(4)),
    ("remove", lambda ix: ix.remove(list(range(100, 130)))),
    ("remove", lambda ix: ix.remove(["a"])),
    ("remove", lambda ix: ix.remove(1.0)),
    ("get_metadata", lambda ix: ix.get_metadata([0, 42])),
]


def test_bad_input_raises_what_flat_index_raises_and_changes_nothing(pg, name):
    index, reference = open_index(pg, name), FlatIndex(DIM)
    x = unit_rows(4)
    meta = [{"lang": "en"}, {"lang": "de"}, None, {"year": 2020}]
    index.add(x, metadata=meta)
    reference.add(x, metadata=meta)
    for what, call in BAD_CALLS:
        want, got = raised(lambda: call(reference)), raised(lambda: call(index))
        assert want is not None, what
        assert type(got) is type(want) and str(got) == str(want), (what, got, want)
        assert index.ids().tolist() == [0, 1, 2, 3]
        assert index.get_metadata([0, 1, 2, 3]) == meta
    with pytest.raises(InvalidTypeError, match=r"unknown parameter\(s\) \['ef'\].*accepted: \['ef_search', 'exact'"):
        index.search(x[0], 2, ef=3)


def test_postgres_specific_bad_input(pg, name):
    index = open_index(pg, name)
    with pytest.raises(InvalidValueError, match="NUL character"):
        index.add(unit_rows(1), ids=["a\x00b"])
    with pytest.raises(InvalidValueError, match=r"metadata\[1\] holds a NUL"):
        index.add(unit_rows(2), ids=["a", "b"], metadata=[{"ok": "a\\u0000"}, {"k": "x\x00"}])
    assert len(index) == 0
    index.add(unit_rows(1), ids=["a"], metadata=[{"ok": "a\\u0000"}])  # a backslash, not a NUL
    assert index.get_metadata("a") == [{"ok": "a\\u0000"}]
    assert "a\x00" not in index  # an id the table cannot hold is simply absent
    with pytest.raises(UnknownIdError, match="ids not in the index"):
        index.remove(["a", "a\x00"])
    with pytest.raises(UnknownIdError, match="ids not in the index"):
        index.get_metadata(["a\x00"])
    assert index.search(unit_rows(1), 2, filter=["a\x00", "a"]).ids.tolist() == [["a", None]]
    assert index.ids().tolist() == ["a"]
    for kwargs, error in [({"precision": "fp16"}, InvalidValueError), ({"rescore": "int8"}, InvalidValueError),
                          ({"id_kind": "uuid"}, InvalidValueError), ({"ef_search": 0}, InvalidValueError),
                          ({"ef_search": 1001}, InvalidValueError), ({"oversample": 1.5}, InvalidTypeError)]:
        with pytest.raises(error):
            open_index(pg, name + "x", **kwargs)
    with pytest.raises(InvalidTypeError, match="connection string or a psycopg Connection"):
        PgVectorIndex(42, name, DIM)
    for kwargs, error, match in [({"ef_search": 0}, InvalidValueError, "ef_search"), ({"exact": 1}, InvalidTypeError, "bool"),
                                 ({"probes": "2"}, InvalidTypeError, "probes")]:
        with pytest.raises(error, match=match):
            index.search(unit_rows(1), 1, **kwargs)
    for kwargs, match in [({"kind": "ivf"}, "kind"), ({"m": 1}, "m must"), ({"m": 16, "ef_construction": 8}, ">= 2 \\* m"),
                          ({"maintenance_work_mem": "1GB'; DROP TABLE x; --"}, "maintenance_work_mem")]:
        with pytest.raises(InvalidValueError, match=match):
            index.create_index(**kwargs)


# -- writes: upsert, remove, auto ids ---------------------------------------------------------------------
def test_upsert_remove_and_auto_ids_follow_flat_index(pg, name):
    index, reference = open_index(pg, name), FlatIndex(DIM)
    x = unit_rows(40, seed=7)
    both = (index, reference)
    for ix in both:
        ix.add(x[:10], metadata=[{"i": i} for i in range(10)])
        ix.add(x[10:20], ids=np.arange(100, 110))
        ix.remove([109, 3])
        ix.add(x[20:25], ids=[4, 200, 5, 201, 202], metadata=[{"new": 1}, None, None, {"new": 2}, None], upsert=True)
        ix.add(x[25:28])  # auto ids: one past the largest id ever held (202, then 109 removed earlier)
    assert index.upsert(x[28:30], ids=[0, 300]).tolist() == reference.add(x[28:30], ids=[0, 300], upsert=True).tolist()
    assert index.ids().tolist() == reference.ids().tolist()
    assert index.get_metadata(index.ids()) == reference.get_metadata(reference.ids())
    queries = unit_rows(8, seed=8)
    assert_same_results(index.search(queries, 12, exact=True), reference.search(queries, 12))
    for ix in both:
        ix.remove(list(ix.ids()[:5]))
        ix.add(x[30:31])
    assert index.ids().tolist() == reference.ids().tolist() and len(index) == len(reference)
    assert index.get_metadata([201, 200]) == reference.get_metadata([201, 200]) == [{"new": 2}, None]
    with pytest.raises(InvalidValueError, match="upsert needs ids"):
        index.upsert(x[:1], None)


# -- COPY atomicity -----------------------------------------------------------------------------------------
def test_a_row_failing_mid_copy_writes_nothing(pg, name, admin):
    index = open_index(pg, name)
    index.add(unit_rows(10), metadata=[{"i": i} for i in range(10)])
    admin.execute(f"ALTER TABLE {name} ADD CONSTRAINT no_poison CHECK (NOT (metadata ? 'poison'))")
    x = unit_rows(9000, seed=3)
    meta = [{"i": i} for i in range(9000)]
    meta[-1] = {"poison": 1}  # the very last row of the third COPY batch
    with pytest.raises(psycopg.errors.CheckViolation):
        index.add(x, ids=np.arange(100, 9100), metadata=meta)
    assert len(index) == 10 and index.ids().tolist() == list(range(10))
    with pytest.raises(psycopg.errors.CheckViolation):  # the upsert path (staging table + INSERT) too
        index.add(x[:3], ids=[0, 1, 500], metadata=[{"i": 0}, {"poison": 1}, None], upsert=True)
    assert index.get_metadata([0, 1]) == [{"i": 0}, {"i": 1}] and 500 not in index
    meta[-1] = {"i": -1}
    index.add(x, ids=np.arange(100, 9100), metadata=meta)
    assert len(index) == 9010


def test_an_interrupt_mid_copy_writes_nothing(pg, name, monkeypatch):
    index = open_index(pg, name, precision="binary")
    index.add(unit_rows(5))
    real, calls = pgvector_module.encode_bits, []

    def interrupted(x):
        calls.append(len(x))
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(x)

    monkeypatch.setattr(pgvector_module, "encode_bits", interrupted)
    with pytest.raises(KeyboardInterrupt):
        index.add(unit_rows(6000, seed=9))
    monkeypatch.undo()
    assert calls == [4096, 1904] and len(index) == 5
    assert index.add(unit_rows(2, seed=10)).tolist() == [6005, 6006]  # the sequence skipped the failed ids


def test_a_backend_killed_mid_copy_raises_and_writes_nothing(pg, name, admin):
    index = open_index(pg, name)
    index.add(unit_rows(3))
    admin.execute(f"""CREATE FUNCTION {name}_kill() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN IF NEW.metadata ? 'kill' THEN PERFORM pg_terminate_backend(pg_backend_pid()); END IF; RETURN NEW; END $$""")
    admin.execute(f"CREATE TRIGGER kill BEFORE INSERT ON {name} FOR EACH ROW EXECUTE FUNCTION {name}_kill()")
    meta = [None] * 5000
    meta[4500] = {"kill": True}
    with pytest.raises(psycopg.OperationalError, match="nothing was written; the next call reconnects"):
        index.add(unit_rows(5000, seed=11), metadata=meta)
    assert len(index) == 3  # this call reconnected by itself
    admin.execute(f"DROP TRIGGER kill ON {name}")
    index.add(unit_rows(5000, seed=11), metadata=meta)
    assert len(index) == 5003


# -- restarts ---------------------------------------------------------------------------------------------
def test_a_restart_between_calls_is_invisible_with_a_connection_string(pg, name):
    index = open_index(pg, name)
    x = unit_rows(200, seed=12)
    index.add(x[:100])
    before = index.search(x[:3], 5)
    pg.restart()
    np.testing.assert_array_equal(index.search(x[:3], 5).ids, before.ids)  # a read reconnects
    pg.restart()
    index.add(x[100:])  # a write that failed on its first statement (nothing sent) is run again
    assert len(index) == 200
    pg.stop()
    with pytest.raises(psycopg.OperationalError):
        index.search(x[:1], 1)  # no server: the error, not a hang
    pg.start()
    assert index.search(x[:1], 1).ids.tolist() == [[0]]


def test_a_restart_with_a_passed_connection_is_a_clear_error(pg, name):
    with psycopg.connect(pg.conninfo()) as conn:  # not autocommit: the index works in transactions on it
        index = PgVectorIndex(conn, name, DIM)
        index.add(unit_rows(4))
        pg.restart()
        with pytest.raises(psycopg.OperationalError, match="was given a connection, which cannot be reopened"):
            index.search(unit_rows(1), 1)
        with pytest.raises(psycopg.OperationalError, match="is closed"):
            index.add(unit_rows(1))
    assert len(open_index(pg, name)) == 4


def test_a_restart_mid_write_raises_and_writes_nothing(pg, name, admin):
    index = open_index(pg, name)
    index.add(unit_rows(3))
    admin.execute(f"""CREATE FUNCTION {name}_slow() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN IF NEW.metadata ? 'slow' THEN PERFORM pg_sleep(5); END IF; RETURN NEW; END $$""")
    admin.execute(f"CREATE TRIGGER slow BEFORE INSERT ON {name} FOR EACH ROW EXECUTE FUNCTION {name}_slow()")
    meta = [None] * 3000
    meta[2000] = {"slow": True}
    restarter = threading.Timer(0.8, pg.restart)
    restarter.start()
    try:
        with pytest.raises(psycopg.OperationalError, match="nothing was written"):
            index.add(unit_rows(3000, seed=13), metadata=meta)
    finally:
        restarter.join()
    assert len(index) == 3 and index.ids().tolist() == [0, 1, 2]


def test_a_write_inside_the_callers_transaction_is_the_callers_to_commit(pg, name):
    with psycopg.connect(pg.conninfo()) as conn:
        index = PgVectorIndex(conn, name, DIM, id_kind="str")  # id_kind: created (and committed) now
        conn.execute("SELECT 1")  # the caller opens a transaction ...
        index.add(unit_rows(2), ids=["a", "b"])  # ... the add is a savepoint inside it
        assert len(index) == 2
        conn.rollback()
        assert len(index) == 0 and len(open_index(pg, name)) == 0
        index.add(unit_rows(2), ids=["a", "b"])  # idle connection: the add commits by itself
    assert open_index(pg, name).ids().tolist() == ["a", "b"]


# -- server-side ANN indexes ------------------------------------------------------------------------------
def recall(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(f) & set(t)) / len(t) for f, t in zip(found.tolist(), truth.tolist())]))


def test_hnsw_and_ivfflat_run_server_side_with_good_recall(pg, name, admin):
    x, queries = unit_rows(4000, seed=14), unit_rows(40, seed=15)
    index = open_index(pg, name)
    index.add(x)
    truth = index.search(queries, 10).ids
    reference = FlatIndex(DIM)
    reference.add(x)
    assert_same_results(index.search(queries, 10), reference.search(queries, 10))
    hnsw = index.create_index("hnsw", m=16, ef_construction=64, maintenance_work_mem="64MB")
    assert index.ann_index() == ("hnsw", hnsw)
    assert f"Index Scan using {hnsw}" in index.explain(queries[0], 10)  # the graph answers, not a table scan
    assert hnsw not in index.explain(queries[0], 10, exact=True)
    assert recall(index.search(queries, 10, ef_search=100).ids, truth) >= 0.9
    assert_same_results(index.search(queries, 10, exact=True), reference.search(queries, 10))
    filtered = index.search(queries[:5], 10, filter={"none": 1})
    assert (filtered.ids == -1).all()
    index.add(unit_rows(50, seed=16), metadata=[{"rare": True}] * 50)  # 1.2% of rows: k found all the same
    rare = index.search(queries, 10, filter={"rare": True}, ef_search=40)
    assert (rare.ids >= 4000).all()
    truth = index.search(queries, 10, exact=True).ids  # the 50 new rows are candidates too
    ivf = index.create_index("ivfflat", lists=16)
    assert index.ann_index() == ("ivfflat", ivf)  # replaced the hnsw index
    assert f"Index Scan using {ivf}" in index.explain(queries[0], 10)
    assert recall(index.search(queries, 10, probes=16).ids, truth) == 1.0  # every list probed: exact
    assert recall(index.search(queries, 10, probes=1).ids, truth) < 1.0
    index.drop_index()
    assert index.ann_index() is None


def test_binary_hamming_candidates_from_an_hnsw_index_rescored_in_sql(pg, name):
    x, queries = unit_rows(3000, dim=64, seed=17), unit_rows(30, dim=64, seed=18)
    index = open_index(pg, name, dim=64, precision="binary", rescore="float32")
    index.add(x)
    exact, cascade = FlatIndex(64), FlatIndex(64, "binary", rescore="float32", oversample=4)
    exact.add(x)
    cascade.add(x)
    truth = exact.search(queries, 10)
    bits = index.create_index("hnsw", m=16, ef_construction=64)
    assert f"Index Scan using {bits}" in index.explain(queries[0], 10, oversample=4)  # Hamming candidates from the graph
    found = index.search(queries, 10, oversample=4, ef_search=200)
    # sign bits of random 64-d vectors are a coarse first pass: the graph should lose little to an exact Hamming scan
    assert recall(found.ids, truth.ids) >= recall(cascade.search(queries, 10).ids, truth.ids) - 0.05
    exact_scores = np.einsum("qkd,qd->qk", x[found.ids], queries)  # rescored exactly, in SQL, and sorted
    np.testing.assert_allclose(found.scores, exact_scores, atol=1e-5)
    assert (np.diff(found.scores, axis=1) <= 0).all()


# -- names and values that look like SQL ---------------------------------------------------------------------
@pytest.mark.parametrize("bad", ["t; DROP TABLE canary", 'x"; DROP TABLE canary; --', "Docs", "1abc", "a" * 64,
                                 "public.canary", "../etc", "", "tab le", "é"])
def test_table_and_schema_names_must_be_plain_identifiers(pg, admin, bad):
    admin.execute("CREATE TABLE IF NOT EXISTS canary (x int)")
    with pytest.raises(InvalidValueError, match="lowercase SQL identifier"):
        PgVectorIndex(pg.conninfo(), bad, DIM)
    with pytest.raises(InvalidValueError, match="lowercase SQL identifier"):
        PgVectorIndex(pg.conninfo(), "fine", DIM, schema=bad)
    with pytest.raises(InvalidTypeError):
        PgVectorIndex(pg.conninfo(), None, DIM)
    assert admin.execute("SELECT to_regclass('canary')").fetchone()[0] is not None


def test_ids_metadata_and_filters_that_look_like_sql_are_just_data(pg, name, admin):
    admin.execute("CREATE TABLE IF NOT EXISTS canary (x int)")
    hostile = ["'); DROP TABLE canary; --", "\"; DROP TABLE canary; --", "$$; DROP TABLE canary; $$", "%s", "%(q)s",
               "a' OR '1'='1", "\\", "{}", "🙂"]
    index = open_index(pg, name)
    meta = [{value: value, "k'); DROP TABLE canary; --": value} for value in hostile]
    index.add(unit_rows(len(hostile)), ids=hostile, metadata=meta)
    assert index.ids().tolist() == hostile
    assert index.get_metadata(hostile) == meta
    for value in hostile:
        assert value in index
        found = index.search(unit_rows(1), 20, filter={value: value})
        assert [i for i in found.ids[0].tolist() if i is not None] == [value]
        found = index.search(unit_rows(1), 20, filter={"k'); DROP TABLE canary; --": [value, "other"]})
        assert [i for i in found.ids[0].tolist() if i is not None] == [value]
    assert index.search(unit_rows(1), 20, filter=hostile[:2]).ids[0, :2].tolist().count(None) == 0
    index.remove(hostile[:3])
    assert index.ids().tolist() == hostile[3:]
    assert admin.execute("SELECT to_regclass('canary')").fetchone()[0] is not None


def test_an_existing_foreign_table_is_refused_and_settings_must_match(pg, name, admin):
    admin.execute(f"CREATE TABLE {name} (id bigint PRIMARY KEY, body text)")
    with pytest.raises(IndexFormatError, match="is not a PgVectorIndex table"):
        open_index(pg, name)
    admin.execute(f"DROP TABLE {name}")
    admin.execute(f"CREATE VIEW {name} AS SELECT 1 AS x")
    with pytest.raises(IndexFormatError, match="is not a table"):
        open_index(pg, name)
    admin.execute(f"DROP VIEW {name}")
    open_index(pg, name, precision="binary", rescore="float16").add(unit_rows(2))
    reopened = PgVectorIndex(pg.conninfo(), name)  # dim and precision read from the table
    assert (reopened.dim, reopened.precision, reopened.rescore) == (DIM, "binary", "float16")
    with pytest.raises(InvalidValueError, match="holds 24-dimensional vectors, not 25"):
        open_index(pg, name, dim=25)
    with pytest.raises(InvalidValueError, match="has precision='binary', rescore='float16'"):
        open_index(pg, name, precision="float32")
    with pytest.raises(InvalidValueError, match="does not exist: pass dim="):
        PgVectorIndex(pg.conninfo(), name + "_nothing")


# -- save / load and the Retriever -----------------------------------------------------------------------------
def test_save_writes_a_reference_that_load_index_reopens(pg, name, tmp_path):
    index = PgVectorIndex(pg.conninfo() + " password=secret", name, DIM, precision="binary", ef_search=77)
    index.add(unit_rows(20), ids=[f"d{i}" for i in range(20)])
    path = index.save(tmp_path / "ix")
    assert "secret" not in (path / "manifest.json").read_text()
    loaded = load_index(path)
    assert isinstance(loaded, PgVectorIndex) and loaded.ef_search == 77 and loaded.precision == "binary"
    assert loaded.ids().tolist() == index.ids().tolist()
    queries = unit_rows(3, seed=20)
    assert loaded.search(queries, 5).ids.tolist() == index.search(queries, 5).ids.tolist()
    with psycopg.connect(pg.conninfo(), autocommit=True) as conn:
        assert len(PgVectorIndex.load(path, connection=conn)) == 20
    index.drop_table()
    with pytest.raises(IndexFormatError, match="does not exist any more"):
        load_index(path)


class HashingEncoder(Encoder):
    """A stand-in bi-encoder (no model files): words hashed into `dim` buckets, L2-normalized."""

    def __init__(self, dim: int = DIM):  # no ONNX session behind it
        self._dim = dim
        self.cache, self._owns_cache, self.variant = None, False, "fp32"
        self.config = SimpleNamespace(path="hashing-encoder", fingerprint="", kind="bi-encoder")

    @property
    def dim(self) -> int:
        return self._dim

    def encode(self, texts, batch_size: int = 32, **kwargs) -> np.ndarray:
        texts = [texts] if isinstance(texts, str) else list(texts)
        out = np.zeros((len(texts), self._dim), dtype=np.float32)
        for row, text in enumerate(texts):
            for word in text.lower().split():
                out[row, sum(word.encode()) % self._dim] += 1.0
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)

    def encode_queries(self, texts, **kwargs) -> np.ndarray:
        return self.encode(texts)

    def encode_documents(self, docs, chunking: bool = False, **kwargs):
        assert not chunking
        return self.encode([f"{d.get('title', '')} {d['text']}" if isinstance(d, dict) else d for d in docs])


def test_a_retriever_uses_postgres_as_its_store(pg, name, tmp_path):
    corpus = {"cats": "cats purr and sleep", "dogs": "dogs bark at night", "fish": "fish swim in water",
              "birds": "birds sing at dawn", "mixed": "cats and dogs and fish"}
    queries = ["cats sleep", "dogs bark", "water fish"]
    encoder = HashingEncoder()
    in_pg = Retriever(encoder, open_index(pg, name), chunking=False, candidates=5, top_k=3)
    in_memory = Retriever(encoder, FlatIndex(DIM), chunking=False, candidates=5, top_k=3)
    for retriever in (in_pg, in_memory):
        assert retriever.add(corpus) == list(corpus)
    got, want = in_pg.search(queries), in_memory.search(queries)
    assert [[h.doc_id for h in hits] for hits in got] == [[h.doc_id for h in hits] for hits in want]
    assert got[0][0].doc_id == "cats"
    for g, w in zip(got, want):
        assert [h.score for h in g] == pytest.approx([h.score for h in w], abs=1e-5)
    in_pg.save(tmp_path / "retriever")
    reopened = Retriever.load(tmp_path / "retriever", encoder=encoder)
    assert isinstance(reopened.index, PgVectorIndex)
    assert [[h.doc_id for h in hits] for hits in reopened.search(queries)] == [[h.doc_id for h in hits] for hits in got]


# -- encodings and the missing extra --------------------------------------------------------------------------
def test_binary_encodings_match_the_pgvector_package():
    pgvector = pytest.importorskip("pgvector")
    x = np.random.default_rng(0).standard_normal((3, 13)).astype(np.float32)
    for row, vector, half, bits in zip(x, pgvector_module.encode_vectors(x, "vector"),
                                       pgvector_module.encode_vectors(x, "halfvec"), pgvector_module.encode_bits(x)):
        assert vector.tobytes() == pgvector.Vector(row).to_binary()
        assert half.tobytes() == pgvector.HalfVector(row.astype(np.float16).tolist()).to_binary()
        assert bits.tobytes() == pgvector.Bit(row > 0).to_binary()


def test_without_psycopg_the_import_says_which_extra_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "psycopg", None)
    monkeypatch.delitem(sys.modules, "embedrank.integrations.pgvector")
    with pytest.raises(MissingDependencyError, match=r"pip install 'embedrank\[pgvector\]'"):
        importlib.import_module("embedrank.integrations.pgvector")
