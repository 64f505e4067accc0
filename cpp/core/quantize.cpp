#include "quantize.h"

#include <algorithm>
#include <atomic>
#include <cmath>

#include "dispatch.h"
#include "simd.h"
#include "thread_pool.h"

namespace embedrank {
namespace {

constexpr size_t kRowsPerTask = 512;

// Each row function returns false when the row holds NaN/Inf.
struct QuantizeOps {
  bool (*encode_row)(const float* x, size_t d, const float* offset, const float* inv_scale, int8_t* out);
  bool (*binarize_row)(const float* x, size_t d, uint8_t* out);
};

bool encode_row_scalar(const float* x, size_t d, const float* offset, const float* inv_scale, int8_t* out) {
  bool finite = true;
  for (size_t j = 0; j < d; ++j) {
    float v = x[j];
    finite &= std::isfinite(v);
    float q = std::nearbyint((v - offset[j]) * inv_scale[j]);
    q = std::min(127.0f, std::max(-127.0f, q));
    out[j] = static_cast<int8_t>(finite ? q : 0.0f);
  }
  return finite;
}

bool binarize_row_scalar(const float* x, size_t d, uint8_t* out) {
  bool finite = true;
  size_t n_bytes = (d + 7) / 8;
  for (size_t b = 0; b < n_bytes; ++b) {
    uint8_t byte = 0;
    for (size_t bit = 0; bit < 8; ++bit) {
      size_t j = b * 8 + bit;
      if (j < d) {
        finite &= std::isfinite(x[j]);
        if (x[j] > 0.0f) byte |= static_cast<uint8_t>(0x80u >> bit);
      }
    }
    out[b] = byte;
  }
  return finite;
}

EMBEDRANK_TARGET_AVX2 bool encode_row_avx2(const float* x, size_t d, const float* offset, const float* inv_scale,
                                 int8_t* out) {
  const __m256 lo = _mm256_set1_ps(-127.0f), hi = _mm256_set1_ps(127.0f);
  const __m256 abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7FFFFFFF));
  const __m256 max_finite = _mm256_set1_ps(3.402823466e38f);
  __m256 bad = _mm256_setzero_ps();
  for (size_t j = 0; j < d; j += 8) {
    __m256i m = tail_mask8(d - j);
    __m256 v = _mm256_maskload_ps(x + j, m);
    bad = _mm256_or_ps(bad, _mm256_cmp_ps(_mm256_and_ps(v, abs_mask), max_finite, _CMP_NLE_UQ));
    __m256 q = _mm256_mul_ps(_mm256_sub_ps(v, _mm256_maskload_ps(offset + j, m)), _mm256_maskload_ps(inv_scale + j, m));
    q = _mm256_round_ps(q, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    q = _mm256_min_ps(hi, _mm256_max_ps(lo, q));
    __m256i qi = _mm256_cvtps_epi32(q);
    alignas(32) int32_t tmp[8];
    _mm256_store_si256(reinterpret_cast<__m256i*>(tmp), qi);
    size_t count = std::min<size_t>(8, d - j);
    for (size_t t = 0; t < count; ++t) out[j + t] = static_cast<int8_t>(tmp[t]);
  }
  return _mm256_movemask_ps(bad) == 0;
}

EMBEDRANK_TARGET_AVX2 bool binarize_row_avx2(const float* x, size_t d, uint8_t* out) {
  const __m256 zero = _mm256_setzero_ps();
  const __m256 abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7FFFFFFF));
  const __m256 max_finite = _mm256_set1_ps(3.402823466e38f);
  __m256 bad = _mm256_setzero_ps();
  for (size_t j = 0; j < d; j += 8) {
    __m256i m = tail_mask8(d - j);
    __m256 v = _mm256_maskload_ps(x + j, m);
    bad = _mm256_or_ps(bad, _mm256_cmp_ps(_mm256_and_ps(v, abs_mask), max_finite, _CMP_NLE_UQ));
    unsigned bits = static_cast<unsigned>(_mm256_movemask_ps(_mm256_cmp_ps(v, zero, _CMP_GT_OQ)));
    // movemask puts element 0 in bit 0; packbits wants it in bit 7.
    bits = ((bits & 0xF0u) >> 4) | ((bits & 0x0Fu) << 4);
    bits = ((bits & 0xCCu) >> 2) | ((bits & 0x33u) << 2);
    bits = ((bits & 0xAAu) >> 1) | ((bits & 0x55u) << 1);
    out[j / 8] = static_cast<uint8_t>(bits);
  }
  return _mm256_movemask_ps(bad) == 0;
}

EMBEDRANK_TARGET_AVX512 bool encode_row_avx512(const float* x, size_t d, const float* offset, const float* inv_scale,
                                     int8_t* out) {
  const __m512 lo = _mm512_set1_ps(-127.0f), hi = _mm512_set1_ps(127.0f);
  __mmask16 bad = 0;
  for (size_t j = 0; j < d; j += 16) {
    __mmask16 m = tail_mask16(d - j);
    __m512 v = _mm512_maskz_loadu_ps(m, x + j);
    bad |= _mm512_fpclass_ps_mask(v, 0x99);  // QNaN | +Inf | -Inf | SNaN
    __m512 q = _mm512_mul_ps(_mm512_sub_ps(v, _mm512_maskz_loadu_ps(m, offset + j)),
                             _mm512_maskz_loadu_ps(m, inv_scale + j));
    q = _mm512_roundscale_ps(q, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    q = _mm512_min_ps(hi, _mm512_max_ps(lo, q));
    _mm512_mask_cvtepi32_storeu_epi8(out + j, m, _mm512_cvtps_epi32(q));
  }
  return bad == 0;
}

EMBEDRANK_TARGET_AVX512 bool binarize_row_avx512(const float* x, size_t d, uint8_t* out) {
  const __m512 zero = _mm512_setzero_ps();
  __mmask16 bad = 0;
  for (size_t j = 0; j < d; j += 16) {
    __mmask16 m = tail_mask16(d - j);
    __m512 v = _mm512_maskz_loadu_ps(m, x + j);
    bad |= _mm512_fpclass_ps_mask(v, 0x99);
    unsigned bits = _mm512_mask_cmp_ps_mask(m, v, zero, _CMP_GT_OQ);
    // Reverse the bit order inside each byte: element 0 goes to bit 7 (numpy packbits).
    bits = ((bits & 0xF0F0u) >> 4) | ((bits & 0x0F0Fu) << 4);
    bits = ((bits & 0xCCCCu) >> 2) | ((bits & 0x3333u) << 2);
    bits = ((bits & 0xAAAAu) >> 1) | ((bits & 0x5555u) << 1);
    out[j / 8] = static_cast<uint8_t>(bits);
    if (d - j > 8) out[j / 8 + 1] = static_cast<uint8_t>(bits >> 8);
  }
  return bad == 0;
}

template <typename RowFn>
int64_t run_rows(size_t n, int num_threads, RowFn row) {
  std::atomic<int64_t> first_bad{-1};
  size_t n_tasks = (n + kRowsPerTask - 1) / kRowsPerTask;
  parallel_for(n_tasks, num_threads, [&](size_t task, int) {
    size_t end = std::min(n, (task + 1) * kRowsPerTask);
    for (size_t i = task * kRowsPerTask; i < end; ++i) {
      if (!row(i)) {
        int64_t expected = first_bad.load();
        while ((expected < 0 || static_cast<int64_t>(i) < expected) &&
               !first_bad.compare_exchange_weak(expected, static_cast<int64_t>(i))) {
        }
      }
    }
  });
  return first_bad.load();
}

const QuantizeOps& quantize_ops() {
  static const IsaTables<QuantizeOps> tables({encode_row_scalar, binarize_row_scalar},
                                             {encode_row_avx2, binarize_row_avx2},
                                             {encode_row_avx512, binarize_row_avx512});
  return tables.active();
}

}  // namespace

int64_t int8_encode(const float* x, size_t n, size_t d, const float* offset, const float* inv_scale,
                    int8_t* codes, int num_threads) {
  const auto fn = quantize_ops().encode_row;
  return run_rows(n, num_threads, [&](size_t i) { return fn(x + i * d, d, offset, inv_scale, codes + i * d); });
}

int64_t binarize(const float* x, size_t n, size_t d, uint8_t* bits, int num_threads) {
  const auto fn = quantize_ops().binarize_row;
  size_t n_bytes = (d + 7) / 8;
  return run_rows(n, num_threads, [&](size_t i) { return fn(x + i * d, d, bits + i * n_bytes); });
}

}  // namespace embedrank
