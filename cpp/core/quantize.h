// Scalar quantization: float32 -> int8 codes and float32 -> packed sign bits.
#pragma once

#include <cstddef>
#include <cstdint>

namespace embedrank {

// codes[i, j] = clamp(rint((x[i, j] - offset[j]) * inv_scale[j]), -127, 127), rounding half to
// even. x: [n, d] float32; codes: [n, d] int8. Returns the first row holding NaN/Inf (codes
// are then unspecified) or -1.
int64_t int8_encode(const float* x, size_t n, size_t d, const float* offset, const float* inv_scale,
                    int8_t* codes, int num_threads);

// bits[i, :] = packbits(x[i, :] > 0) (numpy's big-endian bit order, rows padded with zero bits
// to ceil(d / 8) bytes). Returns the first row holding NaN/Inf (bits unspecified) or -1.
int64_t binarize(const float* x, size_t n, size_t d, uint8_t* bits, int num_threads);

}  // namespace embedrank
