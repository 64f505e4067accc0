// CPU feature detection and the active ISA level.
//
// Every kernel is compiled in three variants (scalar, avx2, avx512) with per-function
// target attributes; the level is chosen once at import and can be lowered (never raised
// above what the CPU supports) for testing.
#pragma once

#include <string>
#include <vector>

namespace embedrank {

enum class Isa { scalar = 0, avx2 = 1, avx512 = 2 };

struct CpuFeatures {
  bool avx2 = false;       // AVX2 + FMA + F16C
  bool avx512 = false;     // AVX-512 F/BW/VL/DQ
  bool avx512_vnni = false;
  bool avx512_vpopcntdq = false;
  bool amx_int8 = false;   // AMX tiles with int8 dot products, usable (OS permission granted)
};

const CpuFeatures& cpu_features();
std::vector<std::string> detected_feature_names();
Isa highest_supported_isa();

Isa active_isa();
// Throws std::invalid_argument when `level` is above highest_supported_isa().
void set_active_isa(Isa level);

const char* isa_name(Isa level);
Isa isa_from_name(const std::string& name);  // throws std::invalid_argument

// Shorthands used by the kernels when choosing a variant.
inline bool use_avx512() { return active_isa() == Isa::avx512; }
inline bool use_avx2() { return active_isa() >= Isa::avx2; }

}  // namespace embedrank
