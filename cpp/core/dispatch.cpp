#include "dispatch.h"

#include <cpuid.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <stdexcept>
#include <string>

namespace embedrank {
namespace {

// AMX needs the CPU bits (CPUID.7.0:EDX bit 24 AMX-TILE, bit 25 AMX-INT8) and, on Linux, the
// process's permission to use the tile data state (arch_prctl ARCH_REQ_XCOMP_PERM).
bool amx_int8_usable() {
  // EMBEDRANK_AMX=0 turns AMX off (then int8 search runs on VNNI), e.g. to test that path.
  const char* setting = std::getenv("EMBEDRANK_AMX");
  if (setting && std::string(setting) == "0") return false;
  unsigned eax, ebx, ecx, edx;
  if (!__get_cpuid_count(7, 0, &eax, &ebx, &ecx, &edx)) return false;
  if (!((edx >> 24) & 1u) || !((edx >> 25) & 1u)) return false;
#if defined(__linux__) && defined(SYS_arch_prctl)
  constexpr long kArchReqXcompPerm = 0x1023;
  constexpr long kXfeatureXtiledata = 18;
  return syscall(SYS_arch_prctl, kArchReqXcompPerm, kXfeatureXtiledata) == 0;
#else
  return false;
#endif
}

CpuFeatures detect() {
  __builtin_cpu_init();
  CpuFeatures f;
  f.avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
           __builtin_cpu_supports("f16c") && __builtin_cpu_supports("popcnt");
  f.avx512 = f.avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
             __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
  f.avx512_vnni = f.avx512 && __builtin_cpu_supports("avx512vnni");
  f.avx512_vpopcntdq = f.avx512 && __builtin_cpu_supports("avx512vpopcntdq");
  f.amx_int8 = f.avx512 && amx_int8_usable();
  return f;
}

std::atomic<int> g_active{-1};

}  // namespace

const CpuFeatures& cpu_features() {
  static const CpuFeatures features = detect();
  return features;
}

std::vector<std::string> detected_feature_names() {
  const CpuFeatures& f = cpu_features();
  std::vector<std::string> names;
  if (f.avx2) names.push_back("avx2");
  if (f.avx2) names.push_back("fma");
  if (f.avx2) names.push_back("f16c");
  if (f.avx512) {
    names.push_back("avx512f");
    names.push_back("avx512bw");
    names.push_back("avx512vl");
    names.push_back("avx512dq");
  }
  if (f.avx512_vnni) names.push_back("avx512_vnni");
  if (f.avx512_vpopcntdq) names.push_back("avx512_vpopcntdq");
  if (f.amx_int8) names.push_back("amx_int8");
  return names;
}

Isa highest_supported_isa() {
  const CpuFeatures& f = cpu_features();
  if (f.avx512) return Isa::avx512;
  if (f.avx2) return Isa::avx2;
  return Isa::scalar;
}

Isa active_isa() {
  int level = g_active.load(std::memory_order_relaxed);
  if (level < 0) {
    level = static_cast<int>(highest_supported_isa());
    g_active.store(level, std::memory_order_relaxed);
  }
  return static_cast<Isa>(level);
}

void set_active_isa(Isa level) {
  if (static_cast<int>(level) > static_cast<int>(highest_supported_isa())) {
    throw std::invalid_argument(std::string("ISA level '") + isa_name(level) +
                                "' is not supported by this CPU (highest: " +
                                isa_name(highest_supported_isa()) + ")");
  }
  g_active.store(static_cast<int>(level), std::memory_order_relaxed);
}

const char* isa_name(Isa level) {
  switch (level) {
    case Isa::scalar: return "scalar";
    case Isa::avx2: return "avx2";
    case Isa::avx512: return "avx512";
  }
  return "unknown";
}

Isa isa_from_name(const std::string& name) {
  if (name == "scalar") return Isa::scalar;
  if (name == "avx2") return Isa::avx2;
  if (name == "avx512") return Isa::avx512;
  throw std::invalid_argument("unknown ISA level '" + name + "' (expected scalar, avx2 or avx512)");
}

}  // namespace embedrank
