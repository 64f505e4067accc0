"""Every kernel at every ISA level on one seeded grid: dim {1, 3, 97, 384, 385, 1024} x batch
{1, 7, 1024} x dtype. Each level runs in its own subprocess (EMBEDRANK_ISA=level, see
isa_worker.py); here the outputs are compared with the numpy references and with each other:
integer and bit results identical, float results within 1e-5.
"""

from __future__ import annotations

import os
import subprocess
import sys
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest

from embedrank import _kernels
from embedrank.kernels import ISA_LEVELS
from tests.kernels import isa_grid as grid
from tests.kernels import reference as ref
from tests.kernels.compare import assert_exact_topk, assert_float_topk, expected_float_topk

ROOT = Path(__file__).resolve().parents[2]
HIGHEST = _kernels.highest_isa()
SUPPORTED = ISA_LEVELS[: ISA_LEVELS.index(HIGHEST) + 1]
TOL = 1e-5

CELLS = [(d, b) for d in grid.DIMS for b in grid.BATCHES]
CELL_IDS = [f"d{d}-b{b}" for d, b in CELLS]
LEVEL_PARAMS = [
    pytest.param(level, marks=() if level in SUPPORTED else pytest.mark.skip(reason=f"CPU tops out at {HIGHEST}"))
    for level in ISA_LEVELS
]


def run_python(code_or_module: list[str], env_overrides: dict | None = None, timeout: float = 60):
    env = dict(os.environ)
    env.pop("EMBEDRANK_ISA", None)
    env.update(env_overrides or {})
    return subprocess.run([sys.executable, *code_or_module], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="module")
def outputs(tmp_path_factory):
    """{level: NpzFile} from one worker subprocess per supported level (run concurrently)."""
    folder = tmp_path_factory.mktemp("isa")
    env = dict(os.environ)
    procs = {}
    for level in SUPPORTED:
        env_level = dict(env, EMBEDRANK_ISA=level)
        procs[level] = subprocess.Popen(
            [sys.executable, "-m", "tests.kernels.isa_worker", str(folder / f"{level}.npz")],
            cwd=ROOT, env=env_level, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    failures = []
    for level, proc in procs.items():
        try:
            out, err = proc.communicate(timeout=180)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
            failures.append(f"{level}: timed out\n{err[-2000:]}")
            continue
        if proc.returncode != 0:
            failures.append(f"{level}: exit code {proc.returncode}\n{err[-3000:]}")
    if failures:
        pytest.fail("ISA worker failed:\n" + "\n".join(failures))
    loaded = {level: np.load(folder / f"{level}.npz") for level in SUPPORTED}
    yield loaded
    for f in loaded.values():
        f.close()


def get(outputs, level, *parts):
    return outputs[level][grid.key(*parts)]


# ---- references, computed once per cell --------------------------------------------------------
@lru_cache(maxsize=None)
def exact_scores(dim, batch):
    x = grid.inputs(dim, batch)
    return ref.inner_products(x["queries"], x["base"])


@lru_cache(maxsize=None)
def exact_asymmetric(dim, batch):
    x = grid.inputs(dim, batch)
    codes = ref.int8_encode(x["base"], x["q_offset"], (np.float32(1) / x["q_scale"]).astype(np.float32))
    return ref.asymmetric_scores(x["queries"], codes, x["q_offset"], x["q_scale"]), codes


# ---- the workers ran ---------------------------------------------------------------------------
@pytest.mark.parametrize("level", LEVEL_PARAMS)
def test_capabilities_report_the_forced_level(outputs, level):
    assert str(outputs[level]["capabilities_active"]) == level


def test_levels_are_really_different_code_paths(outputs):
    """Guard against a dispatch that ignores EMBEDRANK_ISA: float sums are reordered between
    levels, so some float32 output must differ in its last bits."""
    if len(SUPPORTED) < 2:
        pytest.skip("only one ISA level on this CPU")
    a, b = outputs["scalar"], outputs[SUPPORTED[-1]]
    differs = [name for name in a.files if a[name].dtype == np.float32 and not np.array_equal(a[name], b[name])]
    assert differs, "scalar and the top level gave bit-identical float outputs everywhere"


# ---- pooling -----------------------------------------------------------------------------------
@pytest.mark.parametrize("level", LEVEL_PARAMS)
@pytest.mark.parametrize("dim,batch", CELLS, ids=CELL_IDS)
def test_mean_pool_normalize(outputs, level, dim, batch):
    x = grid.inputs(dim, batch)
    for hd in grid.POOL_HIDDEN:
        expected = ref.mean_pool(x[f"hidden_{hd}"], x["mask_bool"])
        for md in grid.POOL_MASKS:
            got = get(outputs, level, "pool", f"{hd}_{md}", dim, batch)
            assert got.dtype == np.float32 and got.shape == (batch, dim)
            np.testing.assert_allclose(got, expected, rtol=TOL, atol=TOL, err_msg=f"{hd} hidden, {md} mask")
            np.testing.assert_allclose(got, get(outputs, "scalar", "pool", f"{hd}_{md}", dim, batch),
                                       rtol=TOL, atol=TOL, err_msg=f"{level} vs scalar, {hd}/{md}")
    raw = get(outputs, level, "pool", "float32_int64_raw", dim, batch)
    np.testing.assert_allclose(raw, ref.mean_pool(x["hidden_float32"], x["mask_bool"], normalize=False),
                               rtol=TOL, atol=TOL, err_msg="normalize=False")


@pytest.mark.parametrize("level", LEVEL_PARAMS)
@pytest.mark.parametrize("dim,batch", CELLS, ids=CELL_IDS)
def test_normalize_and_truncate(outputs, level, dim, batch):
    x = grid.inputs(dim, batch)
    got = get(outputs, level, "normalize", "", dim, batch)
    np.testing.assert_allclose(got, ref.l2_normalize(x["rows"]), rtol=TOL, atol=TOL)
    assert (got[0] == 0).all(), "an all-zero row must stay zero"
    np.testing.assert_allclose(got, get(outputs, "scalar", "normalize", "", dim, batch), rtol=TOL, atol=TOL)
    for t in x["truncate_dims"]:
        got = get(outputs, level, "truncate", int(t), dim, batch)
        assert got.shape == (batch, t)
        np.testing.assert_allclose(got, ref.truncate_normalize(x["rows"], int(t)), rtol=TOL, atol=TOL,
                                   err_msg=f"truncate to {t}")


@pytest.mark.parametrize("level", LEVEL_PARAMS)
@pytest.mark.parametrize("shape", grid.ATTENTION_SHAPES, ids=["-".join(map(str, s)) for s in grid.ATTENTION_SHAPES])
@pytest.mark.parametrize("bias", [None, "bias", "batch_bias"])
def test_attention(outputs, level, shape, bias):
    x = grid.attention_inputs(*shape)
    name = "-".join(map(str, shape))
    kind = "attention" if bias is None else "attention_" + bias
    got = get(outputs, level, kind, name, 0, 0)
    expected = ref.attention(x["q"], x["k"], x["v"], x["mask"], shape[3], x["scale"], None if bias is None else x[bias])
    assert got.dtype == np.float32 and got.shape == x["q"].shape
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5, err_msg=f"{level} {kind} {name}")
    np.testing.assert_allclose(got, get(outputs, "scalar", kind, name, 0, 0), rtol=1e-4, atol=1e-5,
                               err_msg=f"{level} vs scalar, {kind} {name}")


@pytest.mark.parametrize("level", LEVEL_PARAMS)
@pytest.mark.parametrize("shape", grid.ATTENTION_SHAPES, ids=["-".join(map(str, s)) for s in grid.ATTENTION_SHAPES])
def test_attention_bf16_dots(outputs, level, shape):
    """bf16 products run at the avx512 level of a CPU with AVX512-BF16; every other level has
    no result (embedrank.kernels.attention refuses there, tests/kernels/test_attention.py)."""
    x = grid.attention_inputs(*shape)
    name = "-".join(map(str, shape))
    k = grid.key("attention_bf16", name, 0, 0)
    if level != "avx512" or "avx512_bf16" not in _kernels.detected_features():
        assert k not in outputs[level]
        return
    got = outputs[level][k]
    if shape[3] in (16, 32, 64):
        expected = ref.attention_bf16(x["q"], x["k"], x["v"], x["mask"], shape[3], x["scale"], x["bias"])
        atol = 2.0**-8 * max(1.0, float(np.abs(x["v"]).max()))
    else:
        expected, atol = ref.attention(x["q"], x["k"], x["v"], x["mask"], shape[3], x["scale"], x["bias"]), 1e-5
    np.testing.assert_allclose(got, expected, rtol=1e-3, atol=atol, err_msg=f"{level} bf16 {name}")


# ---- quantization ------------------------------------------------------------------------------
@pytest.mark.parametrize("level", LEVEL_PARAMS)
@pytest.mark.parametrize("dim,batch", CELLS, ids=CELL_IDS)
def test_int8_encode_is_exact(outputs, level, dim, batch):
    x = grid.inputs(dim, batch)
    inv = (np.float32(1) / x["int8_scale"]).astype(np.float32)
    got = get(outputs, level, "encode", "", dim, batch)
    assert got.dtype == np.int8
    np.testing.assert_array_equal(got, ref.int8_encode(x["int8_x"], x["int8_offset"], inv))
    np.testing.assert_array_equal(got, get(outputs, "scalar", "encode", "", dim, batch))
    e_codes = get(outputs, level, "codes", "", dim, batch)
    np.testing.assert_array_equal(e_codes, exact_asymmetric(dim, batch)[1])


@pytest.mark.parametrize("level", LEVEL_PARAMS)
@pytest.mark.parametrize("dim,batch", CELLS, ids=CELL_IDS)
def test_binarize_is_packbits(outputs, level, dim, batch):
    x = grid.inputs(dim, batch)
    got = get(outputs, level, "binarize", "", dim, batch)
    np.testing.assert_array_equal(got, ref.packbits(x["bits_x"]))
    assert got.dtype == np.uint8


# ---- search ------------------------------------------------------------------------------------
@pytest.mark.parametrize("level", LEVEL_PARAMS)
@pytest.mark.parametrize("dim,batch", CELLS, ids=CELL_IDS)
def test_topk_float32(outputs, level, dim, batch):
    x = grid.inputs(dim, batch)
    exact = exact_scores(dim, batch)
    n = x["base"].shape[0]
    for name, k, allow in grid.searches_for(grid.FLOAT_SEARCHES, batch):
        s = get(outputs, level, "topk_float32", name, dim, batch)
        i = get(outputs, level, "topk_float32_ids", name, dim, batch)
        assert_float_topk(s, i, exact, grid.k_of(k, n), grid.allow_of(x, allow), TOL, TOL, f"{level} {name}",
                          expected_float(dim, batch, "FLOAT_SEARCHES", name))
        s0 = get(outputs, "scalar", "topk_float32", name, dim, batch)
        np.testing.assert_allclose(s, s0, rtol=TOL, atol=TOL, err_msg=f"{level} vs scalar {name}")


@pytest.mark.parametrize("level", LEVEL_PARAMS)
@pytest.mark.parametrize("dim,batch", CELLS, ids=CELL_IDS)
def test_topk_int8_query_int8_is_exact_integer_arithmetic(outputs, level, dim, batch):
    for name, k, allow in grid.INT8_SEARCHES:
        expected = expected_int8_int8(dim, batch, name)
        got = (get(outputs, level, "topk_int8_int8", name, dim, batch),
               get(outputs, level, "topk_int8_int8_ids", name, dim, batch))
        assert_exact_topk(got, expected, f"{level} {name}")
        scalar = (get(outputs, "scalar", "topk_int8_int8", name, dim, batch),
                  get(outputs, "scalar", "topk_int8_int8_ids", name, dim, batch))
        assert_exact_topk(got, scalar, f"{level} vs scalar {name}")


@pytest.mark.parametrize("level", LEVEL_PARAMS)
@pytest.mark.parametrize("dim,batch", CELLS, ids=CELL_IDS)
def test_topk_int8_query_float32_is_asymmetric_inner_product(outputs, level, dim, batch):
    x = grid.inputs(dim, batch)
    exact, _ = exact_asymmetric(dim, batch)
    for name, k, allow in grid.INT8_SEARCHES:
        s = get(outputs, level, "topk_int8_float32", name, dim, batch)
        i = get(outputs, level, "topk_int8_float32_ids", name, dim, batch)
        assert_float_topk(s, i, exact, k, grid.allow_of(x, allow), TOL, TOL, f"{level} {name}",
                          expected_float(dim, batch, "INT8_SEARCHES", name), strict_ties=False)
        s0 = get(outputs, "scalar", "topk_int8_float32", name, dim, batch)
        np.testing.assert_allclose(s, s0, rtol=TOL, atol=TOL, err_msg=f"{level} vs scalar {name}")


@lru_cache(maxsize=None)
def expected_float(dim, batch, table, name):
    x = grid.inputs(dim, batch)
    _, k, allow = next(s for s in getattr(grid, table) if s[0] == name)
    exact = exact_asymmetric(dim, batch)[0] if table == "INT8_SEARCHES" else exact_scores(dim, batch)
    return expected_float_topk(exact, grid.k_of(k, x["base"].shape[0]), grid.allow_of(x, allow))


@lru_cache(maxsize=None)
def expected_hamming(dim, batch, name):
    x = grid.inputs(dim, batch)
    _, k, allow = next(s for s in grid.HAMMING_SEARCHES if s[0] == name)
    return ref.topk_hamming(x["query_bits"], x["base_bits"], k, grid.allow_of(x, allow))


@lru_cache(maxsize=None)
def expected_int8_int8(dim, batch, name):
    x = grid.inputs(dim, batch)
    _, k, allow = next(s for s in grid.INT8_SEARCHES if s[0] == name)
    codes = exact_asymmetric(dim, batch)[1]
    return ref.topk_int8_int8(x["queries"], codes, x["q_offset"], x["q_scale"], k, grid.allow_of(x, allow))


@pytest.mark.parametrize("level", LEVEL_PARAMS)
@pytest.mark.parametrize("dim,batch", CELLS, ids=CELL_IDS)
def test_topk_hamming_is_exact(outputs, level, dim, batch):
    for name, k, allow in grid.HAMMING_SEARCHES:
        expected = expected_hamming(dim, batch, name)
        got = (get(outputs, level, "topk_hamming", name, dim, batch),
               get(outputs, level, "topk_hamming_ids", name, dim, batch))
        assert got[0].dtype == np.int32
        assert_exact_topk(got, expected, f"{level} {name}")


@pytest.mark.parametrize("level", LEVEL_PARAMS)
@pytest.mark.parametrize("dim,batch", CELLS, ids=CELL_IDS)
def test_rescore(outputs, level, dim, batch):
    x = grid.inputs(dim, batch)
    cand = x["candidates"]
    allowed = np.zeros((batch, x["base"].shape[0]), dtype=bool)  # each query's distinct candidates
    rows, cols = np.nonzero(cand >= 0)
    allowed[rows, cand[rows, cols]] = True
    for variant, exact in (("float32", exact_scores(dim, batch)), ("int8", exact_asymmetric(dim, batch)[0])):
        s = get(outputs, level, "rescore", variant, dim, batch)
        i = get(outputs, level, "rescore_ids", variant, dim, batch)
        assert_float_topk(s, i, exact, 5, allowed, TOL, TOL, f"{level} rescore {variant}",
                          strict_ties=variant == "float32")
        s0 = get(outputs, "scalar", "rescore", variant, dim, batch)
        np.testing.assert_allclose(s, s0, rtol=TOL, atol=TOL, err_msg=f"{level} vs scalar rescore {variant}")


# ---- choosing the level ------------------------------------------------------------------------
# the error is embedrank's EnvironmentSettingError, an ImportError: caught as one here
IMPORT_KERNELS = ("try:\n    import embedrank.kernels\n"
                  "except ImportError as error:\n    print('ImportError', error)\n    raise SystemExit(3)")


def test_unknown_isa_level_is_an_import_error_naming_it():
    r = run_python(["-c", IMPORT_KERNELS], {"EMBEDRANK_ISA": "bogus"})
    assert r.returncode == 3, r.stderr[-2000:]
    assert "ImportError" in r.stdout and "'bogus'" in r.stdout, r.stdout[-2000:]


def test_no_forced_level_means_the_highest_supported():
    r = run_python(["-c", "import embedrank.kernels as K; print(K.capabilities()['active'])"])
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip() == HIGHEST


def test_level_above_the_cpu_is_an_import_error():
    above = ISA_LEVELS[ISA_LEVELS.index(HIGHEST) + 1:]
    if not above:
        pytest.skip(f"this CPU supports the highest level ({HIGHEST}): no level above it to request")
    r = run_python(["-c", IMPORT_KERNELS], {"EMBEDRANK_ISA": above[0]})
    assert r.returncode == 3, r.stderr[-2000:]
    assert "ImportError" in r.stdout and "above what this CPU supports" in r.stdout, r.stdout[-2000:]


# ---- normalization of rows far from norm 1 ---------------------------------------------------------
EXTREME_ROWS = r"""
import sys
import numpy as np
from embedrank.kernels import mean_pool_normalize, normalize, truncate_normalize

out = {}
for dim in (3, 97, 385):
    rows = np.ones((8, dim), dtype=np.float32)
    rows[0] *= 1e20          # squares overflow float32
    rows[1, 0] = 3e38        # one huge value beside ordinary ones
    rows[2] *= 1e-20         # squares underflow to zero
    rows[3] *= 1e-40         # subnormal values
    rows[4] *= 1e-30
    rows[4, -1] = 1e-20
    rows[5] *= -7.5          # ordinary: the fast path
    rows[6] = 0.0            # stays zero
    rows[7] = np.linspace(-1e19, 1e19, dim, dtype=np.float32)
    out[f"rows{dim}"] = rows
    out[f"normalize{dim}"] = normalize(rows)
    out[f"truncate{dim}"] = truncate_normalize(rows, max(1, dim - 1))
    out[f"pool{dim}"] = mean_pool_normalize(rows[:, None, :], np.ones((8, 1), dtype=np.int64))
np.savez(sys.argv[1], **out)
"""


@pytest.mark.parametrize("level", LEVEL_PARAMS)
def test_normalize_rows_far_from_unit_norm(level, tmp_path):
    """Values near 1e20 or 1e-20 square out of float32's range; the kernels must still give unit
    rows (the all-zero row stays zero) at every ISA level, on the same inputs."""
    path = tmp_path / "extreme.npz"
    run = run_python(["-c", EXTREME_ROWS, str(path)], {"EMBEDRANK_ISA": level})
    assert run.returncode == 0, run.stderr
    got = np.load(path)
    for dim in (3, 97, 385):
        rows = got[f"rows{dim}"]
        for name, expected in ((f"normalize{dim}", ref.l2_normalize(rows)),
                               (f"truncate{dim}", ref.truncate_normalize(rows, max(1, dim - 1))),
                               (f"pool{dim}", ref.l2_normalize(rows))):
            np.testing.assert_allclose(got[name], expected, rtol=2e-6, atol=1e-7, err_msg=f"{name} at {level}")
            norms = np.linalg.norm(got[name].astype(np.float64), axis=1)
            np.testing.assert_allclose(np.delete(norms, 6), 1.0, atol=1e-5, err_msg=f"{name} at {level}")
            assert (got[name][6] == 0).all()
