#include "vector_ops.h"

#include <cstring>

#include "dispatch.h"
#include "simd.h"

namespace embedrank {

float half_to_float(uint16_t h) {
  uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  uint32_t exponent = (h >> 10) & 0x1Fu;
  uint32_t mantissa = h & 0x3FFu;
  uint32_t bits;
  if (exponent == 0) {
    if (mantissa == 0) {
      bits = sign;
    } else {  // subnormal half: renormalize
      exponent = 127 - 15 + 1;
      while ((mantissa & 0x400u) == 0) {
        mantissa <<= 1;
        --exponent;
      }
      mantissa &= 0x3FFu;
      bits = sign | (exponent << 23) | (mantissa << 13);
    }
  } else if (exponent == 0x1F) {
    bits = sign | 0x7F800000u | (mantissa << 13);
  } else {
    bits = sign | ((exponent + 127 - 15) << 23) | (mantissa << 13);
  }
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}

namespace {

// ---- scalar -------------------------------------------------------------------------------
void add_f32_scalar(float* acc, const float* x, size_t n) {
  for (size_t i = 0; i < n; ++i) acc[i] += x[i];
}
void add_f16_scalar(float* acc, const uint16_t* x, size_t n) {
  for (size_t i = 0; i < n; ++i) acc[i] += half_to_float(x[i]);
}
float sum_squares_scalar(const float* x, size_t n) {
  float s = 0.f;
  for (size_t i = 0; i < n; ++i) s += x[i] * x[i];
  return s;
}
void scale_scalar(float* out, const float* x, float factor, size_t n) {
  for (size_t i = 0; i < n; ++i) out[i] = x[i] * factor;
}
float dot_scalar(const float* a, const float* b, size_t n) {
  float s = 0.f;
  for (size_t i = 0; i < n; ++i) s += a[i] * b[i];
  return s;
}

float dot_i8_scalar(const float* a, const int8_t* b, size_t n) {
  float s = 0.f;
  for (size_t i = 0; i < n; ++i) s += a[i] * static_cast<float>(b[i]);
  return s;
}

// ---- AVX2 + FMA + F16C --------------------------------------------------------------------
EMBEDRANK_TARGET_AVX2 void add_f32_avx2(float* acc, const float* x, size_t n) {
  size_t i = 0;
  for (; i + 8 <= n; i += 8)
    _mm256_storeu_ps(acc + i, _mm256_add_ps(_mm256_loadu_ps(acc + i), _mm256_loadu_ps(x + i)));
  if (i < n) {
    __m256i m = tail_mask8(n - i);
    __m256 s = _mm256_add_ps(_mm256_maskload_ps(acc + i, m), _mm256_maskload_ps(x + i, m));
    _mm256_maskstore_ps(acc + i, m, s);
  }
}

EMBEDRANK_TARGET_AVX2 void add_f16_avx2(float* acc, const uint16_t* x, size_t n) {
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    __m256 v = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(x + i)));
    _mm256_storeu_ps(acc + i, _mm256_add_ps(_mm256_loadu_ps(acc + i), v));
  }
  if (i < n) {
    alignas(16) uint16_t tail[8] = {0};
    std::memcpy(tail, x + i, (n - i) * sizeof(uint16_t));
    __m256i m = tail_mask8(n - i);
    __m256 v = _mm256_cvtph_ps(_mm_load_si128(reinterpret_cast<const __m128i*>(tail)));
    _mm256_maskstore_ps(acc + i, m, _mm256_add_ps(_mm256_maskload_ps(acc + i, m), v));
  }
}

EMBEDRANK_TARGET_AVX2 float sum_squares_avx2(const float* x, size_t n) {
  __m256 s = _mm256_setzero_ps();
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    __m256 v = _mm256_loadu_ps(x + i);
    s = _mm256_fmadd_ps(v, v, s);
  }
  if (i < n) {
    __m256 v = _mm256_maskload_ps(x + i, tail_mask8(n - i));
    s = _mm256_fmadd_ps(v, v, s);
  }
  return reduce_add8(s);
}

EMBEDRANK_TARGET_AVX2 void scale_avx2(float* out, const float* x, float factor, size_t n) {
  __m256 f = _mm256_set1_ps(factor);
  size_t i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(out + i, _mm256_mul_ps(_mm256_loadu_ps(x + i), f));
  if (i < n) {
    __m256i m = tail_mask8(n - i);
    _mm256_maskstore_ps(out + i, m, _mm256_mul_ps(_mm256_maskload_ps(x + i, m), f));
  }
}

EMBEDRANK_TARGET_AVX2 float dot_avx2(const float* a, const float* b, size_t n) {
  __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
  size_t i = 0;
  for (; i + 16 <= n; i += 16) {
    s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
    s1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), s1);
  }
  for (; i + 8 <= n; i += 8) s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
  if (i < n) {
    __m256i m = tail_mask8(n - i);
    s1 = _mm256_fmadd_ps(_mm256_maskload_ps(a + i, m), _mm256_maskload_ps(b + i, m), s1);
  }
  return reduce_add8(_mm256_add_ps(s0, s1));
}

EMBEDRANK_TARGET_AVX2 float dot_i8_avx2(const float* a, const int8_t* b, size_t n) {
  __m256 s0 = _mm256_setzero_ps();
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    __m256 v = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(b + i))));
    s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), v, s0);
  }
  if (i < n) {
    alignas(16) int8_t tail[16] = {0};
    std::memcpy(tail, b + i, n - i);
    __m256 v = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_load_si128(reinterpret_cast<const __m128i*>(tail))));
    s0 = _mm256_fmadd_ps(_mm256_maskload_ps(a + i, tail_mask8(n - i)), v, s0);
  }
  return reduce_add8(s0);
}

// ---- AVX-512 ------------------------------------------------------------------------------
EMBEDRANK_TARGET_AVX512 void add_f32_avx512(float* acc, const float* x, size_t n) {
  size_t i = 0;
  for (; i + 16 <= n; i += 16)
    _mm512_storeu_ps(acc + i, _mm512_add_ps(_mm512_loadu_ps(acc + i), _mm512_loadu_ps(x + i)));
  if (i < n) {
    __mmask16 m = tail_mask16(n - i);
    _mm512_mask_storeu_ps(acc + i, m,
                          _mm512_add_ps(_mm512_maskz_loadu_ps(m, acc + i), _mm512_maskz_loadu_ps(m, x + i)));
  }
}

EMBEDRANK_TARGET_AVX512 void add_f16_avx512(float* acc, const uint16_t* x, size_t n) {
  size_t i = 0;
  for (; i + 16 <= n; i += 16) {
    __m512 v = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(x + i)));
    _mm512_storeu_ps(acc + i, _mm512_add_ps(_mm512_loadu_ps(acc + i), v));
  }
  if (i < n) {
    __mmask16 m = tail_mask16(n - i);
    __m512 v = _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, x + i));
    _mm512_mask_storeu_ps(acc + i, m, _mm512_add_ps(_mm512_maskz_loadu_ps(m, acc + i), v));
  }
}

EMBEDRANK_TARGET_AVX512 float sum_squares_avx512(const float* x, size_t n) {
  __m512 s = _mm512_setzero_ps();
  size_t i = 0;
  for (; i + 16 <= n; i += 16) {
    __m512 v = _mm512_loadu_ps(x + i);
    s = _mm512_fmadd_ps(v, v, s);
  }
  if (i < n) {
    __m512 v = _mm512_maskz_loadu_ps(tail_mask16(n - i), x + i);
    s = _mm512_fmadd_ps(v, v, s);
  }
  return _mm512_reduce_add_ps(s);
}

EMBEDRANK_TARGET_AVX512 void scale_avx512(float* out, const float* x, float factor, size_t n) {
  __m512 f = _mm512_set1_ps(factor);
  size_t i = 0;
  for (; i + 16 <= n; i += 16) _mm512_storeu_ps(out + i, _mm512_mul_ps(_mm512_loadu_ps(x + i), f));
  if (i < n) {
    __mmask16 m = tail_mask16(n - i);
    _mm512_mask_storeu_ps(out + i, m, _mm512_mul_ps(_mm512_maskz_loadu_ps(m, x + i), f));
  }
}

EMBEDRANK_TARGET_AVX512 float dot_avx512(const float* a, const float* b, size_t n) {
  __m512 s0 = _mm512_setzero_ps(), s1 = _mm512_setzero_ps();
  size_t i = 0;
  for (; i + 32 <= n; i += 32) {
    s0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), s0);
    s1 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 16), _mm512_loadu_ps(b + i + 16), s1);
  }
  for (; i + 16 <= n; i += 16) s0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), s0);
  if (i < n) {
    __mmask16 m = tail_mask16(n - i);
    s1 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, a + i), _mm512_maskz_loadu_ps(m, b + i), s1);
  }
  return _mm512_reduce_add_ps(_mm512_add_ps(s0, s1));
}

EMBEDRANK_TARGET_AVX512 float dot_i8_avx512(const float* a, const int8_t* b, size_t n) {
  __m512 s0 = _mm512_setzero_ps();
  for (size_t i = 0; i < n; i += 16) {
    __mmask16 m = tail_mask16(n - i);
    __m512 v = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_maskz_loadu_epi8(m, b + i)));
    s0 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, a + i), v, s0);
  }
  return _mm512_reduce_add_ps(s0);
}

}  // namespace

const VectorOps& vector_ops() {
  static const IsaTables<VectorOps> tables(
      {add_f32_scalar, add_f16_scalar, sum_squares_scalar, scale_scalar, dot_scalar, dot_i8_scalar},
      {add_f32_avx2, add_f16_avx2, sum_squares_avx2, scale_avx2, dot_avx2, dot_i8_avx2},
      {add_f32_avx512, add_f16_avx512, sum_squares_avx512, scale_avx512, dot_avx512, dot_i8_avx512});
  return tables.active();
}

}  // namespace embedrank
