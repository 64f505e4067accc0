// Exact top-k search kernels. All outputs are [n_queries, k], best first, ties to the lower id,
// padded with (-inf | INT32_MAX, -1) when fewer than k rows are allowed. `allow` is null or
// one byte per base row (nonzero = may be returned).
#pragma once

#include <cstddef>
#include <cstdint>

#include "thread_pool.h"

namespace embedrank {

struct SearchOptions {
  size_t k = 10;
  const uint8_t* allow = nullptr;
  int num_threads = 0;
  InterruptFn interrupted;
};

// Inner product of float32 queries [nq, d] with float32 base [n, d].
// Returns false when a score was NaN/Inf (a non-finite or overflowing base value).
bool topk_float32(const float* queries, size_t nq, const float* base, size_t n, size_t d,
                  const SearchOptions& options, float* out_scores, int64_t* out_ids);

// Inner product of float32 queries [nq, d] with int8 codes [n, d] taken as integers
// (the caller folds the quantizer's scale into the queries and adds the offset term).
bool topk_float32_int8(const float* queries, size_t nq, const int8_t* codes, size_t n, size_t d,
                       const SearchOptions& options, float* out_scores, int64_t* out_ids);

// Integer inner product of int8 queries [nq, d] (values in [-127, 127]) with int8 codes
// [n, d], returned as float (exact below 2^24). AVX-512 VNNI where present.
void topk_int8_int8(const int8_t* queries, size_t nq, const int8_t* codes, size_t n, size_t d,
                    const SearchOptions& options, float* out_scores, int64_t* out_ids);

// Hamming distance of packed bit codes [nq, n_bytes] to [n, n_bytes]; lower is better.
void topk_hamming(const uint8_t* queries, size_t nq, const uint8_t* base, size_t n, size_t n_bytes,
                  const SearchOptions& options, int32_t* out_distances, int64_t* out_ids);

// Exact float scores of the candidate ids [nq, n_candidates] (-1 = none; duplicates
// counted once) against float32 base [n, d] or int8 codes (with float queries already scaled),
// re-sorted into the top k. Ids must be < n (checked by the caller).
bool rescore_float32(const float* queries, size_t nq, const float* base, size_t n, size_t d,
                     const int64_t* candidates, size_t n_candidates, const SearchOptions& options,
                     float* out_scores, int64_t* out_ids);
bool rescore_int8(const float* queries, size_t nq, const int8_t* codes, size_t n, size_t d,
                  const int64_t* candidates, size_t n_candidates, const SearchOptions& options,
                  float* out_scores, int64_t* out_ids);

}  // namespace embedrank
