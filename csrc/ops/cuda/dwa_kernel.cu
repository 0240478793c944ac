// CUDA kernels of the CETL DWA penalty: multi-tensor, like torch's _foreach
// kernels. Up to 64 tensors go into one launch through a kernel-argument struct
// (pointers and the prefix sums of their sizes, about 2.6 KB, read in place as a
// __grid_constant__, never copied per thread); the blocks sweep
// the concatenation of the tensors in chunks, each chunk split at tensor
// boundaries. Sums accumulate in float64, one partial per block (no atomics, so
// the result does not depend on the schedule), reduced at the end.
#include <ATen/Dispatch.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>

#include <algorithm>
#include <cstdint>
#include <vector>

#include "ops/dwa.h"

namespace mtlkernels {
namespace {

constexpr int kMaxTensors = 64;
constexpr int kThreads = 256;
constexpr int kUnroll = 4;
constexpr int64_t kChunk = int64_t(kThreads) * kUnroll * 16;  // elements per block step

template <typename T>
struct Batch {
  const T* p[kMaxTensors];
  const T* a[kMaxTensors];
  const T* f[kMaxTensors];
  T* out[kMaxTensors];
  int64_t start[kMaxTensors + 1];  // start[t]: offset of tensor t in the concatenation
  int n;
};

// Calls fn(t, i) for every element i of tensor t in this block's chunks, each
// thread striding by blockDim.x, kUnroll independent elements per step.
template <typename T, typename Fn>
__device__ __forceinline__ void sweep(const Batch<T>& b, Fn fn) {
  const int64_t total = b.start[b.n];
  for (int64_t v0 = int64_t(blockIdx.x) * kChunk; v0 < total; v0 += int64_t(gridDim.x) * kChunk) {
    const int64_t v1 = min(total, v0 + kChunk);
    int lo = 0, hi = b.n - 1;  // the last tensor starting at or before v0
    while (lo < hi) {
      const int mid = (lo + hi + 1) / 2;
      if (b.start[mid] <= v0) lo = mid;
      else hi = mid - 1;
    }
    for (int t = lo; t < b.n && b.start[t] < v1; ++t) {
      const int64_t s = max(v0, b.start[t]) - b.start[t];
      const int64_t e = min(v1, b.start[t + 1]) - b.start[t];
      int64_t i = s + threadIdx.x;
      for (; i + (kUnroll - 1) * int64_t(blockDim.x) < e; i += kUnroll * int64_t(blockDim.x)) {
#pragma unroll
        for (int u = 0; u < kUnroll; ++u) fn(t, i + u * int64_t(blockDim.x));
      }
      for (; i < e; i += blockDim.x) fn(t, i);
    }
  }
}

__device__ __forceinline__ double warp_sum(double v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// Sum (Sum) of F (p - a)^2 and/or the importance check (Check).
template <typename T, bool Sum, bool Check>
__global__ void __launch_bounds__(kThreads) sum_kernel(const __grid_constant__ Batch<T> b, double* __restrict__ partial,
                                                        int* bad) {
  double ss = 0;
  bool neg = false;
  sweep(b, [&](int t, int64_t i) {
    const T fv = b.f[t][i];
    if constexpr (Check) neg |= !(fv >= T(0));
    if constexpr (Sum) {
      const T d = b.p[t][i] - b.a[t][i];
      ss += double(fv * d) * d;
    }
  });
  if constexpr (Check) {
    if (neg) *bad = 1;  // benign race: every writer stores 1
  }
  if constexpr (Sum) {
    __shared__ double warp_part[kThreads / 32];
    ss = warp_sum(ss);
    if ((threadIdx.x & 31) == 0) warp_part[threadIdx.x / 32] = ss;
    __syncthreads();
    if (threadIdx.x == 0) {
      double tot = 0;
#pragma unroll
      for (int w = 0; w < kThreads / 32; ++w) tot += warp_part[w];
      partial[blockIdx.x] = tot;
    }
  }
}

// Products rounded as written (no fused multiply-add), as the CPU kernel computes them.
__device__ __forceinline__ float mul_rn(float x, float y) { return __fmul_rn(x, y); }
__device__ __forceinline__ double mul_rn(double x, double y) { return __dmul_rn(x, y); }

// out = (Acc ? out : 0) + lam * s * F (p - a), s read from the device (or 1). The factor
// is T(lam * s) computed in double, and every product is rounded on its own, as on the
// CPU (dwa_kernel.cpp), so that both devices give the same bits.
template <typename T, bool Acc>
__global__ void __launch_bounds__(kThreads) axpy_kernel(const __grid_constant__ Batch<T> b, double lam,
                                                         const T* __restrict__ scale) {
  const T s = static_cast<T>(scale ? lam * static_cast<double>(*scale) : lam);
  sweep(b, [&](int t, int64_t i) {
    const T v = mul_rn(mul_rn(s, b.f[t][i]), b.p[t][i] - b.a[t][i]);
    if constexpr (Acc) b.out[t][i] += v;
    else b.out[t][i] = v;
  });
}

// Splits the lists into launches of at most kMaxTensors tensors.
template <typename T>
std::vector<Batch<T>> make_batches(const std::vector<at::Tensor>* out, const std::vector<at::Tensor>* p,
                                   const std::vector<at::Tensor>* a, const std::vector<at::Tensor>& f) {
  std::vector<Batch<T>> batches;
  for (size_t t0 = 0; t0 < f.size(); t0 += kMaxTensors) {
    Batch<T> b{};
    b.n = static_cast<int>(std::min<size_t>(kMaxTensors, f.size() - t0));
    b.start[0] = 0;
    for (int j = 0; j < b.n; ++j) {
      const size_t t = t0 + j;
      b.f[j] = f[t].data_ptr<T>();
      b.p[j] = p ? (*p)[t].data_ptr<T>() : nullptr;
      b.a[j] = a ? (*a)[t].data_ptr<T>() : nullptr;
      b.out[j] = out ? (*out)[t].data_ptr<T>() : nullptr;
      b.start[j + 1] = b.start[j] + f[t].numel();
    }
    batches.push_back(b);
  }
  return batches;
}

int blocks_for(int64_t total) {
  const int sms = at::cuda::getCurrentDeviceProperties()->multiProcessorCount;
  return static_cast<int>(std::clamp<int64_t>((total + kChunk - 1) / kChunk, 1, int64_t(sms) * 4));
}

template <typename T, bool Sum, bool Check>
at::Tensor run_sum(const std::vector<at::Tensor>* p, const std::vector<at::Tensor>* a,
                   const std::vector<at::Tensor>& f, at::Tensor& bad) {
  auto batches = make_batches<T>(nullptr, p, a, f);
  std::vector<int> grids;
  int64_t nblocks = 0;
  for (const auto& b : batches) {
    grids.push_back(b.start[b.n] > 0 ? blocks_for(b.start[b.n]) : 0);
    nblocks += grids.back();
  }
  at::Tensor partial = at::zeros({std::max<int64_t>(nblocks, 1)}, f[0].options().dtype(at::kDouble));
  auto stream = at::cuda::getCurrentCUDAStream();
  int* badp = Check ? bad.data_ptr<int>() : nullptr;
  int64_t off = 0;
  for (size_t j = 0; j < batches.size(); ++j) {
    if (grids[j] == 0) continue;
    sum_kernel<T, Sum, Check><<<grids[j], kThreads, 0, stream>>>(batches[j], partial.data_ptr<double>() + off, badp);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    off += grids[j];
  }
  return partial.sum();
}

at::Tensor dwa_sum_cuda(const std::vector<at::Tensor>& p, const std::vector<at::Tensor>& a,
                        const std::vector<at::Tensor>& f, at::Tensor& bad) {
  const c10::cuda::CUDAGuard guard(f[0].device());
  at::Tensor out;
  AT_DISPATCH_FLOATING_TYPES(f[0].scalar_type(), "dwa_sum_cuda", [&] {
    out = bad.defined() ? run_sum<scalar_t, true, true>(&p, &a, f, bad) : run_sum<scalar_t, true, false>(&p, &a, f, bad);
  });
  return out;
}

void dwa_check_cuda(const std::vector<at::Tensor>& f, at::Tensor& bad) {
  const c10::cuda::CUDAGuard guard(f[0].device());
  AT_DISPATCH_FLOATING_TYPES(f[0].scalar_type(), "dwa_check_cuda",
                             [&] { run_sum<scalar_t, false, true>(nullptr, nullptr, f, bad); });
}

void dwa_axpy_cuda(std::vector<at::Tensor>& out, const std::vector<at::Tensor>& p, const std::vector<at::Tensor>& a,
                   const std::vector<at::Tensor>& f, double lam, const at::Tensor& scale, bool accumulate) {
  const c10::cuda::CUDAGuard guard(f[0].device());
  auto stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(f[0].scalar_type(), "dwa_axpy_cuda", [&] {
    const scalar_t* sp = scale.defined() ? scale.data_ptr<scalar_t>() : nullptr;
    for (const auto& b : make_batches<scalar_t>(&out, &p, &a, f)) {
      if (b.start[b.n] == 0) continue;
      const int grid = blocks_for(b.start[b.n]);
      if (accumulate) axpy_kernel<scalar_t, true><<<grid, kThreads, 0, stream>>>(b, lam, sp);
      else axpy_kernel<scalar_t, false><<<grid, kThreads, 0, stream>>>(b, lam, sp);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    }
  });
}

}  // namespace

TORCH_LIBRARY_IMPL(mtlkernels, CUDA, m) { register_dwa<dwa_sum_cuda, dwa_axpy_cuda, dwa_check_cuda>(m); }

}  // namespace mtlkernels
