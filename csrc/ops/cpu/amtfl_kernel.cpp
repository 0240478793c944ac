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

namespace mtlkernels {
namespace {

constexpr int kLanes = 8;  // independent float64 accumulators (vectorisable)

template <typename T, bool HasBias, bool WantG, bool HasDZ, bool HasDB>
void residual_rows(T* P, const T* Z, const T* bias, T* dZ, int64_t k, int64_t r0, int64_t r1, double* loss,
                   double* db) {
  double lane[kLanes] = {0};
  for (int64_t r = r0; r < r1; ++r) {
    T* p = P + r * k;
    const T* z = Z + r * k;
    T* dz = HasDZ ? dZ + r * k : nullptr;
    auto one = [&](int64_t c, double& acc) {
      T v = p[c];
      if constexpr (HasBias) v += bias[c];
      const T y = v < T(0) ? T(0) : v;  // relu; NaN propagates
      const T res = y - z[c];
      acc += static_cast<double>(res) * res;
      if constexpr (WantG) {
        const T g = y <= T(0) ? T(0) : T(2) * res;  // relu'(v) = 1[relu(v) > 0], NaN passes
        p[c] = g;
        if constexpr (HasDB) db[c] += g;
      }
      if constexpr (HasDZ) dz[c] = T(-2) * res;
    };
    int64_t c = 0;
    for (; c + kLanes <= k; c += kLanes) {
      for (int j = 0; j < kLanes; ++j) one(c + j, lane[j]);
    }
    for (; c < k; ++c) one(c, lane[c % kLanes]);
  }
  double s = 0;
  for (int j = 0; j < kLanes; ++j) s += lane[j];
  *loss += s;
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
