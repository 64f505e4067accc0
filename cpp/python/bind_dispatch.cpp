// ISA level, CPU features and thread count.
#include "core/dispatch.h"
#include "core/peak.h"
#include "core/thread_pool.h"
#include "python/common.h"

namespace embedrank {

void register_dispatch(py::module_& m) {
  m.def("detected_features", &detected_feature_names);
  m.def("highest_isa", [] { return std::string(isa_name(highest_supported_isa())); });
  m.def("active_isa", [] { return std::string(isa_name(active_isa())); });
  m.def("set_isa", [](const std::string& name) { set_active_isa(isa_from_name(name)); });
  // EMBEDRANK_ISA applied (ValueError naming the variable when unknown or above the CPU).
  m.def("apply_environment", &apply_environment);
  m.def("default_num_threads", &default_num_threads);
  // Sustained multiply-add throughput of one precision (embedrank/bench/roofline.py).
  m.def(
      "measure_peak",
      [](const std::string& precision, int threads, long long iterations) {
        const PeakMeasurement m = without_gil([&] { return measure_peak(precision, threads, iterations); });
        py::dict out;
        out["gops"] = m.gops;
        out["seconds"] = m.seconds;
        out["instruction"] = m.instruction;
        return out;
      },
      py::arg("precision"), py::arg("threads"), py::arg("iterations"));
}

}  // namespace embedrank
