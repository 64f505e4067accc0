#include "dispatch.h"

#include <cpuid.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cstdlib>
#include <stdexcept>
#include <string>

namespace embedrank {
namespace {

constexpr const char* kIsaVariable = "EMBEDRANK_ISA";
constexpr const char* kAmxVariable = "EMBEDRANK_AMX";

std::string trimmed_lower(const char* text) {
  std::string s = text ? text : "";
  auto space = [](unsigned char c) { return std::isspace(c) != 0; };
  s.erase(s.begin(), std::find_if_not(s.begin(), s.end(), space));
  s.erase(std::find_if_not(s.rbegin(), s.rend(), space).base(), s.end());
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return std::tolower(c); });
  return s;
}

EnvironmentSettings read_environment() {
  EnvironmentSettings settings;
  settings.isa = trimmed_lower(std::getenv(kIsaVariable));
  const char* amx = std::getenv(kAmxVariable);
  settings.amx_disabled = amx && std::string(amx) == "0";
  return settings;
}

bool bit(unsigned value, int index) { return (value >> index) & 1u; }

// AMX needs the CPU bits (CPUID.7.0:EDX bit 24 AMX-TILE) and, on Linux, the process's
// permission to use the tile data state (arch_prctl ARCH_REQ_XCOMP_PERM).
bool amx_tiles_usable() {
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
  unsigned eax, ebx, ecx, edx;
  if (f.avx512 && __get_cpuid_count(7, 1, &eax, &ebx, &ecx, &edx)) f.avx512_bf16 = bit(eax, 5);
  if (f.avx512 && !environment_settings().amx_disabled && __get_cpuid_count(7, 0, &eax, &ebx, &ecx, &edx) &&
      bit(edx, 24) && (bit(edx, 25) || bit(edx, 22)) && amx_tiles_usable()) {
    f.amx_int8 = bit(edx, 25);
    f.amx_bf16 = bit(edx, 22);
  }
  return f;
}

std::atomic<int> g_active{-1};

}  // namespace

const EnvironmentSettings& environment_settings() {
  static const EnvironmentSettings settings = read_environment();
  return settings;
}

const CpuFeatures& cpu_features() {
  static const CpuFeatures features = detect();
  return features;
}

std::vector<std::string> detected_feature_names() {
  const CpuFeatures& f = cpu_features();
  std::vector<std::string> names;
  if (f.avx2) names.insert(names.end(), {"avx2", "fma", "f16c"});
  if (f.avx512) names.insert(names.end(), {"avx512f", "avx512bw", "avx512vl", "avx512dq"});
  if (f.avx512_vnni) names.push_back("avx512_vnni");
  if (f.avx512_vpopcntdq) names.push_back("avx512_vpopcntdq");
  if (f.avx512_bf16) names.push_back("avx512_bf16");
  if (f.amx_int8) names.push_back("amx_int8");
  if (f.amx_bf16) names.push_back("amx_bf16");
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

void apply_environment() {
  const std::string& requested = environment_settings().isa;
  if (requested.empty()) return;
  const std::string shown = std::string(kIsaVariable) + "='" + requested + "'";
  Isa level;
  try {
    level = isa_from_name(requested);
  } catch (const std::invalid_argument&) {
    throw std::invalid_argument(shown + " is not a known ISA level; expected one of scalar, avx2, avx512");
  }
  Isa highest = highest_supported_isa();
  if (static_cast<int>(level) > static_cast<int>(highest)) {
    std::string features;
    for (const std::string& name : detected_feature_names()) features += (features.empty() ? "" : ", ") + name;
    throw std::invalid_argument(shown + " is above what this CPU supports (highest: '" + isa_name(highest) +
                                "'; detected features: " + (features.empty() ? "none" : features) + ")");
  }
  set_active_isa(level);
}

}  // namespace embedrank
