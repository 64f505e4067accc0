// Exact top-k searches and rescoring (core/search.h). Every top-k binding has the signature
//   (queries [nq, d], base [n, d], k, allow None | uint8 [n], out_scores [nq, k], out_ids [nq, k] int64,
//    num_threads)
// and returns what its kernel returns (False: a non-finite score) or None.
#include "core/row_io.h"
#include "core/search.h"
#include "python/common.h"

namespace embedrank {
namespace {

SearchOptions search_options(size_t k, int num_threads) {
  SearchOptions o;
  o.k = k;
  o.num_threads = num_threads;
  o.interrupted = python_interrupted;
  return o;
}

// The argument names used in the error messages of one top-k binding.
struct TopkNames {
  const char* queries;
  const char* base;
  const char* mismatch;  // the query and base widths differ
  const char* scores;
};

template <typename Query, typename Base, typename Score, typename Kernel>
void bind_topk(py::module_& m, const char* name, TopkNames names, Kernel kernel) {
  m.def(name, [names, kernel](CArray<Query> q, CArray<Base> base, size_t k, const py::object& allow,
                              CArray<Score> out_scores, CArray<int64_t> out_ids, int num_threads) {
    check_rows(q, names.queries, 2);
    check_rows(base, names.base, 2);
    size_t nq = q.shape(0), n = base.shape(0), d = base.shape(1);
    require(static_cast<size_t>(q.shape(1)) == d, names.mismatch);
    require(k >= 1 && k <= n, "k out of range");
    check_matrix(out_scores, nq, k, std::string(names.scores) + " has the wrong shape");
    check_matrix(out_ids, nq, k, "out_ids has the wrong shape");
    SearchOptions o = search_options(k, num_threads);
    if (!allow.is_none()) {
      auto mask = allow.cast<CArray<uint8_t>>();
      require(mask.ndim() == 1 && static_cast<size_t>(mask.shape(0)) == n, "allow must have one byte per base row");
      o.allow = mask.data();
    }
    const Query* qp = q.data();
    const Base* bp = base.data();
    Score* os = out_scores.mutable_data();
    int64_t* oi = out_ids.mutable_data();
    return without_gil([&] { return kernel(qp, nq, bp, n, d, o, os, oi); });
  });
}

// (queries [nq, d] float32, base [n, d], candidates [nq, c] int64 (-1 = none), k, out_scores, out_ids,
//  num_threads) -> False when a score was not finite
template <typename Base, typename Kernel>
void bind_rescore(py::module_& m, const char* name, Kernel kernel) {
  m.def(name, [kernel](CArray<float> q, CArray<Base> base, CArray<int64_t> candidates, size_t k,
                       CArray<float> out_scores, CArray<int64_t> out_ids, int num_threads) {
    check_rows(q, "queries", 2);
    check_rows(base, "base", 2);
    check_rows(candidates, "candidates", 2);
    size_t nq = q.shape(0), n = base.shape(0), d = base.shape(1), c = candidates.shape(1);
    require(static_cast<size_t>(q.shape(1)) == d, "query and base dimensions differ");
    require(static_cast<size_t>(candidates.shape(0)) == nq, "one candidate row per query is needed");
    require(k >= 1, "k out of range");
    check_matrix(out_scores, nq, k, "out_scores has the wrong shape");
    check_matrix(out_ids, nq, k, "out_ids has the wrong shape");
    const int64_t* cp = candidates.data();
    for (py::ssize_t i = 0; i < candidates.size(); ++i)
      require(cp[i] >= -1 && cp[i] < static_cast<int64_t>(n), "candidate id out of range");
    SearchOptions o = search_options(k, num_threads);
    const float* qp = q.data();
    const Base* bp = base.data();
    float* os = out_scores.mutable_data();
    int64_t* oi = out_ids.mutable_data();
    return without_gil([&] { return kernel(qp, nq, bp, n, d, cp, c, o, os, oi); });
  });
}

}  // namespace

void register_search(py::module_& m) {
  bind_topk<float, float, float>(
      m, "topk_float32", {"queries", "base", "query and base dimensions differ", "out_scores"}, &topk_float32);
  bind_topk<float, int8_t, float>(
      m, "topk_float32_int8", {"queries", "codes", "query and code dimensions differ", "out_scores"},
      &topk_float32_int8);
  bind_topk<int8_t, int8_t, float>(
      m, "topk_int8_int8", {"queries", "codes", "query and code dimensions differ", "out_scores"}, &topk_int8_int8);
  bind_topk<uint8_t, uint8_t, int32_t>(
      m, "topk_hamming", {"query_bits", "base_bits", "query and base code lengths differ", "out_distances"},
      &topk_hamming);
  bind_rescore<float>(m, "rescore_float32", &rescore_float32);
  bind_rescore<int8_t>(m, "rescore_int8", &rescore_int8);
  // (fd, offset, n_rows, rows int64 [m], out uint8 [m, row_bytes], num_threads) -> 0, errno, or -1 (file too short)
  m.def("read_rows", [](int fd, uint64_t offset, uint64_t n_rows, CArray<int64_t> rows, CArray<uint8_t> out,
                        int num_threads) {
    check_rows(rows, "rows", 1);
    check_rows(out, "out", 2);
    size_t count = rows.shape(0);
    require(static_cast<size_t>(out.shape(0)) == count, "out must have one row per requested row");
    const int64_t* r = rows.data();
    for (size_t i = 0; i < count; ++i) require(r[i] >= 0 && static_cast<uint64_t>(r[i]) < n_rows, "row out of range");
    size_t row_bytes = out.shape(1);
    uint8_t* o = out.mutable_data();
    return without_gil([&] { return read_rows(fd, offset, row_bytes, r, count, o, num_threads); });
  });
}

}  // namespace embedrank
