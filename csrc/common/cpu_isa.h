// Run-time choice of the CPU instruction set for kernels compiled several times.
//
// The extension is built without -march flags (one wheel for every x86-64 CPU), so hot
// loops are compiled once per ISA with GCC target attributes (MTL_TARGET_AVX512,
// MTL_TARGET_AVX2, and the baseline) and the widest one this CPU supports is picked at
// run time by cpu_isa(). MTLKERNELS_CPU_ISA=base|avx2|avx512 caps the choice (read at
// every call, so that tests can exercise every variant on one machine).
#pragma once

#include <algorithm>
#include <cstdlib>
#include <string>

#if defined(__x86_64__) && defined(__GNUC__)
#define MTL_TARGET_AVX512 __attribute__((target("avx512f,avx512vl,avx512bw,avx512dq,avx2,fma,avx")))
#define MTL_TARGET_AVX2 __attribute__((target("avx2,fma,avx")))
#define MTL_HAVE_X86_VARIANTS 1
#endif

namespace mtlkernels {

enum class Isa { Base, Avx2, Avx512 };

inline Isa cpu_isa() {
#ifdef MTL_HAVE_X86_VARIANTS
  static const Isa hw = [] {
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
        __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq"))
      return Isa::Avx512;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return Isa::Avx2;
    return Isa::Base;
  }();
  Isa cap = Isa::Avx512;
  if (const char* env = std::getenv("MTLKERNELS_CPU_ISA")) {
    const std::string v(env);
    if (v == "base") cap = Isa::Base;
    else if (v == "avx2") cap = Isa::Avx2;
  }
  return std::min(hw, cap);
#else
  return Isa::Base;
#endif
}

// Entry `kind` of the table for the widest ISA in use; `avx2` / `avx512` may be null
// (not compiled on this target). Pass the three tables with MTL_ISA_TABLES(prefix) for
// tables named prefix_base, prefix_avx2 and prefix_avx512.
template <typename Fn>
Fn pick_isa(int kind, const Fn* base, const Fn* avx2 = nullptr, const Fn* avx512 = nullptr) {
  const Isa isa = cpu_isa();
  if (isa == Isa::Avx512 && avx512) return avx512[kind];
  if (isa >= Isa::Avx2 && avx2) return avx2[kind];
  return base[kind];
}

#ifdef MTL_HAVE_X86_VARIANTS
#define MTL_ISA_TABLES(PREFIX) PREFIX##_base, PREFIX##_avx2, PREFIX##_avx512
#else
#define MTL_ISA_TABLES(PREFIX) PREFIX##_base
#endif

}  // namespace mtlkernels
