// CUDA kernels of the shrinkage family. One pass over the data (16-byte vector
// loads where aligned), on the current stream, every launch checked. Group norms
// accumulate in double, always in the same order (no atomics), so that a result never
// changes from run to run; the group kernels reduce each group's norm and scale it in
// the same kernel when a group fits a warp / block (rows, labelled groups), and use a
// second pass for column groups. The step x - lr * g and the thresholds are rounded
// as the CPU kernels round them (no fused multiply-add; T(tau * tmul) in double), so
// the elementwise ops give the same bits on both devices.
#include <ATen/Dispatch.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>

#include <algorithm>
#include <cstdint>

#include "ops/shrinkage.h"

namespace mtlkernels {
namespace {

constexpr int kThreads = 256;

template <typename T, int V>
struct alignas(sizeof(T) * V) Pack {
  T v[V];
};

// scale * sign(v) * max(|v| - t, 0); NaN in v propagates (the comparison is false).
template <typename T>
__device__ __forceinline__ T shrink1(T v, T t, T scale) {
  T a = fabs(v) - t;
  a = a < T(0) ? T(0) : a;
  return (v < T(0) ? -a : a) * scale;
}

// Products rounded as written (no fused multiply-add), as the CPU kernels compute them.
__device__ __forceinline__ float mul_rn(float x, float y) { return __fmul_rn(x, y); }
__device__ __forceinline__ double mul_rn(double x, double y) { return __dmul_rn(x, y); }

int grid_for(int64_t work, int threads) {
  const int sms = at::cuda::getCurrentDeviceProperties()->multiProcessorCount;
  const int64_t blocks = (work + threads - 1) / threads;
  return static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(blocks, int64_t(sms) * 32)));
}

// Uniform threshold: vectorised grid-stride loop, V elements per load.
template <typename T, int V, bool HasGrad>
__global__ void shrink_uniform_kernel(const T* __restrict__ x, const T* __restrict__ g, T* out, int64_t n, T lr,
                                      T t, T scale) {
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  const int64_t tid = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t nvec = n / V;
  for (int64_t i = tid; i < nvec; i += stride) {
    Pack<T, V> xv = reinterpret_cast<const Pack<T, V>*>(x)[i];
    if constexpr (HasGrad) {
      const Pack<T, V> gv = reinterpret_cast<const Pack<T, V>*>(g)[i];
#pragma unroll
      for (int k = 0; k < V; ++k) xv.v[k] = xv.v[k] - mul_rn(lr, gv.v[k]);
    }
#pragma unroll
    for (int k = 0; k < V; ++k) xv.v[k] = shrink1(xv.v[k], t, scale);
    reinterpret_cast<Pack<T, V>*>(out)[i] = xv;
  }
  for (int64_t i = nvec * V + tid; i < n; i += stride) {
    T v = x[i];
    if constexpr (HasGrad) v = v - mul_rn(lr, g[i]);
    out[i] = shrink1(v, t, scale);
  }
}

// Threshold tensor: element i uses tv[(i / inner) % period] * tmul.
template <typename T, bool HasGrad>
__global__ void shrink_tensor_kernel(const T* __restrict__ x, const T* __restrict__ g, T* out, int64_t n, T lr,
                                     const T* __restrict__ tv, int64_t inner, int64_t period, T tmul, T scale) {
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) {
    T v = x[i];
    if constexpr (HasGrad) v = v - mul_rn(lr, g[i]);
    const int64_t s = inner == 1 ? i : i / inner;
    out[i] = shrink1(v, mul_rn(tv[s % period], tmul), scale);
  }
}

bool aligned16(const void* p) { return reinterpret_cast<std::uintptr_t>(p) % 16 == 0; }

template <typename T, bool HasGrad>
void launch_shrink(const T* x, const T* g, T* out, int64_t n, double lr, const Threshold& th, double tmul,
                   double scale) {
  auto stream = at::cuda::getCurrentCUDAStream();
  if (th.uniform()) {
    constexpr int V = 16 / sizeof(T);
    const T t = static_cast<T>(th.scalar * tmul);
    const bool vec = aligned16(x) && aligned16(out) && (!HasGrad || aligned16(g));
    if (vec) {
      shrink_uniform_kernel<T, V, HasGrad><<<grid_for(n / V + 1, kThreads), kThreads, 0, stream>>>(
          x, g, out, n, T(lr), t, T(scale));
    } else {
      shrink_uniform_kernel<T, 1, HasGrad><<<grid_for(n, kThreads), kThreads, 0, stream>>>(x, g, out, n, T(lr), t,
                                                                                           T(scale));
    }
  } else {
    shrink_tensor_kernel<T, HasGrad><<<grid_for(n, kThreads), kThreads, 0, stream>>>(
        x, g, out, n, T(lr), th.values.data_ptr<T>(), th.inner, th.period, T(tmul), T(scale));
  }
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

void shrink_cuda(const at::Tensor& x, const at::Tensor& grad, double lr, const Threshold& th, double tmul,
                 double scale, at::Tensor& out) {
  const c10::cuda::CUDAGuard guard(x.device());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "shrink_cuda", [&] {
    const scalar_t* gp = grad.defined() ? grad.data_ptr<scalar_t>() : nullptr;
    if (gp) {
      launch_shrink<scalar_t, true>(x.data_ptr<scalar_t>(), gp, out.data_ptr<scalar_t>(), x.numel(), lr, th, tmul,
                                    scale);
    } else {
      launch_shrink<scalar_t, false>(x.data_ptr<scalar_t>(), gp, out.data_ptr<scalar_t>(), x.numel(), lr, th,
                                     tmul, scale);
    }
  });
}

// ---- group shrinkage ------------------------------------------------------------

// Group factor max(0, 1 - t / ||z||), NaN-propagating.
__device__ __forceinline__ double group_factor(double sumsq, double t) {
  const double nrm = sqrt(sumsq);
  if (isnan(nrm)) return nrm;
  return nrm > t ? 1.0 - t / nrm : 0.0;
}

template <typename T>
struct GroupParams {
  const T* x;
  const T* g;  // nullptr: no gradient step
  T* out;
  int64_t m, n;
  T lr, l1;
  const T* tv;  // per-group thresholds or nullptr
  double tscalar, tmul;
  const int64_t* labels;
  int64_t num_groups;
  __device__ __forceinline__ T z(int64_t i) const {
    T v = x[i];
    if (g) v = v - mul_rn(lr, g[i]);
    return shrink1(v, l1, T(1));
  }
  __device__ __forceinline__ double tau(int64_t grp) const { return (tv ? double(tv[grp]) : tscalar) * tmul; }
};

__device__ __forceinline__ double warp_sum(double v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// One warp per row (short rows). Each lane rescales only what it wrote itself.
template <typename T>
__global__ void group_rows_warp_kernel(GroupParams<T> p) {
  const int lane = threadIdx.x & 31;
  const int64_t warps = int64_t(gridDim.x) * (blockDim.x / 32);
  for (int64_t r = int64_t(blockIdx.x) * (blockDim.x / 32) + threadIdx.x / 32; r < p.m; r += warps) {
    const int64_t base = r * p.n;
    double ss = 0;
    for (int64_t c = lane; c < p.n; c += 32) {
      const T zv = p.z(base + c);
      p.out[base + c] = zv;
      ss += double(zv) * zv;
    }
    const T f = static_cast<T>(group_factor(warp_sum(ss), p.tau(r)));
    for (int64_t c = lane; c < p.n; c += 32) p.out[base + c] *= f;
  }
}

// One block per row (long rows).
template <typename T>
__global__ void group_rows_block_kernel(GroupParams<T> p) {
  __shared__ double partial[kThreads / 32];
  __shared__ double factor;
  for (int64_t r = blockIdx.x; r < p.m; r += gridDim.x) {
    const int64_t base = r * p.n;
    double ss = 0;
    for (int64_t c = threadIdx.x; c < p.n; c += blockDim.x) {
      const T zv = p.z(base + c);
      p.out[base + c] = zv;
      ss += double(zv) * zv;
    }
    ss = warp_sum(ss);
    if ((threadIdx.x & 31) == 0) partial[threadIdx.x / 32] = ss;
    __syncthreads();
    if (threadIdx.x == 0) {
      double tot = 0;
      for (int w = 0; w < int(blockDim.x / 32); ++w) tot += partial[w];
      factor = group_factor(tot, p.tau(r));
    }
    __syncthreads();
    const T f = static_cast<T>(factor);
    for (int64_t c = threadIdx.x; c < p.n; c += blockDim.x) p.out[base + c] *= f;
    __syncthreads();
  }
}

// Labelled groups, any number of them. The members of group q are perm[off[q] ..
// off[q + 1]) (the labels sorted stably on the device), the same in every row. Wide
// groups: one warp per (row, group), lane-strided partial sums then a butterfly. Narrow
// groups (a few members each): one thread per (row, group), summing its members in
// order. Either way the order of the additions is fixed.
template <typename T, bool Warp>
__global__ void group_labels_kernel(GroupParams<T> p, const int64_t* __restrict__ perm,
                                    const int64_t* __restrict__ off) {
  const int width = Warp ? 32 : 1;
  const int lane = Warp ? (threadIdx.x & 31) : 0;
  const int64_t per_block = blockDim.x / width;
  const int64_t stride = int64_t(gridDim.x) * per_block;
  const int64_t total = p.m * p.num_groups;
  for (int64_t w = int64_t(blockIdx.x) * per_block + threadIdx.x / width; w < total; w += stride) {
    const int64_t r = w / p.num_groups, q = w - r * p.num_groups;
    const int64_t base = r * p.n, b = off[q], e = off[q + 1];
    double ss = 0;
    for (int64_t j = b + lane; j < e; j += width) {
      const int64_t i = base + perm[j];
      const T zv = p.z(i);
      p.out[i] = zv;
      ss += double(zv) * zv;
    }
    if constexpr (Warp) ss = warp_sum(ss);
    const T f = static_cast<T>(group_factor(ss, p.tau(q)));
    for (int64_t j = b + lane; j < e; j += width) p.out[base + perm[j]] *= f;
  }
}

// Column groups, pass 1: z into out, each row chunk's squared column norms into its
// own row of `part` (chunks x n). Block (32, 8): a warp reads 32 adjacent columns of a row.
template <typename T>
__global__ void group_cols_norm_kernel(GroupParams<T> p, int64_t rows_per_chunk, double* __restrict__ out_part) {
  __shared__ double part[8][33];
  const int64_t c = int64_t(blockIdx.x) * 32 + threadIdx.x;
  const int64_t r0 = int64_t(blockIdx.y) * rows_per_chunk;
  const int64_t r1 = min(p.m, r0 + rows_per_chunk);
  double ss = 0;
  if (c < p.n) {
    for (int64_t r = r0 + threadIdx.y; r < r1; r += blockDim.y) {
      const T zv = p.z(r * p.n + c);
      p.out[r * p.n + c] = zv;
      ss += double(zv) * zv;
    }
  }
  part[threadIdx.y][threadIdx.x] = ss;
  __syncthreads();
  if (threadIdx.y == 0 && c < p.n) {
    double tot = 0;
    for (int k = 0; k < int(blockDim.y); ++k) tot += part[k][threadIdx.x];
    out_part[int64_t(blockIdx.y) * p.n + c] = tot;
  }
}

// Column groups, pass 2: the chunks' sums in chunk order -> factor, then scale.
template <typename T>
__global__ void group_cols_factor_kernel(GroupParams<T> p, const double* __restrict__ part, int64_t chunks,
                                         double* __restrict__ factor) {
  for (int64_t c = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; c < p.n; c += int64_t(gridDim.x) * blockDim.x) {
    double ss = 0;
    for (int64_t k = 0; k < chunks; ++k) ss += part[k * p.n + c];
    factor[c] = group_factor(ss, p.tau(c));
  }
}

template <typename T>
__global__ void group_cols_scale_kernel(GroupParams<T> p, const double* factor) {
  const int64_t total = p.m * p.n;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x)
    p.out[i] *= static_cast<T>(factor[i % p.n]);
}

template <typename T>
void group_cuda_impl(const at::Tensor& x, const at::Tensor& grad, double lr, const GroupArgs& a, at::Tensor& out) {
  GroupParams<T> p;
  p.x = x.data_ptr<T>();
  p.g = grad.defined() ? grad.data_ptr<T>() : nullptr;
  p.out = out.data_ptr<T>();
  p.m = x.size(0);
  p.n = x.size(1);
  p.lr = static_cast<T>(lr);
  p.l1 = static_cast<T>(a.l1);
  p.tv = a.tau.uniform() ? nullptr : a.tau.values.data_ptr<T>();
  p.tscalar = a.tau.scalar;
  p.tmul = a.tmul;
  p.labels = a.mode == GroupMode::Labels ? a.labels.data_ptr<int64_t>() : nullptr;
  p.num_groups = a.num_groups;
  auto stream = at::cuda::getCurrentCUDAStream();
  const int sms = at::cuda::getCurrentDeviceProperties()->multiProcessorCount;

  switch (a.mode) {
    case GroupMode::Rows:
      if (p.n <= 1024) {
        const int64_t blocks = std::min<int64_t>((p.m + 7) / 8, int64_t(sms) * 32);
        group_rows_warp_kernel<T><<<std::max<int64_t>(blocks, 1), kThreads, 0, stream>>>(p);
      } else {
        group_rows_block_kernel<T><<<std::min<int64_t>(p.m, int64_t(sms) * 16), kThreads, 0, stream>>>(p);
      }
      C10_CUDA_KERNEL_LAUNCH_CHECK();
      break;
    case GroupMode::Labels: {
      // The groups as lists of members (CSR), built on the device without a host sync:
      // members sorted stably by label, group q's range found by binary search.
      const auto sorted = at::sort(a.labels, /*stable=*/true, /*dim=*/0, /*descending=*/false);
      const at::Tensor perm = std::get<1>(sorted).contiguous();
      const at::Tensor off =
          at::searchsorted(std::get<0>(sorted), at::arange(a.num_groups + 1, a.labels.options())).contiguous();
      const int64_t total = p.m * std::max<int64_t>(a.num_groups, 1);
      const bool wide = p.n >= 8 * std::max<int64_t>(a.num_groups, 1);  // >= 8 members per group on average
      const int64_t per_block = wide ? kThreads / 32 : kThreads;
      const int64_t blocks = std::clamp<int64_t>((total + per_block - 1) / per_block, 1, int64_t(sms) * 32);
      if (wide) {
        group_labels_kernel<T, true><<<blocks, kThreads, 0, stream>>>(p, perm.data_ptr<int64_t>(),
                                                                       off.data_ptr<int64_t>());
      } else {
        group_labels_kernel<T, false><<<blocks, kThreads, 0, stream>>>(p, perm.data_ptr<int64_t>(),
                                                                        off.data_ptr<int64_t>());
      }
      C10_CUDA_KERNEL_LAUNCH_CHECK();
      break;
    }
    case GroupMode::Cols: {
      const int64_t col_blocks = (p.n + 31) / 32;
      const int64_t want_chunks = std::max<int64_t>(1, (int64_t(sms) * 8 + col_blocks - 1) / col_blocks);
      const int64_t chunks = std::min<int64_t>({want_chunks, (p.m + 63) / 64, 65535});
      const int64_t rows_per_chunk = (p.m + chunks - 1) / chunks;
      const auto dopts = x.options().dtype(at::kDouble);
      at::Tensor part = at::empty({chunks, p.n}, dopts);
      at::Tensor factor = at::empty({p.n}, dopts);
      group_cols_norm_kernel<T><<<dim3(col_blocks, chunks), dim3(32, 8), 0, stream>>>(p, rows_per_chunk,
                                                                                       part.data_ptr<double>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
      group_cols_factor_kernel<T><<<grid_for(p.n, kThreads), kThreads, 0, stream>>>(
          p, part.data_ptr<double>(), chunks, factor.data_ptr<double>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
      group_cols_scale_kernel<T><<<grid_for(p.m * p.n, kThreads), kThreads, 0, stream>>>(p,
                                                                                        factor.data_ptr<double>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
      break;
    }
  }
}

void group_shrink_cuda(const at::Tensor& x, const at::Tensor& grad, double lr, const GroupArgs& a,
                       at::Tensor& out) {
  const c10::cuda::CUDAGuard guard(x.device());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "group_shrink_cuda",
                             [&] { group_cuda_impl<scalar_t>(x, grad, lr, a, out); });
}

}  // namespace

TORCH_LIBRARY_IMPL(mtlkernels, CUDA, m) { register_shrinkage<shrink_cuda, group_shrink_cuda>(m); }

}  // namespace mtlkernels
