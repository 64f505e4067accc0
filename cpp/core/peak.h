// Measured arithmetic peaks, for the benchmarks' "of peak" columns.
//
// A nominal clock times the vendor's operations per cycle overstates or understates what a
// core delivers (turbo, AVX-512 licences, a VM's reported MHz). These loops run the widest
// multiply-add of each precision on independent accumulators, one chain per register, so the
// result is the instruction's sustained throughput on this machine at this moment.
#pragma once

#include <string>

namespace embedrank {

struct PeakMeasurement {
  double gops = 0.0;          // operations per second, all threads, in billions (a multiply-add counts 2)
  double seconds = 0.0;       // wall time of the timed run
  std::string instruction;    // what was timed, e.g. "vfmadd231ps zmm"
};

// precision: "fp32" (FMA: AVX-512 or AVX2), "bf16" (vdpbf16ps, needs AVX512-BF16),
// "int8" (vpdpbusd, needs AVX512-VNNI). AMX tiles are not timed here.
// Throws std::invalid_argument for an unknown precision, threads < 1 or iterations < 1, and
// when the CPU (or the active ISA level) lacks the instruction, naming it.
PeakMeasurement measure_peak(const std::string& precision, int threads, long long iterations);

}  // namespace embedrank
