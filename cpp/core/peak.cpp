#include "core/peak.h"

#include <chrono>
#include <stdexcept>
#include <vector>

#include "core/dispatch.h"
#include "core/simd.h"
#include "core/thread_pool.h"

namespace embedrank {
namespace {

// Accumulators per loop: at least the FMA latency (4 cycles) times the pipes (2) on every
// current x86 core, so the loops are throughput-bound, not latency-bound. 12 for ymm: with 16
// the two constants make AVX2's 16 registers spill, and spilled chains run at half speed.
constexpr int kChains = 16;
constexpr int kChainsYmm = 12;

// Each loop returns a sum of its accumulators so the compiler cannot drop the work.
EMBEDRANK_TARGET_AVX2 float fma_avx2(long long iterations) {
  __m256 acc[kChainsYmm];
  const __m256 b = _mm256_set1_ps(0.999999f), c = _mm256_set1_ps(1e-7f);
  for (int i = 0; i < kChainsYmm; ++i) acc[i] = _mm256_set1_ps(static_cast<float>(i));
  for (long long it = 0; it < iterations; ++it) {
#pragma GCC unroll 12
    for (int i = 0; i < kChainsYmm; ++i) acc[i] = _mm256_fmadd_ps(acc[i], b, c);
  }
  float sum = 0.0f;
  for (int i = 0; i < kChainsYmm; ++i) sum += reduce_add8(acc[i]);
  return sum;
}

EMBEDRANK_TARGET_AVX512 float fma_avx512(long long iterations) {
  __m512 acc[kChains];
  const __m512 b = _mm512_set1_ps(0.999999f), c = _mm512_set1_ps(1e-7f);
  for (int i = 0; i < kChains; ++i) acc[i] = _mm512_set1_ps(static_cast<float>(i));
  for (long long it = 0; it < iterations; ++it) {
#pragma GCC unroll 16
    for (int i = 0; i < kChains; ++i) acc[i] = _mm512_fmadd_ps(acc[i], b, c);
  }
  float sum = 0.0f;
  for (int i = 0; i < kChains; ++i) sum += _mm512_reduce_add_ps(acc[i]);
  return sum;
}

EMBEDRANK_TARGET_AVX512_BF16 float dpbf16_avx512(long long iterations) {
  __m512 acc[kChains];
  const __m512bh one = reinterpret_cast<__m512bh>(_mm512_set1_epi16(0x3f80));  // bf16 1.0
  for (int i = 0; i < kChains; ++i) acc[i] = _mm512_set1_ps(static_cast<float>(i));
  for (long long it = 0; it < iterations; ++it) {
#pragma GCC unroll 16
    for (int i = 0; i < kChains; ++i) acc[i] = _mm512_dpbf16_ps(acc[i], one, one);
  }
  float sum = 0.0f;
  for (int i = 0; i < kChains; ++i) sum += _mm512_reduce_add_ps(acc[i]);
  return sum;
}

EMBEDRANK_TARGET_AVX512_VNNI float dpbusd_avx512(long long iterations) {
  __m512i acc[kChains];
  const __m512i one = _mm512_set1_epi8(1);
  for (int i = 0; i < kChains; ++i) acc[i] = _mm512_set1_epi32(i);
  for (long long it = 0; it < iterations; ++it) {
#pragma GCC unroll 16
    for (int i = 0; i < kChains; ++i) acc[i] = _mm512_dpbusd_epi32(acc[i], one, one);
  }
  long long sum = 0;
  for (int i = 0; i < kChains; ++i) sum += _mm512_reduce_add_epi32(acc[i]);
  return static_cast<float>(sum);
}

struct Loop {
  float (*fn)(long long);
  double ops_per_iteration;  // a multiply-add counts 2
  const char* instruction;
};

Loop choose_loop(const std::string& precision) {
  const CpuFeatures& f = cpu_features();
  const bool avx512 = active_isa() == Isa::avx512;
  if (precision == "fp32") {
    if (avx512) return {fma_avx512, kChains * 16 * 2, "vfmadd231ps zmm"};
    if (active_isa() == Isa::avx2) return {fma_avx2, kChainsYmm * 8 * 2, "vfmadd231ps ymm"};
    throw std::invalid_argument("measure_peak: fp32 needs AVX2+FMA or AVX-512 (the active ISA level is scalar)");
  }
  if (precision == "bf16") {
    if (avx512 && f.avx512_bf16) return {dpbf16_avx512, kChains * 32 * 2, "vdpbf16ps zmm"};
    throw std::invalid_argument("measure_peak: bf16 needs AVX512-BF16 (vdpbf16ps), which this CPU or ISA level lacks");
  }
  if (precision == "int8") {
    if (avx512 && f.avx512_vnni) return {dpbusd_avx512, kChains * 64 * 2, "vpdpbusd zmm"};
    throw std::invalid_argument("measure_peak: int8 needs AVX512-VNNI (vpdpbusd), which this CPU or ISA level lacks");
  }
  throw std::invalid_argument("measure_peak: precision must be 'fp32', 'bf16' or 'int8', got '" + precision + "'");
}

}  // namespace

PeakMeasurement measure_peak(const std::string& precision, int threads, long long iterations) {
  if (threads < 1) throw std::invalid_argument("measure_peak: threads must be >= 1, got " + std::to_string(threads));
  if (iterations < 1)
    throw std::invalid_argument("measure_peak: iterations must be >= 1, got " + std::to_string(iterations));
  const Loop loop = choose_loop(precision);
  std::vector<float> sink(threads);
  const auto start = std::chrono::steady_clock::now();
  parallel_for(static_cast<size_t>(threads), threads,
               [&](size_t task, int) { sink[task] = loop.fn(iterations); });
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  volatile float keep = 0.0f;
  for (float s : sink) keep = keep + s;
  const double ops = static_cast<double>(threads) * static_cast<double>(iterations) * loop.ops_per_iteration;
  return {ops / seconds / 1e9, seconds, loop.instruction};
}

}  // namespace embedrank
