// Helpers shared by the binding files of embedrank._kernels.
//
// Python (src/embedrank/kernels/) validates every argument, converts dtypes and allocates the
// outputs; the bindings only check what they must to stay memory-safe, release the GIL, and
// map errors: std::invalid_argument -> ValueError, Ctrl-C -> KeyboardInterrupt.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <stdexcept>
#include <string>

#include "core/thread_pool.h"

namespace embedrank {
namespace py = pybind11;

template <typename T>
using CArray = py::array_t<T, py::array::c_style>;

inline void require(bool ok, const std::string& message) {
  if (!ok) throw std::invalid_argument(message);
}

// `a` has `ndim` dimensions and is C-contiguous.
inline void check_rows(const py::array& a, const char* name, size_t ndim) {
  require(static_cast<size_t>(a.ndim()) == ndim, std::string(name) + " must be " + std::to_string(ndim) + "-D");
  require(a.flags() & py::array::c_style, std::string(name) + " must be C-contiguous");
}

// `out` is [rows, cols].
inline void check_matrix(const py::array& out, size_t rows, size_t cols, const std::string& message) {
  require(out.ndim() == 2 && static_cast<size_t>(out.shape(0)) == rows && static_cast<size_t>(out.shape(1)) == cols,
          message);
}

// Polled by the thread pool while a kernel runs without the GIL.
inline bool python_interrupted() {
  py::gil_scoped_acquire gil;
  return PyErr_CheckSignals() != 0;
}

// Runs `work` without the GIL; a Ctrl-C seen meanwhile becomes KeyboardInterrupt.
template <typename Work>
auto without_gil(Work work) -> decltype(work()) {
  try {
    py::gil_scoped_release release;
    return work();
  } catch (const Interrupted&) {
    throw py::error_already_set();
  }
}

// One register function per kernel family (bind_*.cpp), called by module.cpp.
void register_dispatch(py::module_& m);
void register_pooling(py::module_& m);
void register_quantize(py::module_& m);
void register_search(py::module_& m);
void register_lexical(py::module_& m);
void register_attention(py::module_& m);

}  // namespace embedrank
