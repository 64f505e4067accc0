"""Every bad input to FlatIndex (and the shared BaseIndex protocol) gets a clear exception,
and leaves the index unchanged."""

from __future__ import annotations

import numpy as np
import pytest

from embedrank.index import FlatIndex, IndexFormatError, load_index
from embedrank.kernels import Int8Quantizer


@pytest.fixture
def index():
    ix = FlatIndex(4)
    ix.add(np.eye(4, dtype=np.float32), metadata=[{"lang": "en"}, {"lang": "de"}, None, {"year": 2020}])
    return ix


def unchanged(ix: FlatIndex) -> None:
    assert len(ix) == 4 and ix.ids().tolist() == [0, 1, 2, 3]
    assert ix.search(np.eye(4, dtype=np.float32), 1).ids.ravel().tolist() == [0, 1, 2, 3]


# -- constructor -------------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs, error, match", [
    ({"dim": 0}, ValueError, "dim must be a positive integer"),
    ({"dim": 3.0}, ValueError, "dim must be a positive integer"),
    ({"dim": True}, ValueError, "dim must be a positive integer"),
    ({"dim": 4, "precision": "fp16"}, ValueError, "precision must be one of"),
    ({"dim": 4, "rescore": "bf16"}, ValueError, "rescore must be one of"),
    ({"dim": 4, "precision": "int8", "rescore": "int8"}, ValueError, "needs precision='binary'"),
    ({"dim": 4, "precision": "int8", "oversample": 0}, ValueError, "oversample must be an integer >= 1"),
    ({"dim": 4, "precision": "int8", "oversample": 2.5}, ValueError, "oversample"),
    ({"dim": 4, "compact_threshold": 0}, ValueError, "compact_threshold"),
    ({"dim": 4, "num_threads": 0}, ValueError, "num_threads"),
    ({"dim": 4, "precision": "int8", "quantizer": "minmax"}, TypeError, "Int8Quantizer"),
    ({"dim": 4, "precision": "int8", "quantizer": Int8Quantizer()}, ValueError, "not fitted"),
    ({"dim": 4, "precision": "int8", "quantizer": Int8Quantizer().fit(np.ones((2, 5)))}, ValueError, "dimension 5"),
    ({"dim": 4, "quantizer": Int8Quantizer().fit(np.ones((2, 4)))}, ValueError, "only used with int8 codes"),
])
def test_bad_constructor_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        FlatIndex(**kwargs)


# -- add ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("vectors, error, match", [
    (np.ones((2, 5), dtype=np.float32), ValueError, r"dimension 5 but the index has dimension 4"),
    (np.ones(3, dtype=np.float32), ValueError, r"dimension 3"),
    (np.ones((2, 2, 4), dtype=np.float32), ValueError, r"shape \(2, 2, 4\)"),
    (np.array([[1, 2, 3, 4]], dtype=np.int64), TypeError, "floating point.*int64"),
    (np.ones((1, 4), dtype=np.int8), TypeError, "integer codes are not vectors"),
    (np.ones((1, 4), dtype=bool), TypeError, "bool"),
    (np.array([["a", "b", "c", "d"]]), TypeError, "real numbers.*<U1"),
    (np.ones((1, 4), dtype=np.complex64), TypeError, "real numbers"),
    ([[1.0, 2.0], [3.0]], TypeError, "could not be read as an array"),
    (None, TypeError, "got None"),
    (np.array([[1.0, np.nan, 0.0, 0.0]], dtype=np.float32), ValueError, r"NaN or Inf \(first at row 0, column 1\)"),
    (np.array([[0.0, 0.0], [0.0, 0.0], [0.0, 0.0], [np.inf, 0.0]]).reshape(2, 4), ValueError, "NaN or Inf"),
    (np.array([[1e300, 0.0, 0.0, 0.0]]), ValueError, "too large for float32"),
])
def test_bad_vectors(index, vectors, error, match):
    with pytest.raises(error, match=match):
        index.add(vectors)
    unchanged(index)


def test_python_lists_of_numbers_are_vectors(index):
    assert index.add([[0, 0, 1, 1]]).tolist() == [4]


@pytest.mark.parametrize("ids, error, match", [
    ([10], ValueError, "got 1 ids for 2 vectors"),
    ([10, 11, 12], ValueError, "got 3 ids for 2 vectors"),
    ([10, 10], ValueError, r"repeated within this add: \[10\]"),
    ([1, 10], ValueError, r"already in the index: \[1\].*upsert=True"),
    ([10, "x"], TypeError, "mix int and str"),
    (["x", "y"], TypeError, "holds int ids, got str ids"),
    ([10, -3], ValueError, r"must be >= 0.*\[-3\]"),
    ([10, 2**63], ValueError, "fit in int64"),
    ([10.0, 11.0], TypeError, "ids must be int or str, got float"),
    ([True, False], TypeError, "bool"),
    ([None, 1], TypeError, "NoneType"),
    (np.array([1.5, 2.5]), TypeError, "dtype float64"),
    (np.array([[10, 11]]), ValueError, "1-D"),
    (5, TypeError, "sequence of int or str"),
])
def test_bad_ids(index, ids, error, match):
    with pytest.raises(error, match=match):
        index.add(np.ones((2, 4), dtype=np.float32), ids=ids)
    unchanged(index)


def test_str_index_rejects_int_ids_and_auto_ids():
    ix = FlatIndex(2)
    ix.add(np.ones((1, 2), dtype=np.float32), ids=["a"])
    with pytest.raises(TypeError, match="holds str ids, got int ids"):
        ix.add(np.ones((1, 2), dtype=np.float32), ids=[1])
    with pytest.raises(TypeError, match="pass ids="):
        ix.add(np.ones((1, 2), dtype=np.float32))
    with pytest.raises(TypeError, match="holds str ids"):
        ix.remove([1])
    assert ix.ids().tolist() == ["a"] and 1 not in ix


@pytest.mark.parametrize("metadata, error, match", [
    ([{"a": 1}], ValueError, "1 entries but there are 2 vectors"),
    ({"a": 1}, TypeError, "list of dicts"),
    ("ab", TypeError, "list of dicts"),
    ([{"a": 1}, ["not", "a", "dict"]], TypeError, r"metadata\[1\] must be a dict or None, got list"),
    ([{"a": 1}, {1: "int key"}], TypeError, r"metadata\[1\] keys must be str"),
    ([{"a": 1}, {"b": object()}], TypeError, r"metadata\[1\] is not JSON-serializable"),
    ([{"a": 1}, {"b": {1, 2}}], TypeError, r"metadata\[1\] is not JSON-serializable"),
    ([{"a": float("nan")}, None], ValueError, r"metadata\[0\] holds NaN or Inf"),
    ([{"a": [1, float("inf")]}, None], ValueError, r"metadata\[0\] holds NaN or Inf"),
])
def test_bad_metadata(index, metadata, error, match):
    with pytest.raises(error, match=match):
        index.add(np.ones((2, 4), dtype=np.float32), ids=[10, 11], metadata=metadata)
    unchanged(index)


def test_numpy_scalars_in_metadata_are_stored_as_json(index):
    index.add(np.ones((1, 4), dtype=np.float32), ids=[9], metadata=[{"y": np.int64(3), "f": np.float32(0.5)}])
    assert index.get_metadata(9) == [{"y": 3, "f": 0.5}]


# -- search ------------------------------------------------------------------------------------
@pytest.mark.parametrize("k, error, match", [
    (0, ValueError, "k must be >= 1, got 0"),
    (-2, ValueError, "k must be >= 1, got -2"),
    (2.0, TypeError, "k must be an integer, got float"),
    ("3", TypeError, "k must be an integer, got str"),
    (True, TypeError, "k must be an integer, got bool"),
    (None, TypeError, "k must be an integer"),
])
def test_bad_k(index, k, error, match):
    with pytest.raises(error, match=match):
        index.search(np.ones(4, dtype=np.float32), k)


def test_numpy_integer_k_is_fine(index):
    assert index.search(np.ones(4, dtype=np.float32), np.int64(2)).ids.shape == (1, 2)


@pytest.mark.parametrize("queries, error, match", [
    (np.ones(5, dtype=np.float32), ValueError, "queries have dimension 5 but the index has dimension 4"),
    (np.ones((2, 3), dtype=np.float32), ValueError, "dimension 3"),
    (np.full(4, np.nan, dtype=np.float32), ValueError, "queries contain NaN or Inf"),
    (np.array(["a", "b", "c", "d"]), TypeError, "queries must hold real numbers"),
    (np.ones(4, dtype=np.int32), TypeError, "queries must be floating point"),
])
def test_bad_queries(index, queries, error, match):
    with pytest.raises(error, match=match):
        index.search(queries, 2)


def test_bad_queries_on_an_empty_index_still_raise():
    with pytest.raises(ValueError, match="dimension 3"):
        FlatIndex(4).search(np.ones(3, dtype=np.float32), 1)


@pytest.mark.parametrize("filter, error, match", [
    ({"lang": {"$ne": "en"}}, TypeError, r"filter\['lang'\] must be a value or a list of values, got dict"),
    ({"lang": [["en"]]}, TypeError, r"filter\['lang'\]: values must be str, int, float, bool or None, got list"),
    ({"year": float("nan")}, ValueError, "NaN and Inf cannot be"),
    ({3: "en"}, TypeError, "field names must be str"),
    ("en", TypeError, "filter must be None, a sequence of allowed ids or a dict"),
    (5, TypeError, "filter must be None"),
    (np.array([True, False, True, True]), TypeError, "dtype bool"),
    (["a", "b"], TypeError, "filter: this index holds int ids, got str ids"),
    ([1, "b"], TypeError, "mix int and str"),
    ([1.5], TypeError, "ids must be int or str, got float"),
])
def test_bad_filters(index, filter, error, match):
    with pytest.raises(error, match=match):
        index.search(np.ones(4, dtype=np.float32), 2, filter=filter)


@pytest.mark.parametrize("filter", [{"colour": "red"}, {"lang": "en", "colour": ["red"]}])
def test_a_filter_on_a_field_no_vector_has_matches_nothing(index, filter):
    result = index.search(np.ones(4, dtype=np.float32), 2, filter=filter)
    assert result.ids.tolist() == [[-1, -1]] and np.isneginf(result.scores).all()


def test_metadata_filter_on_an_index_without_metadata_matches_nothing():
    ix = FlatIndex(2)
    ix.add(np.ones((3, 2), dtype=np.float32))
    assert ix.search(np.ones(2, dtype=np.float32), 1, filter={"lang": "en"}).ids.tolist() == [[-1]]


def test_unknown_search_params(index):
    with pytest.raises(TypeError, match=r"unknown parameter\(s\) \['ef', 'nprobe'\].*accepted: \['oversample', 'refine', 'rescore'\]"):
        index.search(np.ones(4, dtype=np.float32), 2, ef=3, nprobe=2)


def test_rescore_override_needs_the_stored_representation():
    ix = FlatIndex(4, "binary", rescore=None)
    ix.add(np.eye(4, dtype=np.float32))
    with pytest.raises(ValueError, match="float32 originals"):
        ix.search(np.ones(4, dtype=np.float32), 1, rescore="float32")
    with pytest.raises(ValueError, match="rescore must be one of"):
        ix.search(np.ones(4, dtype=np.float32), 1, rescore="fp16")


# -- remove ------------------------------------------------------------------------------------
def test_remove_unknown_ids_lists_them_and_removes_nothing(index):
    with pytest.raises(KeyError, match=r"ids not in the index: \[7, 9\]"):
        index.remove([0, 7, 1, 9])
    unchanged(index)
    with pytest.raises(KeyError, match=r"\[4\]"):
        index.remove(4)
    many = list(range(100, 130))
    with pytest.raises(KeyError, match=r"100, 101.*\(30 in all\)"):
        index.remove(many)
    unchanged(index)


def test_remove_bad_id_types(index):
    with pytest.raises(TypeError, match="holds int ids, got str ids"):
        index.remove(["a"])
    with pytest.raises(TypeError, match="mix int and str"):
        index.remove([1, "a"])
    with pytest.raises(TypeError, match="got float"):
        index.remove(1.0)
    unchanged(index)


def test_remove_twice_in_one_call_and_empty_remove(index):
    index.remove([])
    index.remove([2, 2])
    assert len(index) == 3 and 2 not in index
    with pytest.raises(KeyError, match=r"\[2\]"):
        index.remove([2])


# -- save / load -------------------------------------------------------------------------------
def test_load_paths_that_are_not_indexes(tmp_path):
    with pytest.raises(IndexFormatError, match="does not exist"):
        load_index(tmp_path / "nothing")
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(IndexFormatError, match="file.txt is not an embedrank index: it is a file"):
        load_index(tmp_path / "file.txt")
    (tmp_path / "dir").mkdir()
    with pytest.raises(IndexFormatError, match="has no manifest.json"):
        load_index(tmp_path / "dir")


def test_save_never_overwrites_something_that_is_not_an_index(tmp_path, index):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "precious.txt").write_text("keep me")
    with pytest.raises(IndexFormatError, match="refusing to save over"):
        index.save(tmp_path / "data")
    assert (tmp_path / "data" / "precious.txt").read_text() == "keep me"
    (tmp_path / "file").write_text("keep me too")
    with pytest.raises(IndexFormatError, match="not an index directory"):
        index.save(tmp_path / "file")
    assert (tmp_path / "file").read_text() == "keep me too"
    (tmp_path / "empty").mkdir()
    assert load_index(index.save(tmp_path / "empty")).ids().tolist() == [0, 1, 2, 3]
