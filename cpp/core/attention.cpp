#include "attention.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <stdexcept>
#include <string>

#include "dispatch.h"
#include "simd.h"
#include "thread_pool.h"

namespace embedrank {
namespace {

struct HeadView {
  const float* q;
  const float* k;
  const float* v;
  float* out;
  const float* bias;  // [tokens, tokens] of this head, or nullptr
};

HeadView head_view(const AttentionProblem& p, size_t b, size_t h) {
  size_t column = h * p.head_dim;
  const size_t offset = b * p.tokens * p.width() + column;
  const float* bias = nullptr;
  if (p.bias) bias = p.bias + ((p.bias_batch == 1 ? 0 : b) * p.heads + h) * p.tokens * p.tokens;
  return {p.q + offset, p.k + offset, p.v + offset, p.out + offset, bias};
}

// Adds the bias of query rows [i0, i0 + rows) to their scores (`scores` row r at r * stride,
// one column per attended key). Inlined into each ISA's head function, so the contiguous
// case (every key attended) vectorizes at that function's level.
inline void add_bias(const AttentionProblem& p, const HeadView& view, size_t i0, size_t rows,
                     const std::vector<uint32_t>& keys, float* scores, size_t stride) {
  const size_t n_keys = keys.size();
  for (size_t r = 0; r < rows; ++r) {
    const float* bias_row = view.bias + (i0 + r) * p.tokens;
    float* row = scores + r * stride;
    if (n_keys == p.tokens) {
      for (size_t j = 0; j < n_keys; ++j) row[j] += bias_row[j];
    } else {
      for (size_t j = 0; j < n_keys; ++j) row[j] += bias_row[keys[j]];
    }
  }
}

// The attended keys of sequence b in `index`; false when its mask is all zero (then no key).
bool gather_keys(const AttentionProblem& p, size_t b, std::vector<uint32_t>& index) {
  index.clear();
  const int64_t* mask = p.mask + b * p.tokens;
  for (size_t j = 0; j < p.tokens; ++j)
    if (mask[j] != 0) index.push_back(static_cast<uint32_t>(j));
  return !index.empty();
}

// All-zero mask: every query row gets the plain mean of the value rows.
void uniform_head(const AttentionProblem& p, const HeadView& view) {
  float* first = view.out;
  std::fill(first, first + p.head_dim, 0.0f);
  for (size_t j = 0; j < p.tokens; ++j)
    for (size_t d = 0; d < p.head_dim; ++d) first[d] += view.v[j * p.width() + d];
  float inv = 1.0f / static_cast<float>(p.tokens);
  for (size_t d = 0; d < p.head_dim; ++d) first[d] *= inv;
  for (size_t i = 1; i < p.tokens; ++i) std::memcpy(view.out + i * p.width(), first, p.head_dim * sizeof(float));
}

void head_scalar(const AttentionProblem& p, const HeadView& view, const std::vector<uint32_t>& keys,
                 AttentionScratch& scratch) {
  const size_t dim = p.head_dim, n_keys = keys.size();
  scratch.scores.resize(n_keys);
  float* scores = scratch.scores.data();
  for (size_t i = 0; i < p.tokens; ++i) {
    const float* qi = view.q + i * p.width();
    float max_score = -std::numeric_limits<float>::infinity();
    for (size_t j = 0; j < n_keys; ++j) {
      const float* kj = view.k + keys[j] * p.width();
      float dot = 0.0f;
      for (size_t d = 0; d < dim; ++d) dot += qi[d] * kj[d];
      scores[j] = dot * p.scale + (view.bias ? view.bias[i * p.tokens + keys[j]] : 0.0f);
      max_score = std::max(max_score, scores[j]);
    }
    float sum = 0.0f;
    for (size_t j = 0; j < n_keys; ++j) {
      scores[j] = std::exp(scores[j] - max_score);
      sum += scores[j];
    }
    float* oi = view.out + i * p.width();
    std::fill(oi, oi + dim, 0.0f);
    for (size_t j = 0; j < n_keys; ++j) {
      const float* vj = view.v + keys[j] * p.width();
      float w = scores[j] / sum;
      for (size_t d = 0; d < dim; ++d) oi[d] += w * vj[d];
    }
  }
}

// Packs the attended keys of one head for the SIMD paths: K^T [dim, padded] pre-scaled, with
// zero columns up to `padded` (a multiple of the vector width), and V [keys, dim]; sizes the
// scores buffer for `rows` query rows. Returns `padded`.
size_t pack_head(const AttentionProblem& p, const HeadView& view, const std::vector<uint32_t>& keys, size_t dim,
                 size_t lanes, size_t rows, AttentionScratch& scratch) {
  const size_t n_keys = keys.size(), padded = (n_keys + lanes - 1) / lanes * lanes;
  scratch.keys_t.resize(dim * padded);
  scratch.values.resize(n_keys * dim);
  scratch.scores.resize(rows * padded);
  float* keys_t = scratch.keys_t.data();
  for (size_t j = 0; j < n_keys; ++j) {
    const float* kj = view.k + keys[j] * p.width();
    for (size_t d = 0; d < dim; ++d) keys_t[d * padded + j] = kj[d] * p.scale;
    std::memcpy(scratch.values.data() + j * dim, view.v + keys[j] * p.width(), dim * sizeof(float));
  }
  for (size_t d = 0; d < dim; ++d) std::fill(keys_t + d * padded + n_keys, keys_t + (d + 1) * padded, 0.0f);
  return padded;
}

// Query rows [i0, i0 + rows) of one head into `block` [block_rows, dim], zero rows after them.
void load_query_block(const AttentionProblem& p, const HeadView& view, size_t i0, int rows, int block_rows, size_t dim,
                      float* block) {
  for (int r = 0; r < block_rows; ++r) {
    if (r < rows)
      std::memcpy(block + r * dim, view.q + (i0 + r) * p.width(), dim * sizeof(float));
    else
      std::memset(block + r * dim, 0, dim * sizeof(float));
  }
}

// exp(x) for x <= 0 (softmax after subtracting the row max): 2^n * 2^f with f in [-0.5, 0.5],
// 2^f by a degree-6 polynomial (relative error < 2e-7); below -87 the result flushes to ~0.
EMBEDRANK_TARGET_AVX512 inline __m512 exp_nonpositive(__m512 x) {
  x = _mm512_max_ps(_mm512_set1_ps(-87.0f), x);  // operands in this order keep a NaN a NaN
  __m512 t = _mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f));
  __m512 n = _mm512_roundscale_ps(t, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 f = _mm512_sub_ps(t, n);
  __m512 poly = _mm512_set1_ps(1.5353362e-4f);
  poly = _mm512_fmadd_ps(poly, f, _mm512_set1_ps(1.3398874e-3f));
  poly = _mm512_fmadd_ps(poly, f, _mm512_set1_ps(9.6181291e-3f));
  poly = _mm512_fmadd_ps(poly, f, _mm512_set1_ps(5.5504109e-2f));
  poly = _mm512_fmadd_ps(poly, f, _mm512_set1_ps(2.4022651e-1f));
  poly = _mm512_fmadd_ps(poly, f, _mm512_set1_ps(6.9314718e-1f));
  poly = _mm512_fmadd_ps(poly, f, _mm512_set1_ps(1.0f));
  return _mm512_scalef_ps(poly, n);
}

// Softmax of the score rows of one block of query rows, in place: rows [0, rows) hold
// exp(score - row max) over the n_keys attended columns (zeros up to `padded`) and get
// inv_sum[r] = 1 / their sum; rows [rows, block_rows) are zeroed (inv_sum 0).
EMBEDRANK_TARGET_AVX512 inline void softmax_rows_avx512(float* scores, size_t padded, size_t n_keys, int rows,
                                                        int block_rows, float* inv_sum) {
  const size_t full = n_keys & ~size_t{15};
  const __mmask16 tail = static_cast<__mmask16>((1u << (n_keys - full)) - 1);
  for (int r = 0; r < block_rows; ++r) {
    float* row = scores + r * padded;
    if (r >= rows) {
      std::memset(row, 0, padded * sizeof(float));
      inv_sum[r] = 0.0f;
      continue;
    }
    __m512 max_v = _mm512_set1_ps(-std::numeric_limits<float>::infinity());
    for (size_t j = 0; j < full; j += 16) max_v = _mm512_max_ps(max_v, _mm512_loadu_ps(row + j));
    if (tail) max_v = _mm512_mask_max_ps(max_v, tail, max_v, _mm512_loadu_ps(row + full));
    const __m512 max_b = _mm512_set1_ps(_mm512_reduce_max_ps(max_v));
    __m512 sum = _mm512_setzero_ps();
    for (size_t j = 0; j < full; j += 16) {
      __m512 e = exp_nonpositive(_mm512_sub_ps(_mm512_loadu_ps(row + j), max_b));
      _mm512_storeu_ps(row + j, e);
      sum = _mm512_add_ps(sum, e);
    }
    if (tail) {
      __m512 e = _mm512_maskz_mov_ps(tail, exp_nonpositive(_mm512_sub_ps(_mm512_loadu_ps(row + full), max_b)));
      _mm512_storeu_ps(row + full, e);
      sum = _mm512_add_ps(sum, e);
    }
    inv_sum[r] = 1.0f / _mm512_reduce_add_ps(sum);
  }
}

// head_dim = 16 * kVectors. Query rows go in blocks of kRows: scores for the block against
// all keys (K^T packed and pre-scaled once per head), softmax per row, then P V with the
// block's output rows held in registers.
template <int kVectors>
EMBEDRANK_TARGET_AVX512 void head_avx512(const AttentionProblem& p, const HeadView& view, const std::vector<uint32_t>& keys,
                               AttentionScratch& scratch) {
  constexpr int kDim = 16 * kVectors;
  constexpr int kRows = kVectors <= 2 ? 8 : 4;
  const size_t n_keys = keys.size();
  const size_t padded = pack_head(p, view, keys, kDim, 16, kRows, scratch);
  const float* keys_t = scratch.keys_t.data();
  const float* values = scratch.values.data();
  float* scores = scratch.scores.data();

  alignas(64) float block_q[kRows * kDim];
  for (size_t i0 = 0; i0 < p.tokens; i0 += kRows) {
    const int rows = static_cast<int>(std::min<size_t>(kRows, p.tokens - i0));
    load_query_block(p, view, i0, rows, kRows, kDim, block_q);
    for (size_t j = 0; j < padded; j += 16) {
      __m512 acc[kRows];
      for (int r = 0; r < kRows; ++r) acc[r] = _mm512_setzero_ps();
      for (int d = 0; d < kDim; ++d) {
        __m512 kv = _mm512_loadu_ps(keys_t + d * padded + j);
        for (int r = 0; r < kRows; ++r) acc[r] = _mm512_fmadd_ps(_mm512_set1_ps(block_q[r * kDim + d]), kv, acc[r]);
      }
      for (int r = 0; r < kRows; ++r) _mm512_storeu_ps(scores + r * padded + j, acc[r]);
    }
    if (view.bias) add_bias(p, view, i0, static_cast<size_t>(rows), keys, scores, padded);
    float inv_sum[kRows];
    softmax_rows_avx512(scores, padded, n_keys, rows, kRows, inv_sum);
    __m512 out[kRows][kVectors];
    for (int r = 0; r < kRows; ++r)
      for (int c = 0; c < kVectors; ++c) out[r][c] = _mm512_setzero_ps();
    for (size_t j = 0; j < n_keys; ++j) {
      __m512 vj[kVectors];
      for (int c = 0; c < kVectors; ++c) vj[c] = _mm512_loadu_ps(values + j * kDim + 16 * c);
      for (int r = 0; r < kRows; ++r) {
        __m512 weight = _mm512_set1_ps(scores[r * padded + j]);
        for (int c = 0; c < kVectors; ++c) out[r][c] = _mm512_fmadd_ps(weight, vj[c], out[r][c]);
      }
    }
    for (int r = 0; r < rows; ++r) {
      float* oi = view.out + (i0 + r) * p.width();
      __m512 inv = _mm512_set1_ps(inv_sum[r]);
      for (int c = 0; c < kVectors; ++c) _mm512_storeu_ps(oi + 16 * c, _mm512_mul_ps(out[r][c], inv));
    }
  }
}

// Two floats per 32-bit word as bf16 (round to nearest even), `even` in the low half: the
// operand layout of vdpbf16ps, which multiplies each word's two halves with the other's.
EMBEDRANK_TARGET_AVX512_BF16 inline __m512i bf16_pairs(__m512 even, __m512 odd) {
  const __m512i low = _mm512_cvtepu16_epi32((__m256i)_mm512_cvtneps_pbh(even));
  const __m512i high = _mm512_cvtepu16_epi32((__m256i)_mm512_cvtneps_pbh(odd));
  return _mm512_or_si512(low, _mm512_slli_epi32(high, 16));
}

// x[0, n) as n / 2 words of consecutive pairs (x[2i] low, x[2i + 1] high); n a multiple of 16.
EMBEDRANK_TARGET_AVX512_BF16 inline void to_bf16_pairs(const float* x, size_t n, uint32_t* out) {
  size_t i = 0;
  for (; i + 32 <= n; i += 32)
    _mm512_storeu_si512(out + i / 2, (__m512i)_mm512_cvtne2ps_pbh(_mm512_loadu_ps(x + i + 16), _mm512_loadu_ps(x + i)));
  if (i < n) _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + i / 2), (__m256i)_mm512_cvtneps_pbh(_mm512_loadu_ps(x + i)));
}

// head_avx512 with both products on vdpbf16ps (see bf16_dots in attention.h): K^T is paired
// along head_dim, V and the softmax weights along the keys; the softmax is the fp32 one.
template <int kVectors>
EMBEDRANK_TARGET_AVX512_BF16 void head_avx512_bf16(const AttentionProblem& p, const HeadView& view,
                                                   const std::vector<uint32_t>& keys, AttentionScratch& scratch) {
  constexpr int kDim = 16 * kVectors, kPairs = kDim / 2;
  constexpr int kRows = kVectors <= 2 ? 8 : 4;
  const size_t n_keys = keys.size();
  const size_t padded = pack_head(p, view, keys, kDim, 16, kRows, scratch), half = padded / 2;
  const float* keys_t = scratch.keys_t.data();
  const float* values = scratch.values.data();
  float* scores = scratch.scores.data();
  scratch.keys_bf16.resize(kPairs * padded);
  scratch.values_bf16.resize(half * kDim);
  scratch.probs_bf16.resize(kRows * half);
  uint32_t* keys2 = scratch.keys_bf16.data();
  uint32_t* values2 = scratch.values_bf16.data();
  uint32_t* probs2 = scratch.probs_bf16.data();
  for (int d2 = 0; d2 < kPairs; ++d2)
    for (size_t j = 0; j < padded; j += 16)
      _mm512_storeu_si512(keys2 + d2 * padded + j, bf16_pairs(_mm512_loadu_ps(keys_t + 2 * d2 * padded + j),
                                                               _mm512_loadu_ps(keys_t + (2 * d2 + 1) * padded + j)));
  for (size_t j2 = 0; j2 < half; ++j2)
    for (int c = 0; c < kVectors; ++c) {
      const size_t even = 2 * j2, odd = even + 1;
      const __m512 ve = even < n_keys ? _mm512_loadu_ps(values + even * kDim + 16 * c) : _mm512_setzero_ps();
      const __m512 vo = odd < n_keys ? _mm512_loadu_ps(values + odd * kDim + 16 * c) : _mm512_setzero_ps();
      _mm512_storeu_si512(values2 + j2 * kDim + 16 * c, bf16_pairs(ve, vo));
    }

  alignas(64) float block_q[kRows * kDim];
  alignas(64) uint32_t block_q2[kRows * kPairs];
  for (size_t i0 = 0; i0 < p.tokens; i0 += kRows) {
    const int rows = static_cast<int>(std::min<size_t>(kRows, p.tokens - i0));
    load_query_block(p, view, i0, rows, kRows, kDim, block_q);
    for (int r = 0; r < kRows; ++r) to_bf16_pairs(block_q + r * kDim, kDim, block_q2 + r * kPairs);
    for (size_t j = 0; j < padded; j += 16) {
      __m512 acc[kRows];
      for (int r = 0; r < kRows; ++r) acc[r] = _mm512_setzero_ps();
      for (int d2 = 0; d2 < kPairs; ++d2) {
        const __m512bh kv = (__m512bh)_mm512_loadu_si512(keys2 + d2 * padded + j);
        for (int r = 0; r < kRows; ++r)
          acc[r] = _mm512_dpbf16_ps(acc[r], (__m512bh)_mm512_set1_epi32(static_cast<int>(block_q2[r * kPairs + d2])), kv);
      }
      for (int r = 0; r < kRows; ++r) _mm512_storeu_ps(scores + r * padded + j, acc[r]);
    }
    if (view.bias) add_bias(p, view, i0, static_cast<size_t>(rows), keys, scores, padded);
    float inv_sum[kRows];
    softmax_rows_avx512(scores, padded, n_keys, rows, kRows, inv_sum);
    for (int r = 0; r < kRows; ++r) to_bf16_pairs(scores + r * padded, padded, probs2 + r * half);
    __m512 out[kRows][kVectors];
    for (int r = 0; r < kRows; ++r)
      for (int c = 0; c < kVectors; ++c) out[r][c] = _mm512_setzero_ps();
    for (size_t j2 = 0; j2 < half; ++j2) {
      __m512bh vj[kVectors];
      for (int c = 0; c < kVectors; ++c) vj[c] = (__m512bh)_mm512_loadu_si512(values2 + j2 * kDim + 16 * c);
      for (int r = 0; r < kRows; ++r) {
        const __m512bh weight = (__m512bh)_mm512_set1_epi32(static_cast<int>(probs2[r * half + j2]));
        for (int c = 0; c < kVectors; ++c) out[r][c] = _mm512_dpbf16_ps(out[r][c], weight, vj[c]);
      }
    }
    for (int r = 0; r < rows; ++r) {
      float* oi = view.out + (i0 + r) * p.width();
      __m512 inv = _mm512_set1_ps(inv_sum[r]);
      for (int c = 0; c < kVectors; ++c) _mm512_storeu_ps(oi + 16 * c, _mm512_mul_ps(out[r][c], inv));
    }
  }
}

EMBEDRANK_TARGET_AVX2 inline float reduce_max8(__m256 v) {
  __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  m = _mm_max_ps(m, _mm_movehl_ps(m, m));
  m = _mm_max_ss(m, _mm_shuffle_ps(m, m, 1));
  return _mm_cvtss_f32(m);
}

// exp_nonpositive with 8 lanes: the same polynomial, 2^n built in the exponent bits.
EMBEDRANK_TARGET_AVX2 inline __m256 exp_nonpositive8(__m256 x) {
  x = _mm256_max_ps(_mm256_set1_ps(-87.0f), x);  // operands in this order keep a NaN a NaN
  __m256 t = _mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f));
  __m256 n = _mm256_round_ps(t, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 f = _mm256_sub_ps(t, n);
  __m256 poly = _mm256_set1_ps(1.5353362e-4f);
  poly = _mm256_fmadd_ps(poly, f, _mm256_set1_ps(1.3398874e-3f));
  poly = _mm256_fmadd_ps(poly, f, _mm256_set1_ps(9.6181291e-3f));
  poly = _mm256_fmadd_ps(poly, f, _mm256_set1_ps(5.5504109e-2f));
  poly = _mm256_fmadd_ps(poly, f, _mm256_set1_ps(2.4022651e-1f));
  poly = _mm256_fmadd_ps(poly, f, _mm256_set1_ps(6.9314718e-1f));
  poly = _mm256_fmadd_ps(poly, f, _mm256_set1_ps(1.0f));
  __m256i bits = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  return _mm256_mul_ps(poly, _mm256_castsi256_ps(bits));
}

// head_dim = 8 * kVectors, the AVX-512 scheme with 8 lanes; rows per block so that the
// block's outputs fit in 8 registers.
template <int kVectors>
EMBEDRANK_TARGET_AVX2 void head_avx2(const AttentionProblem& p, const HeadView& view, const std::vector<uint32_t>& keys,
                           AttentionScratch& scratch) {
  constexpr int kDim = 8 * kVectors;
  constexpr int kRows = kVectors >= 8 ? 1 : 8 / kVectors;
  const size_t n_keys = keys.size();
  const size_t padded = pack_head(p, view, keys, kDim, 8, kRows, scratch);
  const float* keys_t = scratch.keys_t.data();
  const float* values = scratch.values.data();
  float* scores = scratch.scores.data();
  const size_t full = n_keys & ~size_t{7};

  alignas(32) float block_q[kRows * kDim];
  for (size_t i0 = 0; i0 < p.tokens; i0 += kRows) {
    const int rows = static_cast<int>(std::min<size_t>(kRows, p.tokens - i0));
    load_query_block(p, view, i0, rows, kRows, kDim, block_q);
    for (size_t j = 0; j < padded; j += 8) {
      __m256 acc[kRows];
      for (int r = 0; r < kRows; ++r) acc[r] = _mm256_setzero_ps();
      for (int d = 0; d < kDim; ++d) {
        __m256 kv = _mm256_loadu_ps(keys_t + d * padded + j);
        for (int r = 0; r < kRows; ++r) acc[r] = _mm256_fmadd_ps(_mm256_set1_ps(block_q[r * kDim + d]), kv, acc[r]);
      }
      for (int r = 0; r < kRows; ++r) _mm256_storeu_ps(scores + r * padded + j, acc[r]);
    }
    if (view.bias) add_bias(p, view, i0, static_cast<size_t>(rows), keys, scores, padded);
    float inv_sum[kRows];
    for (int r = 0; r < kRows; ++r) {
      float* row = scores + r * padded;
      if (r >= rows) {
        std::memset(row, 0, padded * sizeof(float));
        inv_sum[r] = 0.0f;
        continue;
      }
      __m256 max_v = _mm256_set1_ps(-std::numeric_limits<float>::infinity());
      for (size_t j = 0; j < full; j += 8) max_v = _mm256_max_ps(max_v, _mm256_loadu_ps(row + j));
      float max_score = reduce_max8(max_v);
      for (size_t j = full; j < n_keys; ++j) max_score = std::max(max_score, row[j]);
      const __m256 max_b = _mm256_set1_ps(max_score);
      __m256 sum_v = _mm256_setzero_ps();
      for (size_t j = 0; j < full; j += 8) {
        __m256 e = exp_nonpositive8(_mm256_sub_ps(_mm256_loadu_ps(row + j), max_b));
        _mm256_storeu_ps(row + j, e);
        sum_v = _mm256_add_ps(sum_v, e);
      }
      float sum = reduce_add8(sum_v);
      for (size_t j = full; j < n_keys; ++j) {
        row[j] = std::exp(row[j] - max_score);
        sum += row[j];
      }
      inv_sum[r] = 1.0f / sum;
    }
    __m256 out[kRows][kVectors];
    for (int r = 0; r < kRows; ++r)
      for (int c = 0; c < kVectors; ++c) out[r][c] = _mm256_setzero_ps();
    for (size_t j = 0; j < n_keys; ++j) {
      for (int r = 0; r < kRows; ++r) {
        __m256 weight = _mm256_set1_ps(scores[r * padded + j]);
        for (int c = 0; c < kVectors; ++c)
          out[r][c] = _mm256_fmadd_ps(weight, _mm256_loadu_ps(values + j * kDim + 8 * c), out[r][c]);
      }
    }
    for (int r = 0; r < rows; ++r) {
      float* oi = view.out + (i0 + r) * p.width();
      __m256 inv = _mm256_set1_ps(inv_sum[r]);
      for (int c = 0; c < kVectors; ++c) _mm256_storeu_ps(oi + 8 * c, _mm256_mul_ps(out[r][c], inv));
    }
  }
}

using HeadFn = void (*)(const AttentionProblem& p, const HeadView& view, const std::vector<uint32_t>& keys,
                       AttentionScratch& scratch);

// The kernels for head_dim 16, 32 and 64; other head sizes take the portable loop.
struct AttentionOps {
  HeadFn head16, head32, head64;
};

void run_head(const AttentionProblem& p, const HeadView& view, const std::vector<uint32_t>& keys,
              AttentionScratch& scratch) {
  static const IsaTables<AttentionOps> tables({head_scalar, head_scalar, head_scalar},
                                              {head_avx2<2>, head_avx2<4>, head_avx2<8>},
                                              {head_avx512<1>, head_avx512<2>, head_avx512<4>});
  if (p.bf16_dots && bf16_dots_supported()) {
    switch (p.head_dim) {
      case 16: return head_avx512_bf16<1>(p, view, keys, scratch);
      case 32: return head_avx512_bf16<2>(p, view, keys, scratch);
      case 64: return head_avx512_bf16<4>(p, view, keys, scratch);
      default: break;  // the fp32 kernels below
    }
  }
  const AttentionOps& ops = tables.active();
  switch (p.head_dim) {
    case 16: return ops.head16(p, view, keys, scratch);
    case 32: return ops.head32(p, view, keys, scratch);
    case 64: return ops.head64(p, view, keys, scratch);
    default: return head_scalar(p, view, keys, scratch);
  }
}

void require(bool ok, const std::string& message) {
  if (!ok) throw std::invalid_argument(message);
}

}  // namespace

bool bf16_dots_supported() { return active_isa() == Isa::avx512 && cpu_features().avx512_bf16; }

void check_attention_problem(const AttentionProblem& p) {
  require(p.heads >= 1, "attention: heads must be >= 1");
  require(p.head_dim >= 1, "attention: head_dim must be >= 1");
  require(p.tokens <= std::numeric_limits<uint32_t>::max(), "attention: too many tokens");
  if (p.batch == 0 || p.tokens == 0) return;
  require(p.q && p.k && p.v && p.mask && p.out, "attention: null data pointer");
  require(!p.bias || p.bias_batch == 1 || p.bias_batch == p.batch, "attention: the bias batch must be 1 or the batch");
}

void attention_task(const AttentionProblem& p, size_t task, AttentionScratch& scratch) {
  const size_t b = task / p.heads, h = task % p.heads;
  HeadView view = head_view(p, b, h);
  if (!gather_keys(p, b, scratch.key_index)) return uniform_head(p, view);
  run_head(p, view, scratch.key_index, scratch);
}

void attention(const AttentionProblem& p, int num_threads) {
  check_attention_problem(p);
  const size_t n_tasks = attention_task_count(p);
  if (n_tasks == 0 || p.tokens == 0) return;
  // one resolved count sizes the scratch and the workers (the affinity mask may change between reads)
  const int threads = resolve_num_threads(num_threads);
  std::vector<AttentionScratch> scratch(static_cast<size_t>(threads));
  parallel_for(n_tasks, threads, [&](size_t task, int worker) { attention_task(p, task, scratch[worker]); });
}

}  // namespace embedrank
