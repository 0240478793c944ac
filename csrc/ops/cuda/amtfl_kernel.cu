// CUDA kernel of the AMTFL family: the fused elementwise pass of one row chunk
// between the cuBLAS GEMMs of amtfl.cpp. One read of P and Z, one write of G (in
// place over P) and of -2R (into dZ); the squared norm and the bias gradient are
// reduced per block into float64 partials (no atomics: the sums do not depend on
// the schedule) and added to the accumulators by two small reductions.
//
// Block (32, 8): a warp covers 32 adjacent columns of one row (coalesced), the 8
// warps of a block 8 rows; blocks stride over rows.
#include <ATen/Dispatch.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>

#include <algorithm>
#include <cstdint>

#include "ops/amtfl.h"

namespace mtlkernels {
namespace {

constexpr int kTX = 32, kTY = 8;

__device__ __forceinline__ double warp_sum(double v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

template <typename T, bool HasBias, bool WantG, bool HasDZ, bool HasDB>
__global__ void __launch_bounds__(kTX* kTY) residual_kernel(T* __restrict__ P, const T* __restrict__ Z,
                                                            const T* __restrict__ bias, T* __restrict__ dZ,
                                                            int64_t B, int64_t k, double* __restrict__ loss_part,
                                                            double* __restrict__ db_part) {
  const int64_t c = int64_t(blockIdx.x) * kTX + threadIdx.x;
  double ss = 0, cs = 0;
  if (c < k) {
    const T bc = HasBias ? bias[c] : T(0);
    for (int64_t r = int64_t(blockIdx.y) * kTY + threadIdx.y; r < B; r += int64_t(gridDim.y) * kTY) {
      const int64_t i = r * k + c;
      T v = P[i];
      if constexpr (HasBias) v += bc;
      const T y = v < T(0) ? T(0) : v;  // relu; NaN propagates
      const T res = y - Z[i];
      ss += double(res) * res;
      if constexpr (WantG) {
        const T g = y <= T(0) ? T(0) : T(2) * res;  // 1[relu(v) > 0], NaN passes
        P[i] = g;
        if constexpr (HasDB) cs += g;
      }
      if constexpr (HasDZ) dZ[i] = T(-2) * res;
    }
  }
  __shared__ double warp_ss[kTY];
  __shared__ double col[kTY][kTX + 1];
  ss = warp_sum(ss);  // a warp is one threadIdx.y
  if (threadIdx.x == 0) warp_ss[threadIdx.y] = ss;
  if constexpr (HasDB) col[threadIdx.y][threadIdx.x] = cs;
  __syncthreads();
  if (threadIdx.y == 0) {
    if (threadIdx.x == 0) {
      double tot = 0;
#pragma unroll
      for (int y = 0; y < kTY; ++y) tot += warp_ss[y];
      loss_part[int64_t(blockIdx.y) * gridDim.x + blockIdx.x] = tot;
    }
    if constexpr (HasDB) {
      if (c < k) {
        double tot = 0;
#pragma unroll
        for (int y = 0; y < kTY; ++y) tot += col[y][threadIdx.x];
        db_part[int64_t(blockIdx.y) * k + c] = tot;
      }
    }
  }
}

template <typename T, bool HasBias, bool WantG, bool HasDZ, bool HasDB>
void launch_residual(at::Tensor& P, const at::Tensor& Z, const at::Tensor& bias, at::Tensor& dZ,
                     at::Tensor& loss_acc, at::Tensor& db_acc) {
  const int64_t B = P.size(0), k = P.size(1);
  if (B == 0 || k == 0) return;
  const int sms = at::cuda::getCurrentDeviceProperties()->multiProcessorCount;
  const int64_t gx = (k + kTX - 1) / kTX;
  TORCH_CHECK(gx <= INT32_MAX, "amtfl_reconstruction: k = ", k, " is too large for the CUDA kernel");
  const int64_t want_y = std::max<int64_t>(1, (int64_t(sms) * 16 + gx - 1) / gx);
  const int64_t gy = std::min<int64_t>({(B + kTY - 1) / kTY, want_y, 65535});
  auto dopts = P.options().dtype(at::kDouble);
  at::Tensor loss_part = at::empty({gy * gx}, dopts);
  at::Tensor db_part = HasDB ? at::empty({gy, k}, dopts) : at::Tensor();
  auto stream = at::cuda::getCurrentCUDAStream();
  residual_kernel<T, HasBias, WantG, HasDZ, HasDB><<<dim3(unsigned(gx), unsigned(gy)), dim3(kTX, kTY), 0, stream>>>(
      P.data_ptr<T>(), Z.data_ptr<T>(), HasBias ? bias.data_ptr<T>() : nullptr, HasDZ ? dZ.data_ptr<T>() : nullptr,
      B, k, loss_part.data_ptr<double>(), HasDB ? db_part.data_ptr<double>() : nullptr);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  loss_acc.add_(loss_part.sum());
  if constexpr (HasDB) db_acc.add_(db_part.sum(0));
}

void residual_cuda(at::Tensor& P, const at::Tensor& Z, const at::Tensor& bias, bool want_g, at::Tensor& dZ,
                   at::Tensor& loss_acc, at::Tensor& db_acc) {
  const c10::cuda::CUDAGuard guard(P.device());
  const bool hb = bias.defined(), hdz = dZ.defined(), hdb = db_acc.defined();
  TORCH_INTERNAL_ASSERT(!(hdz || hdb) || want_g);
  AT_DISPATCH_FLOATING_TYPES(P.scalar_type(), "amtfl_residual_cuda", [&] {
    auto run = [&](auto has_bias) {
      constexpr bool HB = decltype(has_bias)::value;
      if (!want_g) return launch_residual<scalar_t, HB, false, false, false>(P, Z, bias, dZ, loss_acc, db_acc);
      if (hdz && hdb) return launch_residual<scalar_t, HB, true, true, true>(P, Z, bias, dZ, loss_acc, db_acc);
      if (hdz) return launch_residual<scalar_t, HB, true, true, false>(P, Z, bias, dZ, loss_acc, db_acc);
      if (hdb) return launch_residual<scalar_t, HB, true, false, true>(P, Z, bias, dZ, loss_acc, db_acc);
      return launch_residual<scalar_t, HB, true, false, false>(P, Z, bias, dZ, loss_acc, db_acc);
    };
    if (hb) run(std::true_type{});
    else run(std::false_type{});
  });
}

// Rows per chunk. The chunk buffers (B x T and B x k) hold at most a quarter of
// Z's size (so that they never dominate the memory), at most 2^24 elements and at
// least 2^20 (small problems run in one chunk: launches cost more than memory
// there). A chunk has at least 2048 rows, so that the chunk GEMMs keep cuBLAS busy
// and the rank-B weight-gradient updates (dA += H^T G, dW += Z^T dH, which read
// and write a k x T matrix per chunk) stay compute-bound.
int64_t cuda_chunk_rows(int64_t N, int64_t k, int64_t T) {
  const int64_t budget = std::clamp<int64_t>(N * k / 4, int64_t(1) << 20, int64_t(1) << 24);
  return std::max<int64_t>(2048, budget / std::max<int64_t>(1, k + T));
}

}  // namespace

TORCH_LIBRARY_IMPL(mtlkernels, CUDA, m) { register_amtfl<residual_cuda, cuda_chunk_rows>(m); }

}  // namespace mtlkernels
