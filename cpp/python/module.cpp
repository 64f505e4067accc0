// embedrank._kernels: the C++/Python boundary (internal: use embedrank.kernels).
#include "python/common.h"

PYBIND11_MODULE(_kernels, m) {
  m.doc() = "embedrank's C++ kernels (internal: use embedrank.kernels)";
  embedrank::register_dispatch(m);
  embedrank::register_pooling(m);
  embedrank::register_quantize(m);
  embedrank::register_search(m);
  embedrank::register_attention(m);
  embedrank::register_lexical(m);
}
