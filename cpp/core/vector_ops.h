// Small per-ISA vector primitives shared by the pooling and normalization kernels.
// Each has a scalar, an AVX2 and an AVX-512 definition (tails handled with masks in the SIMD
// variants); vector_ops() returns the table for the active ISA level.
#pragma once

#include <cstddef>
#include <cstdint>

namespace embedrank {

struct VectorOps {
  // acc[i] += x[i] for i < n
  void (*add_f32)(float* acc, const float* x, size_t n);
  // acc[i] += float(x[i]) for i < n, x holding IEEE half-precision bits
  void (*add_f16)(float* acc, const uint16_t* x, size_t n);
  // sum of x[i]^2
  float (*sum_squares)(const float* x, size_t n);
  // out[i] = x[i] * factor
  void (*scale)(float* out, const float* x, float factor, size_t n);
  // sum of a[i] * b[i]
  float (*dot)(const float* a, const float* b, size_t n);
  // sum of a[i] * float(b[i])
  float (*dot_i8)(const float* a, const int8_t* b, size_t n);
};

const VectorOps& vector_ops();

float half_to_float(uint16_t bits);

}  // namespace embedrank
