// Pooling and normalization of transformer outputs.
#pragma once

#include <cstddef>
#include <cstdint>

namespace embedrank {

enum class HiddenType { float32, float16 };
enum class MaskType { int64, int32, uint8 };

// hidden: [batch, tokens, dim] row-major (float32, or float16 bits as uint16);
// mask: [batch, tokens], nonzero = token counts; out: [batch, dim] float32.
// Masked mean of each row, then (if normalize) L2 normalization, in one pass over `hidden`.
// Throws std::invalid_argument naming the first row whose mask is all zero.
void mean_pool(const void* hidden, HiddenType hidden_type, const void* mask, MaskType mask_type,
               size_t batch, size_t tokens, size_t dim, bool normalize, float* out, int num_threads);

// out[i, :] = x[i, :n] / max(||x[i, :n]||, 1e-12) for rows of `x` with row stride `x_stride`
// (in floats); out has row stride n. Zero rows stay zero.
void normalize_rows(const float* x, size_t x_stride, size_t rows, size_t n, float* out, int num_threads);

}  // namespace embedrank
