// CUDA kernels of the shrinkage family. One pass over the data (16-byte vector
// loads where aligned), on the current stream, every launch checked. Group norms
// accumulate in double; the group kernels reduce each group's norm and scale it in
// the same kernel when a group fits a warp / block (rows, labelled groups), and
// use a small second kernel for column groups.
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
      for (int k = 0; k < V; ++k) xv.v[k] -= lr * gv.v[k];
    }
#pragma unroll
    for (int k = 0; k < V; ++k) xv.v[k] = shrink1(xv.v[k], t, scale);
    reinterpret_cast<Pack<T, V>*>(out)[i] = xv;
  }
  for (int64_t i = nvec * V + tid; i < n; i += stride) {
    T v = x[i];
    if constexpr (HasGrad) v -= lr * g[i];
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
    if constexpr (HasGrad) v -= lr * g[i];
    const int64_t s = inner == 1 ? i : i / inner;
    out[i] = shrink1(v, tv[s % period] * tmul, scale);
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
    if (g) v -= lr * g[i];
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

// One block per row, labelled groups: squared norms accumulate in shared memory.
template <typename T>
__global__ void group_labels_kernel(GroupParams<T> p) {
  extern __shared__ double acc[];  // num_groups entries
  for (int64_t r = blockIdx.x; r < p.m; r += gridDim.x) {
    const int64_t base = r * p.n;
    for (int64_t k = threadIdx.x; k < p.num_groups; k += blockDim.x) acc[k] = 0;
    __syncthreads();
    for (int64_t c = threadIdx.x; c < p.n; c += blockDim.x) {
      const T zv = p.z(base + c);
      p.out[base + c] = zv;
      atomicAdd(&acc[p.labels[c]], double(zv) * zv);
    }
    __syncthreads();
    for (int64_t k = threadIdx.x; k < p.num_groups; k += blockDim.x) acc[k] = group_factor(acc[k], p.tau(k));
    __syncthreads();
    for (int64_t c = threadIdx.x; c < p.n; c += blockDim.x) p.out[base + c] *= static_cast<T>(acc[p.labels[c]]);
    __syncthreads();
  }
}

// Column groups, pass 1: z into out, squared column norms into `sumsq` (atomics
// across row chunks). Block (32, 8): a warp reads 32 adjacent columns of a row.
template <typename T>
__global__ void group_cols_norm_kernel(GroupParams<T> p, int64_t rows_per_chunk, double* sumsq) {
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
    atomicAdd(&sumsq[c], tot);
  }
}

// Column groups, pass 2: sumsq -> factor (in place), then scale.
template <typename T>
__global__ void group_cols_factor_kernel(GroupParams<T> p, double* sumsq) {
  for (int64_t c = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; c < p.n; c += int64_t(gridDim.x) * blockDim.x)
    sumsq[c] = group_factor(sumsq[c], p.tau(c));
}

template <typename T>
__global__ void group_cols_scale_kernel(GroupParams<T> p, const double* factor) {
  const int64_t total = p.m * p.n;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x)
    p.out[i] *= static_cast<T>(factor[i % p.n]);
}

constexpr int64_t kMaxSharedGroups = 6144;  // 48 KiB of double accumulators

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
      TORCH_CHECK(a.num_groups <= kMaxSharedGroups, "group_soft_threshold: the CUDA kernel supports at most ",
                  kMaxSharedGroups, " labelled groups per row, got ", a.num_groups);
      const size_t smem = std::max<int64_t>(a.num_groups, 1) * sizeof(double);
      group_labels_kernel<T><<<std::min<int64_t>(p.m, int64_t(sms) * 16), kThreads, smem, stream>>>(p);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
      break;
    }
    case GroupMode::Cols: {
      at::Tensor sumsq = at::zeros({p.n}, x.options().dtype(at::kDouble));
      const int64_t col_blocks = (p.n + 31) / 32;
      const int64_t want_chunks = std::max<int64_t>(1, (int64_t(sms) * 8 + col_blocks - 1) / col_blocks);
      const int64_t chunks = std::min<int64_t>({want_chunks, (p.m + 63) / 64, 65535});
      const int64_t rows_per_chunk = (p.m + chunks - 1) / chunks;
      group_cols_norm_kernel<T><<<dim3(col_blocks, chunks), dim3(32, 8), 0, stream>>>(p, rows_per_chunk,
                                                                                       sumsq.data_ptr<double>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
      group_cols_factor_kernel<T><<<grid_for(p.n, kThreads), kThreads, 0, stream>>>(p, sumsq.data_ptr<double>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
      group_cols_scale_kernel<T><<<grid_for(p.m * p.n, kThreads), kThreads, 0, stream>>>(p,
                                                                                        sumsq.data_ptr<double>());
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
