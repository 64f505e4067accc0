// The lexical index's native parts: ASCII word tokens (core/text.h) and BM25 top-k over
// segmented postings (core/bm25.h). Python (embedrank/index/analysis.py, lexical.py) builds
// and validates the postings; these bindings check shapes and dtypes, and the kernel
// bounds-checks every posting it reads.
#include <algorithm>

#include "core/bm25.h"
#include "core/text.h"
#include "python/common.h"

namespace embedrank {

void register_lexical(py::module_& m) {
  // (texts: list of str) -> (vocabulary list of str, codes int32 [T], bounds int64 [n + 1]);
  // a text that is not pure ASCII gets no tokens here (Python tokenizes it).
  m.def("ascii_word_tokens", [](const py::list& texts) {
    size_t n = texts.size();
    std::vector<py::object> keep;  // the strs stay alive while the GIL is released
    std::vector<const char*> data(n);
    std::vector<size_t> lengths(n);
    keep.reserve(n);
    for (size_t i = 0; i < n; ++i) {
      py::handle item = texts[i];
      require(PyUnicode_Check(item.ptr()), "texts must be str");
      keep.push_back(py::reinterpret_borrow<py::object>(item));
      if (PyUnicode_IS_ASCII(item.ptr())) {
        data[i] = static_cast<const char*>(PyUnicode_DATA(item.ptr()));
        lengths[i] = static_cast<size_t>(PyUnicode_GET_LENGTH(item.ptr()));
      } else {
        data[i] = "";
        lengths[i] = 0;
      }
    }
    AsciiTokens tokens;
    {
      py::gil_scoped_release release;
      tokens = ascii_word_tokens(data.data(), lengths.data(), n);
    }
    py::list vocabulary(tokens.vocabulary.size());
    for (size_t i = 0; i < tokens.vocabulary.size(); ++i) vocabulary[i] = py::str(tokens.vocabulary[i]);
    CArray<int32_t> codes(static_cast<py::ssize_t>(tokens.codes.size()));
    std::copy(tokens.codes.begin(), tokens.codes.end(), codes.mutable_data());
    CArray<int64_t> bounds(static_cast<py::ssize_t>(tokens.bounds.size()));
    std::copy(tokens.bounds.begin(), tokens.bounds.end(), bounds.mutable_data());
    return py::make_tuple(vocabulary, codes, bounds);
  });

  // (segments: list of (terms int32 [t], offsets int64 [t+1], docs int32 [p], tfs float32 [p],
  //                     bounds None | float32 [t], written: the per-term bound cache),
  //  query_terms int32 [n], query_weights float32 [n], query_bounds int64 [Q+1], doc_norm float32 [slots],
  //  allow None | uint8 [slots], k, out_scores float32 [Q, k], out_slots int64 [Q, k], num_threads)
  m.def("bm25_topk", [](const py::list& segments, CArray<int32_t> q_terms, CArray<float> q_weights,
                        CArray<int64_t> q_bounds, CArray<float> doc_norm, const py::object& allow, size_t k,
                        CArray<float> out_scores, CArray<int64_t> out_slots, int num_threads) {
    std::vector<PostingSegment> segs;
    std::vector<py::object> keep;  // the arrays stay referenced while the GIL is released
    for (const py::handle& item : segments) {
      auto parts = item.cast<py::tuple>();
      require(parts.size() == 5, "each segment must be (terms, offsets, docs, tfs, bounds)");
      auto terms = parts[0].cast<CArray<int32_t>>();
      auto offsets = parts[1].cast<CArray<int64_t>>();
      auto docs = parts[2].cast<CArray<int32_t>>();
      auto tfs = parts[3].cast<CArray<float>>();
      require(terms.ndim() == 1 && offsets.ndim() == 1 && docs.ndim() == 1 && tfs.ndim() == 1,
              "segment arrays must be 1-D");
      require(offsets.shape(0) == terms.shape(0) + 1, "segment offsets must have one entry more than terms");
      require(docs.shape(0) == tfs.shape(0), "segment docs and tfs differ in length");
      float* bounds_ptr = nullptr;
      if (!parts[4].is_none()) {
        auto bounds = parts[4].cast<CArray<float>>();
        require(bounds.ndim() == 1 && bounds.shape(0) == terms.shape(0) && bounds.writeable(),
                "segment bounds must be a writable float32 array with one entry per term");
        bounds_ptr = bounds.mutable_data();
        keep.push_back(bounds);
      }
      segs.push_back(PostingSegment{terms.data(), static_cast<size_t>(terms.shape(0)), offsets.data(), docs.data(),
                                    tfs.data(), static_cast<size_t>(docs.shape(0)), bounds_ptr});
      keep.push_back(terms);
      keep.push_back(offsets);
      keep.push_back(docs);
      keep.push_back(tfs);
    }
    require(q_terms.ndim() == 1 && q_weights.ndim() == 1 && q_terms.shape(0) == q_weights.shape(0),
            "query_terms and query_weights must be 1-D of one length");
    require(q_bounds.ndim() == 1 && q_bounds.shape(0) >= 1, "query_bounds must be 1-D with Q + 1 entries");
    size_t nq = static_cast<size_t>(q_bounds.shape(0)) - 1;
    const int64_t* bounds = q_bounds.data();
    require(bounds[0] == 0 && bounds[nq] == q_terms.shape(0), "query_bounds must run from 0 to len(query_terms)");
    for (size_t q = 0; q < nq; ++q) require(bounds[q] <= bounds[q + 1], "query_bounds must be non-decreasing");
    require(doc_norm.ndim() == 1, "doc_norm must be 1-D");
    size_t n_slots = static_cast<size_t>(doc_norm.shape(0));
    require(k >= 1, "k must be >= 1");
    check_matrix(out_scores, nq, k, "out_scores has the wrong shape");
    check_matrix(out_slots, nq, k, "out_slots has the wrong shape");
    const uint8_t* allow_ptr = nullptr;
    CArray<uint8_t> mask;
    if (!allow.is_none()) {
      mask = allow.cast<CArray<uint8_t>>();
      require(mask.ndim() == 1 && static_cast<size_t>(mask.shape(0)) == n_slots, "allow must have one byte per slot");
      allow_ptr = mask.data();
    }
    Bm25Query queries{q_terms.data(), q_weights.data(), bounds, nq};
    const float* norm = doc_norm.data();
    float* os = out_scores.mutable_data();
    int64_t* oi = out_slots.mutable_data();
    without_gil([&] {
      bm25_topk(segs, queries, norm, n_slots, allow_ptr, k, os, oi, num_threads, python_interrupted);
    });
  });
}

}  // namespace embedrank
