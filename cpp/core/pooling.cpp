#include "pooling.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>

#include "thread_pool.h"
#include "vector_ops.h"

namespace embedrank {
namespace {

constexpr size_t kRowsPerTask = 4;

// Below this sum of squares some squared elements may have underflowed to subnormals or
// zero (|x| < 1e-19), above it some may have overflowed; either way the float sum is not
// the norm, so normalize_row takes its exact path.
constexpr float kMinSafeSumSquares = 1e-30f;
constexpr float kMaxSafeSumSquares = 1e30f;

// out = x / ||x|| (out may be x). The dispatched float kernels handle ordinary rows; a row
// whose squares underflow or overflow in float (values near 1e-20 or 1e20) is divided by its
// norm computed in double, where every float's square is a normal number, so any non-zero
// row comes out with norm 1 and an all-zero row stays zero. NaN rows stay NaN.
void normalize_row(const VectorOps& ops, const float* x, float* out, size_t n) {
  float sum = ops.sum_squares(x, n);
  if (sum >= kMinSafeSumSquares && sum <= kMaxSafeSumSquares) {
    ops.scale(out, x, 1.0f / std::sqrt(sum), n);
    return;
  }
  double exact = 0.0;
  for (size_t i = 0; i < n; ++i) exact += static_cast<double>(x[i]) * static_cast<double>(x[i]);
  double norm = std::sqrt(exact);
  if (norm == 0.0) norm = 1.0;  // an all-zero row stays zero
  for (size_t i = 0; i < n; ++i) out[i] = static_cast<float>(static_cast<double>(x[i]) / norm);
}

void normalize_in_place(const VectorOps& ops, float* row, size_t dim) { normalize_row(ops, row, row, dim); }

template <typename Mask>
void mean_pool_rows(const void* hidden, HiddenType hidden_type, const Mask* mask, size_t row_begin,
                    size_t row_end, size_t tokens, size_t dim, bool normalize, float* out) {
  const VectorOps& ops = vector_ops();
  for (size_t b = row_begin; b < row_end; ++b) {
    float* acc = out + b * dim;
    std::fill(acc, acc + dim, 0.0f);
    const Mask* row_mask = mask + b * tokens;
    size_t count = 0;
    for (size_t t = 0; t < tokens; ++t) {
      if (row_mask[t] == 0) continue;
      ++count;
      size_t offset = (b * tokens + t) * dim;
      if (hidden_type == HiddenType::float32)
        ops.add_f32(acc, static_cast<const float*>(hidden) + offset, dim);
      else
        ops.add_f16(acc, static_cast<const uint16_t*>(hidden) + offset, dim);
    }
    if (count == 0)
      throw std::invalid_argument("mask row " + std::to_string(b) +
                                  " is all zero: cannot mean-pool a text with no tokens");
    ops.scale(acc, acc, 1.0f / static_cast<float>(count), dim);
    if (normalize) normalize_in_place(ops, acc, dim);
  }
}

}  // namespace

void mean_pool(const void* hidden, HiddenType hidden_type, const void* mask, MaskType mask_type,
               size_t batch, size_t tokens, size_t dim, bool normalize, float* out, int num_threads) {
  size_t n_tasks = (batch + kRowsPerTask - 1) / kRowsPerTask;
  parallel_for(n_tasks, num_threads, [&](size_t task, int) {
    size_t begin = task * kRowsPerTask;
    size_t end = std::min(batch, begin + kRowsPerTask);
    switch (mask_type) {
      case MaskType::int64:
        mean_pool_rows(hidden, hidden_type, static_cast<const int64_t*>(mask), begin, end, tokens, dim,
                       normalize, out);
        break;
      case MaskType::int32:
        mean_pool_rows(hidden, hidden_type, static_cast<const int32_t*>(mask), begin, end, tokens, dim,
                       normalize, out);
        break;
      case MaskType::uint8:
        mean_pool_rows(hidden, hidden_type, static_cast<const uint8_t*>(mask), begin, end, tokens, dim,
                       normalize, out);
        break;
    }
  });
}

void normalize_rows(const float* x, size_t x_stride, size_t rows, size_t n, float* out, int num_threads) {
  constexpr size_t kRowsPerNormTask = 256;
  size_t n_tasks = (rows + kRowsPerNormTask - 1) / kRowsPerNormTask;
  parallel_for(n_tasks, num_threads, [&](size_t task, int) {
    const VectorOps& ops = vector_ops();
    size_t end = std::min(rows, (task + 1) * kRowsPerNormTask);
    for (size_t r = task * kRowsPerNormTask; r < end; ++r) {
      const float* row = x + r * x_stride;
      normalize_row(ops, row, out + r * n, n);
    }
  });
}

}  // namespace embedrank
