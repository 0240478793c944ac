// CPU kernel of the AMTFL family: the fused elementwise pass of one row chunk
// (bias, relu, residual, gradient mask, squared-norm and bias-gradient sums),
// parallel over rows with at::parallel_for. Chunks are sized to stay in cache
// between the GEMMs that surround this pass (see cpu_chunk_rows).
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdlib>
#include <vector>

#include "ops/amtfl.h"

// The selects of the residual loop (relu, gradient mask) may only be if-converted,
// hence vectorised, when floating-point operations are known not to trap; PyTorch
// itself is built with -fno-trapping-math. (NaN semantics are unchanged.)
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("no-trapping-math")
#endif

namespace mtlkernels {
namespace {

constexpr int64_t kBlock = 256;  // columns per block: the residuals wait in L1 for the reduction
constexpr int kLanes = 8;         // independent float64 accumulators (vectorisable, schedule-independent)

// Rows [r0, r1): for each block of columns, one branch-free elementwise loop (it
// vectorises: restrict pointers, selects), then the float64 reduction of the
// block's squared residuals in kLanes lanes.
template <typename T, bool HasBias, bool WantG, bool HasDZ, bool HasDB>
void residual_rows(T* P, const T* Z, const T* bias, T* dZ, int64_t k, int64_t r0, int64_t r1, double* loss,
                   double* db) {
  double lane[kLanes] = {0};
  alignas(64) T buf[kBlock];
  for (int64_t r = r0; r < r1; ++r) {
    for (int64_t c0 = 0; c0 < k; c0 += kBlock) {
      const int64_t n = std::min(kBlock, k - c0);
      T* __restrict__ p = P + r * k + c0;
      const T* __restrict__ z = Z + r * k + c0;
      T* __restrict__ dz = HasDZ ? dZ + r * k + c0 : nullptr;
      const T* __restrict__ bb = HasBias ? bias + c0 : nullptr;
      double* __restrict__ dbb = HasDB ? db + c0 : nullptr;
      T* __restrict__ out = buf;
      for (int64_t j = 0; j < n; ++j) {
        T v = p[j];
        if constexpr (HasBias) v += bb[j];
        const T y = v < T(0) ? T(0) : v;  // relu; NaN propagates
        const T res = y - z[j];
        out[j] = res;
        if constexpr (WantG) {
          const T g = y <= T(0) ? T(0) : T(2) * res;  // relu'(v) = 1[relu(v) > 0], NaN passes
          p[j] = g;
          if constexpr (HasDB) dbb[j] += g;
        }
        if constexpr (HasDZ) dz[j] = T(-2) * res;
      }
      int64_t j = 0;
      for (; j + kLanes <= n; j += kLanes) {
        for (int l = 0; l < kLanes; ++l) lane[l] += static_cast<double>(buf[j + l]) * static_cast<double>(buf[j + l]);
      }
      for (; j < n; ++j) lane[j % kLanes] += static_cast<double>(buf[j]) * static_cast<double>(buf[j]);
    }
  }
  double ss = 0;
  for (int l = 0; l < kLanes; ++l) ss += lane[l];
  *loss += ss;
}

template <typename T, bool HasBias, bool WantG, bool HasDZ, bool HasDB>
void residual_impl(at::Tensor& P, const at::Tensor& Z, const at::Tensor& bias, at::Tensor& dZ,
                   at::Tensor& loss_acc, at::Tensor& db_acc) {
  const int64_t B = P.size(0), k = P.size(1);
  if (B == 0 || k == 0) return;
  T* pp = P.data_ptr<T>();
  const T* zp = Z.data_ptr<T>();
  const T* bp = HasBias ? bias.data_ptr<T>() : nullptr;
  T* dzp = HasDZ ? dZ.data_ptr<T>() : nullptr;
  // Per-thread partials [loss, db_0 .. db_{k-1}], summed in thread order (deterministic).
  const int nt = at::get_num_threads();
  const int64_t stride = 1 + (HasDB ? k : 0);
  std::vector<double> part(static_cast<size_t>(nt) * stride, 0.0);
  const int64_t grain = std::max<int64_t>(1, 16384 / k);
  at::parallel_for(0, B, grain, [&](int64_t r0, int64_t r1) {
    double* acc = part.data() + static_cast<int64_t>(at::get_thread_num()) * stride;
    residual_rows<T, HasBias, WantG, HasDZ, HasDB>(pp, zp, bp, dzp, k, r0, r1, acc, acc + 1);
  });
  double loss = 0;
  for (int t = 0; t < nt; ++t) loss += part[static_cast<size_t>(t) * stride];
  *loss_acc.data_ptr<double>() += loss;
  if constexpr (HasDB) {
    double* db = db_acc.data_ptr<double>();
    for (int t = 0; t < nt; ++t) {
      const double* src = part.data() + static_cast<int64_t>(t) * stride + 1;
      for (int64_t c = 0; c < k; ++c) db[c] += src[c];
    }
  }
}

void residual_cpu(at::Tensor& P, const at::Tensor& Z, const at::Tensor& bias, bool want_g, at::Tensor& dZ,
                  at::Tensor& loss_acc, at::Tensor& db_acc) {
  const bool hb = bias.defined(), hdz = dZ.defined(), hdb = db_acc.defined();
  TORCH_INTERNAL_ASSERT(!(hdz || hdb) || want_g);
  AT_DISPATCH_FLOATING_TYPES(P.scalar_type(), "amtfl_residual_cpu", [&] {
    // (bias?, G?, dZ?, db?): the combinations the entry point produces.
    auto run = [&](auto has_bias) {
      constexpr bool HB = decltype(has_bias)::value;
      if (!want_g) return residual_impl<scalar_t, HB, false, false, false>(P, Z, bias, dZ, loss_acc, db_acc);
      if (hdz && hdb) return residual_impl<scalar_t, HB, true, true, true>(P, Z, bias, dZ, loss_acc, db_acc);
      if (hdz) return residual_impl<scalar_t, HB, true, true, false>(P, Z, bias, dZ, loss_acc, db_acc);
      if (hdb) return residual_impl<scalar_t, HB, true, false, true>(P, Z, bias, dZ, loss_acc, db_acc);
      return residual_impl<scalar_t, HB, true, false, false>(P, Z, bias, dZ, loss_acc, db_acc);
    };
    if (hb) run(std::true_type{});
    else run(std::false_type{});
  });
}

// Rows per chunk. The chunk's two buffers (B x T and B x k) hold at most a quarter
// of Z's size (so that they never dominate the memory), at most 2^22 elements
// (16 MiB in float32: they stay in this CPU's L3 between the GEMMs) and at least
// 2^16. A chunk has at least 512 rows: the weight gradients dA += H^T G and
// dW += Z^T dH read and write a whole k x T matrix per chunk, so thin chunks would
// make these rank-B updates memory-bound.
// MTLKERNELS_AMTFL_CPU_CHUNK (elements) overrides the budget (tests use it to force
// many chunks).
int64_t cpu_chunk_rows(int64_t N, int64_t k, int64_t T) {
  int64_t budget = std::clamp<int64_t>(N * k / 4, int64_t(1) << 16, int64_t(1) << 22);
  if (const char* env = std::getenv("MTLKERNELS_AMTFL_CPU_CHUNK")) budget = std::max<int64_t>(1, std::atoll(env));
  return std::max<int64_t>(512, budget / std::max<int64_t>(1, k + T));
}

}  // namespace

TORCH_LIBRARY_IMPL(mtlkernels, CPU, m) { register_amtfl<residual_cpu, cpu_chunk_rows>(m); }

}  // namespace mtlkernels
