// mean_pool(hidden [B, T, D] float32|float16, mask [B, T] int64|int32|bool|uint8, normalize,
//           out [B, D] float32, num_threads)
// normalize_rows(x [N, S] float32, n_cols <= S, out [N, n_cols] float32, num_threads)
#include "core/pooling.h"
#include "python/common.h"

namespace embedrank {
namespace {

HiddenType hidden_type(const py::dtype& dt) {
  if (dt.kind() == 'f' && dt.itemsize() == 4) return HiddenType::float32;
  if (dt.kind() == 'f' && dt.itemsize() == 2) return HiddenType::float16;
  throw std::invalid_argument("hidden must be float32 or float16");
}

MaskType mask_type(const py::dtype& dt) {
  if (dt.kind() == 'i' && dt.itemsize() == 8) return MaskType::int64;
  if (dt.kind() == 'i' && dt.itemsize() == 4) return MaskType::int32;
  if ((dt.kind() == 'b' || dt.kind() == 'u') && dt.itemsize() == 1) return MaskType::uint8;
  throw std::invalid_argument("mask must be int64, int32, bool or uint8");
}

}  // namespace

void register_pooling(py::module_& m) {
  m.def("mean_pool", [](const py::array& hidden, const py::array& mask, bool normalize, CArray<float> out,
                        int num_threads) {
    check_rows(hidden, "hidden", 3);
    check_rows(mask, "mask", 2);
    size_t batch = hidden.shape(0), tokens = hidden.shape(1), dim = hidden.shape(2);
    require(static_cast<size_t>(mask.shape(0)) == batch && static_cast<size_t>(mask.shape(1)) == tokens,
            "mask shape does not match hidden");
    check_matrix(out, batch, dim, "out has the wrong shape");
    HiddenType ht = hidden_type(hidden.dtype());
    MaskType mt = mask_type(mask.dtype());
    const void* h = hidden.data();
    const void* mk = mask.data();
    float* o = out.mutable_data();
    without_gil([&] { mean_pool(h, ht, mk, mt, batch, tokens, dim, normalize, o, num_threads); });
  });

  m.def("normalize_rows", [](CArray<float> x, size_t n_cols, CArray<float> out, int num_threads) {
    check_rows(x, "x", 2);
    size_t rows = x.shape(0), stride = x.shape(1);
    require(n_cols <= stride, "n_cols exceeds the row length");
    check_matrix(out, rows, n_cols, "out has the wrong shape");
    const float* in = x.data();
    float* o = out.mutable_data();
    without_gil([&] { normalize_rows(in, stride, rows, n_cols, o, num_threads); });
  });
}

}  // namespace embedrank
