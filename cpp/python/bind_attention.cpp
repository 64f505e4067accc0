// attention(q, k, v [B, T, H * head_dim] float32, mask [B, T] int64, out [B, T, H * head_dim] float32,
//           num_heads, scale, num_threads, bias [1 or B, H, T, T] float32 or None, bf16_dots)
#include "core/attention.h"
#include "python/common.h"

#include <optional>

namespace embedrank {

void register_attention(py::module_& m) {
  m.def("attention", [](CArray<float> q, CArray<float> k, CArray<float> v, CArray<int64_t> mask, CArray<float> out,
                        size_t num_heads, float scale, int num_threads, std::optional<CArray<float>> bias,
                        bool bf16_dots) {
    check_rows(q, "q", 3);
    require(num_heads >= 1, "num_heads must be >= 1");
    size_t batch = q.shape(0), tokens = q.shape(1), width = q.shape(2);
    require(width % num_heads == 0, "hidden size is not a multiple of num_heads");
    for (const CArray<float>* a : {&k, &v, &out})
      require(a->ndim() == 3 && static_cast<size_t>(a->shape(0)) == batch && static_cast<size_t>(a->shape(1)) == tokens &&
                  static_cast<size_t>(a->shape(2)) == width,
              "k, v and out must have q's shape");
    check_matrix(mask, batch, tokens, "mask must be [batch, tokens]");
    if (bias) {
      check_rows(*bias, "bias", 4);
      require((static_cast<size_t>(bias->shape(0)) == 1 || static_cast<size_t>(bias->shape(0)) == batch) &&
                  static_cast<size_t>(bias->shape(1)) == num_heads && static_cast<size_t>(bias->shape(2)) == tokens &&
                  static_cast<size_t>(bias->shape(3)) == tokens,
              "bias must be [1 or batch, heads, tokens, tokens]");
    }
    AttentionProblem p;
    p.q = q.data();
    p.k = k.data();
    p.v = v.data();
    p.mask = mask.data();
    p.out = out.mutable_data();
    p.batch = batch;
    p.tokens = tokens;
    p.heads = num_heads;
    p.head_dim = width / num_heads;
    p.scale = scale;
    p.bf16_dots = bf16_dots;
    if (bias) {
      p.bias = bias->data();
      p.bias_batch = static_cast<size_t>(bias->shape(0));
    }
    without_gil([&] { attention(p, num_threads); });
  }, py::arg("q"), py::arg("k"), py::arg("v"), py::arg("mask"), py::arg("out"), py::arg("num_heads"), py::arg("scale"),
        py::arg("num_threads"), py::arg("bias") = py::none(), py::arg("bf16_dots") = false);
  m.def("bf16_dots_supported", &bf16_dots_supported);
}

}  // namespace embedrank
