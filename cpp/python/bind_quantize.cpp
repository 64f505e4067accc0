// int8_encode(x [N, D] float32, offset [D], inv_scale [D], out [N, D] int8, num_threads) -> first bad row | -1
// binarize(x [N, D] float32, out [N, ceil(D / 8)] uint8, num_threads) -> first bad row | -1
#include "core/quantize.h"
#include "python/common.h"

namespace embedrank {

void register_quantize(py::module_& m) {
  m.def("int8_encode", [](CArray<float> x, CArray<float> offset, CArray<float> inv_scale, CArray<int8_t> out,
                          int num_threads) {
    check_rows(x, "x", 2);
    size_t n = x.shape(0), d = x.shape(1);
    require(offset.size() == static_cast<py::ssize_t>(d) && inv_scale.size() == static_cast<py::ssize_t>(d),
            "offset/scale length does not match the dimension");
    require(out.size() == x.size(), "out has the wrong size");
    const float *in = x.data(), *off = offset.data(), *inv = inv_scale.data();
    int8_t* o = out.mutable_data();
    return without_gil([&] { return int8_encode(in, n, d, off, inv, o, num_threads); });
  });

  m.def("binarize", [](CArray<float> x, CArray<uint8_t> out, int num_threads) {
    check_rows(x, "x", 2);
    size_t n = x.shape(0), d = x.shape(1);
    check_matrix(out, n, (d + 7) / 8, "out has the wrong shape");
    const float* in = x.data();
    uint8_t* o = out.mutable_data();
    return without_gil([&] { return binarize(in, n, d, o, num_threads); });
  });
}

}  // namespace embedrank
