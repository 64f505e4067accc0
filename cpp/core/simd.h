// Target attributes of the SIMD variants, defined once.
//
// The library is compiled without -march flags; each variant function carries one of these
// attributes and is only called when cpu_features() (dispatch.h) reports what it names.
// Every level includes the ones below it, so a variant may call the helpers of a lower level.
#pragma once

#include <immintrin.h>

// Isa::avx2: AVX2 + FMA + F16C + POPCNT.
#define EMBEDRANK_TARGET_AVX2 __attribute__((target("avx2,fma,f16c,popcnt")))
#define EMBEDRANK_AVX512_BASE "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c,popcnt"
// Isa::avx512: AVX-512 F/BW/VL/DQ.
#define EMBEDRANK_TARGET_AVX512 __attribute__((target(EMBEDRANK_AVX512_BASE)))
// Optional extensions within Isa::avx512 (CpuFeatures bits of the same names).
#define EMBEDRANK_TARGET_AVX512_VNNI __attribute__((target(EMBEDRANK_AVX512_BASE ",avx512vnni")))
#define EMBEDRANK_TARGET_AVX512_BF16 __attribute__((target(EMBEDRANK_AVX512_BASE ",avx512bf16")))
#define EMBEDRANK_TARGET_AVX512_VPOPCNTDQ __attribute__((target(EMBEDRANK_AVX512_BASE ",avx512vpopcntdq")))
#define EMBEDRANK_TARGET_AMX_INT8 __attribute__((target(EMBEDRANK_AVX512_BASE ",amx-tile,amx-int8")))

#include <cstddef>

namespace embedrank {

// Lanes [0, remaining) of 8 int32/float lanes set (all when remaining >= 8).
EMBEDRANK_TARGET_AVX2 inline __m256i tail_mask8(size_t remaining) {
  const __m256i lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  int count = remaining >= 8 ? 8 : static_cast<int>(remaining);
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(count), lanes);
}

// Sum of the 8 lanes, as ((v0 + v4) + (v2 + v6)) + ((v1 + v5) + (v3 + v7)).
EMBEDRANK_TARGET_AVX2 inline float reduce_add8(__m256 v) {
  __m128 m = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  m = _mm_add_ps(m, _mm_movehl_ps(m, m));
  m = _mm_add_ss(m, _mm_movehdup_ps(m));
  return _mm_cvtss_f32(m);
}

// Bits [0, remaining) of a 16-lane mask set (all when remaining >= 16).
EMBEDRANK_TARGET_AVX512 inline __mmask16 tail_mask16(size_t remaining) {
  return remaining >= 16 ? static_cast<__mmask16>(0xFFFF) : static_cast<__mmask16>((1u << remaining) - 1u);
}

}  // namespace embedrank
