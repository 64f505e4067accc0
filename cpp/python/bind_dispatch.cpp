// ISA level, CPU features and thread count.
#include "core/dispatch.h"
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
}

}  // namespace embedrank
