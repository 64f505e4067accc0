// CPU features, the active ISA level and the per-family variant tables.
//
// Every kernel is compiled in three levels (scalar, avx2, avx512) with the target attributes
// of simd.h. The level starts at the highest the CPU supports; apply_environment() lowers it
// from EMBEDRANK_ISA, and set_active_isa() can lower it later (never above the CPU), e.g. for
// tests. Within avx512, VNNI, VPOPCNTDQ and AMX variants are used where CpuFeatures has them.
#pragma once

#include <string>
#include <vector>

namespace embedrank {

enum class Isa { scalar = 0, avx2 = 1, avx512 = 2 };
constexpr int kIsaLevels = 3;

struct CpuFeatures {
  bool avx2 = false;              // AVX2 + FMA + F16C + POPCNT
  bool avx512 = false;            // AVX-512 F/BW/VL/DQ
  bool avx512_vnni = false;
  bool avx512_vpopcntdq = false;
  bool avx512_bf16 = false;
  bool amx_int8 = false;          // AMX tiles with int8 dot products, usable (OS permission granted)
  bool amx_bf16 = false;          // AMX tiles with bf16 dot products, usable
};

// The features of this CPU, detected once; AMX is reported off when EMBEDRANK_AMX=0.
const CpuFeatures& cpu_features();
std::vector<std::string> detected_feature_names();
Isa highest_supported_isa();

Isa active_isa();
// Throws std::invalid_argument when `level` is above highest_supported_isa().
void set_active_isa(Isa level);

const char* isa_name(Isa level);
Isa isa_from_name(const std::string& name);  // throws std::invalid_argument

// The library's environment settings, read once per process (nowhere else):
//   EMBEDRANK_ISA = scalar | avx2 | avx512   lowers the ISA level (empty or unset: highest)
//   EMBEDRANK_AMX = 0                         turns AMX off (int8 search then runs on VNNI)
struct EnvironmentSettings {
  std::string isa;  // lower-cased and trimmed, empty when unset
  bool amx_disabled = false;
};
const EnvironmentSettings& environment_settings();

// Sets the active level from EMBEDRANK_ISA (no-op when unset). Throws std::invalid_argument
// with a message naming the variable when the level is unknown or above the CPU's.
void apply_environment();

// One table of function pointers per ISA level for a kernel family, built once (a function-
// local static, so without data races) and indexed by the level active at each call, so a
// later set_active_isa() takes effect.
template <class Table>
class IsaTables {
 public:
  IsaTables(const Table& scalar, const Table& avx2, const Table& avx512) : tables_{scalar, avx2, avx512} {}
  const Table& active() const { return at(active_isa()); }
  const Table& at(Isa level) const { return tables_[static_cast<int>(level)]; }

 private:
  Table tables_[kIsaLevels];
};

}  // namespace embedrank
