// The C++/Python boundary: embedrank._kernels.
//
// Python (src/embedrank/kernels/) validates every argument, converts dtypes and allocates the
// outputs; these functions only check what they must to stay memory-safe, release the GIL,
// and map errors: std::invalid_argument -> ValueError, Ctrl-C -> KeyboardInterrupt.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <stdexcept>
#include <string>

#include "core/attention.h"
#include "core/dispatch.h"
#include "core/pooling.h"
#include "core/quantize.h"
#include "core/search.h"
#include "core/thread_pool.h"

namespace py = pybind11;
using namespace embedrank;

namespace {

template <typename T>
using CArray = py::array_t<T, py::array::c_style>;

bool python_interrupted() {
  py::gil_scoped_acquire gil;
  return PyErr_CheckSignals() != 0;
}

// Runs `work` without the GIL; a Ctrl-C seen meanwhile becomes KeyboardInterrupt.
template <typename Work>
auto without_gil(Work work) -> decltype(work()) {
  try {
    py::gil_scoped_release release;
    return work();
  } catch (const Interrupted&) {
    throw py::error_already_set();
  }
}

void require(bool ok, const std::string& message) {
  if (!ok) throw std::invalid_argument(message);
}

void check_rows(const py::array& a, const char* name, size_t ndim) {
  require(static_cast<size_t>(a.ndim()) == ndim, std::string(name) + " must be " + std::to_string(ndim) + "-D");
  require(a.flags() & py::array::c_style, std::string(name) + " must be C-contiguous");
}

SearchOptions search_options(size_t k, const py::object& allow, size_t n, int num_threads) {
  SearchOptions o;
  o.k = k;
  o.num_threads = num_threads;
  o.interrupted = python_interrupted;
  if (!allow.is_none()) {
    auto mask = allow.cast<CArray<uint8_t>>();
    require(mask.ndim() == 1 && static_cast<size_t>(mask.shape(0)) == n, "allow must have one byte per base row");
    o.allow = mask.data();
  }
  return o;
}

template <typename Out>
void check_output(const CArray<Out>& out, size_t nq, size_t k, const char* name) {
  require(out.ndim() == 2 && static_cast<size_t>(out.shape(0)) == nq && static_cast<size_t>(out.shape(1)) == k,
          std::string(name) + " has the wrong shape");
}

}  // namespace

PYBIND11_MODULE(_kernels, m) {
  m.doc() = "embedrank's C++ kernels (internal: use embedrank.kernels)";

  m.def("detected_features", &detected_feature_names);
  m.def("highest_isa", [] { return std::string(isa_name(highest_supported_isa())); });
  m.def("active_isa", [] { return std::string(isa_name(active_isa())); });
  m.def("set_isa", [](const std::string& name) { set_active_isa(isa_from_name(name)); });
  m.def("default_num_threads", &default_num_threads);

  m.def("mean_pool", [](const py::array& hidden, const py::array& mask, bool normalize, CArray<float> out,
                        int num_threads) {
    check_rows(hidden, "hidden", 3);
    check_rows(mask, "mask", 2);
    size_t batch = hidden.shape(0), tokens = hidden.shape(1), dim = hidden.shape(2);
    require(static_cast<size_t>(mask.shape(0)) == batch && static_cast<size_t>(mask.shape(1)) == tokens,
            "mask shape does not match hidden");
    require(out.ndim() == 2 && static_cast<size_t>(out.shape(0)) == batch && static_cast<size_t>(out.shape(1)) == dim,
            "out has the wrong shape");
    HiddenType ht;
    py::dtype hd = hidden.dtype();
    if (hd.kind() == 'f' && hd.itemsize() == 4) ht = HiddenType::float32;
    else if (hd.kind() == 'f' && hd.itemsize() == 2) ht = HiddenType::float16;
    else throw std::invalid_argument("hidden must be float32 or float16");
    MaskType mt;
    py::dtype md = mask.dtype();
    if (md.kind() == 'i' && md.itemsize() == 8) mt = MaskType::int64;
    else if (md.kind() == 'i' && md.itemsize() == 4) mt = MaskType::int32;
    else if ((md.kind() == 'b' || md.kind() == 'u') && md.itemsize() == 1) mt = MaskType::uint8;
    else throw std::invalid_argument("mask must be int64, int32, bool or uint8");
    const void* h = hidden.data();
    const void* mk = mask.data();
    float* o = out.mutable_data();
    without_gil([&] { mean_pool(h, ht, mk, mt, batch, tokens, dim, normalize, o, num_threads); });
  });

  m.def("normalize_rows", [](CArray<float> x, size_t n_cols, CArray<float> out, int num_threads) {
    check_rows(x, "x", 2);
    size_t rows = x.shape(0), stride = x.shape(1);
    require(n_cols <= stride, "n_cols exceeds the row length");
    require(out.ndim() == 2 && static_cast<size_t>(out.shape(0)) == rows && static_cast<size_t>(out.shape(1)) == n_cols,
            "out has the wrong shape");
    const float* in = x.data();
    float* o = out.mutable_data();
    without_gil([&] { normalize_rows(in, stride, rows, n_cols, o, num_threads); });
  });

  m.def("attention", [](CArray<float> q, CArray<float> k, CArray<float> v, CArray<int64_t> mask, CArray<float> out,
                        size_t num_heads, float scale, int num_threads) {
    check_rows(q, "q", 3);
    require(num_heads >= 1, "num_heads must be >= 1");
    size_t batch = q.shape(0), tokens = q.shape(1), width = q.shape(2);
    require(width % num_heads == 0, "hidden size is not a multiple of num_heads");
    for (const CArray<float>* a : {&k, &v, &out})
      require(a->ndim() == 3 && static_cast<size_t>(a->shape(0)) == batch && static_cast<size_t>(a->shape(1)) == tokens &&
                  static_cast<size_t>(a->shape(2)) == width,
              "k, v and out must have q's shape");
    require(mask.ndim() == 2 && static_cast<size_t>(mask.shape(0)) == batch && static_cast<size_t>(mask.shape(1)) == tokens,
            "mask must be [batch, tokens]");
    AttentionProblem p;
    p.q = q.data();
    p.k = k.data();
    p.v = v.data();
    p.mask = mask.data();
    p.out = out.mutable_data();
      p.batch = batch;
    p.tokens = tokens;
    p.heads = num_heads;
    p.head_dim = width / num_heads;
    p.scale = scale;
    without_gil([&] { attention(p, num_threads); });
  });

  m.def("int8_encode", [](CArray<float> x, CArray<float> offset, CArray<float> inv_scale, CArray<int8_t> out,
                          int num_threads) {
    check_rows(x, "x", 2);
    size_t n = x.shape(0), d = x.shape(1);
    require(offset.size() == static_cast<py::ssize_t>(d) && inv_scale.size() == static_cast<py::ssize_t>(d),
            "offset/scale length does not match the dimension");
    require(out.size() == x.size(), "out has the wrong size");
    const float *in = x.data(), *off = offset.data(), *inv = inv_scale.data();
    int8_t* o = out.mutable_data();
    return without_gil([&] { return int8_encode(in, n, d, off, inv, o, num_threads); });
  });

  m.def("binarize", [](CArray<float> x, CArray<uint8_t> out, int num_threads) {
    check_rows(x, "x", 2);
    size_t n = x.shape(0), d = x.shape(1);
    require(out.ndim() == 2 && static_cast<size_t>(out.shape(0)) == n &&
                static_cast<size_t>(out.shape(1)) == (d + 7) / 8,
            "out has the wrong shape");
    const float* in = x.data();
    uint8_t* o = out.mutable_data();
    return without_gil([&] { return binarize(in, n, d, o, num_threads); });
  });

  m.def("topk_float32", [](CArray<float> q, CArray<float> base, size_t k, const py::object& allow,
                           CArray<float> out_scores, CArray<int64_t> out_ids, int num_threads) {
    check_rows(q, "queries", 2);
    check_rows(base, "base", 2);
    size_t nq = q.shape(0), n = base.shape(0), d = base.shape(1);
    require(static_cast<size_t>(q.shape(1)) == d, "query and base dimensions differ");
    require(k >= 1 && k <= n, "k out of range");
    check_output(out_scores, nq, k, "out_scores");
    check_output(out_ids, nq, k, "out_ids");
    SearchOptions o = search_options(k, allow, n, num_threads);
    const float *qp = q.data(), *bp = base.data();
    float* os = out_scores.mutable_data();
    int64_t* oi = out_ids.mutable_data();
    return without_gil([&] { return topk_float32(qp, nq, bp, n, d, o, os, oi); });
  });

  m.def("topk_float32_int8", [](CArray<float> q, CArray<int8_t> codes, size_t k, const py::object& allow,
                                CArray<float> out_scores, CArray<int64_t> out_ids, int num_threads) {
    check_rows(q, "queries", 2);
    check_rows(codes, "codes", 2);
    size_t nq = q.shape(0), n = codes.shape(0), d = codes.shape(1);
    require(static_cast<size_t>(q.shape(1)) == d, "query and code dimensions differ");
    require(k >= 1 && k <= n, "k out of range");
    check_output(out_scores, nq, k, "out_scores");
    check_output(out_ids, nq, k, "out_ids");
    SearchOptions o = search_options(k, allow, n, num_threads);
    const float* qp = q.data();
    const int8_t* cp = codes.data();
    float* os = out_scores.mutable_data();
    int64_t* oi = out_ids.mutable_data();
    return without_gil([&] { return topk_float32_int8(qp, nq, cp, n, d, o, os, oi); });
  });

  m.def("topk_int8_int8", [](CArray<int8_t> q, CArray<int8_t> codes, size_t k, const py::object& allow,
                             CArray<float> out_scores, CArray<int64_t> out_ids, int num_threads) {
    check_rows(q, "queries", 2);
    check_rows(codes, "codes", 2);
    size_t nq = q.shape(0), n = codes.shape(0), d = codes.shape(1);
    require(static_cast<size_t>(q.shape(1)) == d, "query and code dimensions differ");
    require(k >= 1 && k <= n, "k out of range");
    check_output(out_scores, nq, k, "out_scores");
    check_output(out_ids, nq, k, "out_ids");
    SearchOptions o = search_options(k, allow, n, num_threads);
    const int8_t *qp = q.data(), *cp = codes.data();
    float* os = out_scores.mutable_data();
    int64_t* oi = out_ids.mutable_data();
    without_gil([&] { topk_int8_int8(qp, nq, cp, n, d, o, os, oi); });
  });

  m.def("topk_hamming", [](CArray<uint8_t> q, CArray<uint8_t> base, size_t k, const py::object& allow,
                           CArray<int32_t> out_distances, CArray<int64_t> out_ids, int num_threads) {
    check_rows(q, "query_bits", 2);
    check_rows(base, "base_bits", 2);
    size_t nq = q.shape(0), n = base.shape(0), n_bytes = base.shape(1);
    require(static_cast<size_t>(q.shape(1)) == n_bytes, "query and base code lengths differ");
    require(k >= 1 && k <= n, "k out of range");
    check_output(out_distances, nq, k, "out_distances");
    check_output(out_ids, nq, k, "out_ids");
    SearchOptions o = search_options(k, allow, n, num_threads);
    const uint8_t *qp = q.data(), *bp = base.data();
    int32_t* od = out_distances.mutable_data();
    int64_t* oi = out_ids.mutable_data();
    without_gil([&] { topk_hamming(qp, nq, bp, n, n_bytes, o, od, oi); });
  });

  auto bind_rescore = [&m](const char* name, auto element, auto kernel) {
    using T = decltype(element);
    m.def(name, [kernel](CArray<float> q, CArray<T> base, CArray<int64_t> candidates, size_t k,
                         CArray<float> out_scores, CArray<int64_t> out_ids, int num_threads) {
      check_rows(q, "queries", 2);
      check_rows(base, "base", 2);
      check_rows(candidates, "candidates", 2);
      size_t nq = q.shape(0), n = base.shape(0), d = base.shape(1), c = candidates.shape(1);
      require(static_cast<size_t>(q.shape(1)) == d, "query and base dimensions differ");
      require(static_cast<size_t>(candidates.shape(0)) == nq, "one candidate row per query is needed");
      require(k >= 1, "k out of range");
      check_output(out_scores, nq, k, "out_scores");
      check_output(out_ids, nq, k, "out_ids");
      const int64_t* cp = candidates.data();
      for (py::ssize_t i = 0; i < candidates.size(); ++i)
        require(cp[i] >= -1 && cp[i] < static_cast<int64_t>(n), "candidate id out of range");
      SearchOptions o;
      o.k = k;
      o.num_threads = num_threads;
      o.interrupted = python_interrupted;
      const float* qp = q.data();
      const T* bp = base.data();
      float* os = out_scores.mutable_data();
      int64_t* oi = out_ids.mutable_data();
      return without_gil([&] { return kernel(qp, nq, bp, n, d, cp, c, o, os, oi); });
    });
  };
  bind_rescore("rescore_float32", float{}, &rescore_float32);
  bind_rescore("rescore_int8", int8_t{}, &rescore_int8);
}
