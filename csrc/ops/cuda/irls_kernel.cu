// CUDA kernels of the joint-IRLS family. Current stream, device guard, every launch
// checked.
//
// pairwise_sq_dists: one pass over params. The columns are cut into chunks that
// never straddle a layer; block (chunk, super-tile) stages tiles of W columns of up to
// 2 x 64 rows in shared memory (one coalesced read of each element) and every thread
// accumulates a 4 x 4 register tile of pairs over its share of the tile's columns,
// in the difference form. Float32 input: float32 sums over at most 32 columns per
// thread, flushed into float64 registers; float64 (or fp64_accumulate): float64
// throughout. The threads of a micro-tile are combined in shared memory and each
// block writes one float64 partial row per chunk; a second kernel adds the chunks
// of each layer in a fixed order (deterministic) and writes the symmetric output.
//
// pairwise_mix: block per chunk, shared-memory tiles of 64 rows x 64 columns and of
// the layer's coefficients; each thread forms up to 16 outputs of one column.
#include <ATen/Dispatch.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "ops/irls.h"

namespace mtlkernels {
namespace {

constexpr int kMicro = 4;        // register tiles of kMicro x kMicro pairs
constexpr int kSuper = 64;       // rows per super-tile (a block reads at most two)
constexpr int kTileElems = 4096; // shared-memory tile: rows x W elements
constexpr int kFlush = 32;       // float32 terms per accumulator before a float64 flush

// Int64 tables (chunk boundaries, layers) copied to the device through pinned memory
// on the current stream: no host synchronisation, and the caching host allocator
// keeps the pinned buffer alive until the copy has run.
struct DeviceTables {
  at::Tensor storage;
  std::vector<const int64_t*> ptr;  // one per table, in the order given
};

DeviceTables device_tables(const std::vector<const std::vector<int64_t>*>& tables, const at::Device& device) {
  int64_t total = 0;
  for (const auto* t : tables) total += static_cast<int64_t>(t->size());
  at::Tensor host = at::empty({std::max<int64_t>(total, 1)}, at::TensorOptions().dtype(at::kLong).pinned_memory(true));
  int64_t* h = host.data_ptr<int64_t>();
  std::vector<int64_t> start;
  for (const auto* t : tables) {
    start.push_back(h - host.data_ptr<int64_t>());
    if (!t->empty()) std::memcpy(h, t->data(), t->size() * sizeof(int64_t));
    h += t->size();
  }
  DeviceTables d;
  d.storage = host.to(device, /*non_blocking=*/true);
  for (int64_t s : start) d.ptr.push_back(d.storage.data_ptr<int64_t>() + s);
  return d;
}

int sm_count() { return at::cuda::getCurrentDeviceProperties()->multiProcessorCount; }

__device__ __forceinline__ int64_t dev_pair_index(int64_t i, int64_t j, int64_t n) {
  return i * n - i * (i + 1) / 2 + (j - i - 1);
}

// ---- pairwise squared distances --------------------------------------------------------

struct SqGeometry {
  int n;
  int nsuper;     // super-tiles of kSuper rows
  int W;          // tile width (a power of two, >= 32)
  int log2W;
};

// Rows of super-tile s: [s * kSuper, min(n, (s + 1) * kSuper)).
__device__ __forceinline__ int super_rows(int s, int n) { return min(kSuper, n - s * kSuper); }

template <typename T, bool Mixed>
__global__ void sq_partial_kernel(const T* __restrict__ x, int64_t ld, SqGeometry g, const int64_t* __restrict__ cbeg,
                                  const int64_t* __restrict__ cend, double* __restrict__ partial, int64_t npairs) {
  using Acc = typename std::conditional<Mixed, float, double>::type;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  T* tile = reinterpret_cast<T*>(smem_raw);
  double* red = reinterpret_cast<double*>(smem_raw);  // reused after the last tile

  // Super-tile pair (a, b), a <= b, from blockIdx.y.
  int a = 0, rem = blockIdx.y;
  while (rem >= g.nsuper - a) {
    rem -= g.nsuper - a;
    ++a;
  }
  const int b = a + rem;
  const bool diag = a == b;
  const int ra = super_rows(a, g.n), rb = super_rows(b, g.n);
  const int ma = (ra + kMicro - 1) / kMicro, mb = (rb + kMicro - 1) / kMicro;
  const int rowsA = ma * kMicro;
  const int rows = diag ? rowsA : rowsA + mb * kMicro;  // shared rows (zero padded)
  const int M = diag ? ma * (ma + 1) / 2 : ma * mb;       // micro-tiles of pairs
  const int K = max(1, int(blockDim.x) / M);              // threads per micro-tile
  const int t = threadIdx.x;
  const int m = t / K, lane = t % K;
  const bool active = m < M;

  // Micro-tile m -> (p, q): p-th row group of A, q-th of B (q >= p on the diagonal).
  int p = 0, q = 0;
  if (active) {
    if (diag) {
      int r = m;
      while (r >= ma - p) {
        r -= ma - p;
        ++p;
      }
      q = p + r;
    } else {
      p = m / mb;
      q = m % mb;
    }
  }
  const int si = p * kMicro;                             // shared row of i0
  const int sj = (diag ? 0 : rowsA) + q * kMicro;        // shared row of j0
  const int W = g.W, stride = W + 1;

  Acc acc[kMicro][kMicro];
  double accd[kMicro][kMicro];
#pragma unroll
  for (int r = 0; r < kMicro; ++r)
#pragma unroll
    for (int s = 0; s < kMicro; ++s) {
      acc[r][s] = 0;
      accd[r][s] = 0;
    }
  int cnt = 0;

  const int64_t cb = cbeg[blockIdx.x], ce = cend[blockIdx.x];
  const int rowA0 = a * kSuper, rowB0 = b * kSuper;
  for (int64_t t0 = cb; t0 < ce; t0 += W) {
    const int width = ce - t0 < W ? static_cast<int>(ce - t0) : W;
    for (int e = t; e < rows * W; e += blockDim.x) {
      const int r = e >> g.log2W, c = e & (W - 1);
      int grow = -1;
      if (r < rowsA) {
        if (r < ra) grow = rowA0 + r;
      } else if (r - rowsA < rb) {
        grow = rowB0 + (r - rowsA);
      }
      tile[r * stride + c] = (grow >= 0 && c < width) ? x[grow * ld + t0 + c] : T(0);
    }
    __syncthreads();
    if (active) {
      for (int c = lane; c < width; c += K) {
        Acc av[kMicro], bv[kMicro];
#pragma unroll
        for (int r = 0; r < kMicro; ++r) av[r] = static_cast<Acc>(tile[(si + r) * stride + c]);
#pragma unroll
        for (int s = 0; s < kMicro; ++s) bv[s] = static_cast<Acc>(tile[(sj + s) * stride + c]);
#pragma unroll
        for (int r = 0; r < kMicro; ++r)
#pragma unroll
          for (int s = 0; s < kMicro; ++s) {
            const Acc d = av[r] - bv[s];
            acc[r][s] = fma(d, d, acc[r][s]);
          }
        if constexpr (Mixed) {
          if (++cnt == kFlush) {
#pragma unroll
            for (int r = 0; r < kMicro; ++r)
#pragma unroll
              for (int s = 0; s < kMicro; ++s) {
                accd[r][s] += static_cast<double>(acc[r][s]);
                acc[r][s] = 0;
              }
            cnt = 0;
          }
        }
      }
    }
    __syncthreads();
  }
#pragma unroll
  for (int r = 0; r < kMicro; ++r)
#pragma unroll
    for (int s = 0; s < kMicro; ++s) accd[r][s] += static_cast<double>(acc[r][s]);

  // Combine the K lanes of each micro-tile: red[e * blockDim + t], tree over lanes.
  const int nt = blockDim.x;
#pragma unroll
  for (int r = 0; r < kMicro; ++r)
#pragma unroll
    for (int s = 0; s < kMicro; ++s) red[(r * kMicro + s) * nt + t] = accd[r][s];
  __syncthreads();
  int half = 1;
  while (half < K) half <<= 1;
  for (half >>= 1; half > 0; half >>= 1) {
    if (active && lane < half && lane + half < K) {
#pragma unroll
      for (int e = 0; e < kMicro * kMicro; ++e) red[e * nt + t] += red[e * nt + t + half];
    }
    __syncthreads();
  }
  if (active && lane == 0) {
    double* out = partial + static_cast<int64_t>(blockIdx.x) * npairs;
#pragma unroll
    for (int r = 0; r < kMicro; ++r) {
      const int i = rowA0 + si + r;
#pragma unroll
      for (int s = 0; s < kMicro; ++s) {
        const int j = diag ? rowA0 + sj + s : rowB0 + (sj - rowsA) + s;
        const bool valid = diag ? (si + r < ra && sj + s < ra && i < j) : (si + r < ra && sj - rowsA + s < rb);
        if (valid) out[dev_pair_index(i, j, g.n)] = red[(r * kMicro + s) * nt + t];
      }
    }
  }
}

// out[l, i, j] = out[l, j, i] = sum of the chunks of layer l; zero diagonal.
template <typename T>
__global__ void sq_reduce_kernel(const double* __restrict__ partial, const int64_t* __restrict__ first, int64_t L,
                                 int64_t n, int64_t npairs, T* __restrict__ out) {
  const int64_t total = L * n * n;
  for (int64_t e = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; e < total; e += int64_t(gridDim.x) * blockDim.x) {
    const int64_t l = e / (n * n), ij = e % (n * n), i = ij / n, j = ij % n;
    if (i == j) {
      out[e] = T(0);
    } else if (i < j) {
      const int64_t pidx = dev_pair_index(i, j, n);
      double s = 0;
      for (int64_t c = first[l]; c < first[l + 1]; ++c) s += partial[c * npairs + pidx];
      out[e] = static_cast<T>(s);
      out[l * n * n + j * n + i] = static_cast<T>(s);
    }
  }
}

int grid_for(int64_t work, int threads) {
  const int64_t blocks = (work + threads - 1) / threads;
  return static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(blocks, int64_t(sm_count()) * 32)));
}

template <typename T, bool Mixed>
void sq_dists_launch(const at::Tensor& params, const std::vector<int64_t>& offsets, at::Tensor& out) {
  const int n = static_cast<int>(params.size(0));
  const int64_t P = offsets.back(), L = static_cast<int64_t>(offsets.size()) - 1;
  const int64_t npairs = int64_t(n) * (n - 1) / 2;
  SqGeometry g;
  g.n = n;
  g.nsuper = (n + kSuper - 1) / kSuper;
  // Checked before anything is allocated: a too-large n is refused with this message,
  // not with an out-of-memory error from the partial sums' buffer.
  const int64_t super_pairs = int64_t(g.nsuper) * (g.nsuper + 1) / 2;
  TORCH_CHECK(super_pairs <= 65535, "pairwise_sq_dists: the CUDA kernel supports at most ", 65535,
              " super-tile pairs (about 23000 networks), got n = ", n);
  // Block size: for a single super-tile, enough threads per micro-tile to reach ~256.
  const int ma = (std::min(n, kSuper) + kMicro - 1) / kMicro;
  const int Mdiag = ma * (ma + 1) / 2;
  int threads = g.nsuper == 1 ? Mdiag * ((256 + Mdiag - 1) / Mdiag) : 256;
  threads = std::min(1024, (threads + 31) / 32 * 32);
  const int rows_max = g.nsuper == 1 ? ma * kMicro : 2 * kSuper;
  int W = 32;
  while (W * 2 * rows_max <= kTileElems && W < 1024) W *= 2;
  g.W = W;
  g.log2W = 0;
  while ((1 << g.log2W) < W) ++g.log2W;
  const size_t tile_bytes = size_t(rows_max) * (W + 1) * sizeof(T);
  const size_t red_bytes = size_t(threads) * kMicro * kMicro * sizeof(double);
  const size_t smem = std::max(tile_bytes, red_bytes);
  TORCH_CHECK(smem <= 48 * 1024, "pairwise_sq_dists: internal error, shared memory plan of ", smem, " bytes");

  // About 16 chunks per SM (a short tail), fewer when the float64 partial rows would pass 256 MiB.
  const int64_t target = std::max<int64_t>(
      1, std::min<int64_t>(int64_t(sm_count()) * 16, (int64_t(256) << 20) / (8 * std::max<int64_t>(npairs, 1))));
  const LayerChunks ch = make_layer_chunks(offsets, std::max<int64_t>(W, (P + target - 1) / target), W);
  TORCH_CHECK(ch.size() < (int64_t(1) << 31), "pairwise_sq_dists: too many column chunks");
  const DeviceTables dc = device_tables({&ch.begin, &ch.end, &ch.first}, params.device());
  at::Tensor partial = at::empty({ch.size(), npairs}, params.options().dtype(at::kDouble));
  auto stream = at::cuda::getCurrentCUDAStream();
  const dim3 grid(static_cast<unsigned>(ch.size()), static_cast<unsigned>(super_pairs));
  sq_partial_kernel<T, Mixed><<<grid, threads, smem, stream>>>(params.data_ptr<T>(), params.stride(0), g, dc.ptr[0],
                                                               dc.ptr[1], partial.data_ptr<double>(), npairs);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  sq_reduce_kernel<T><<<grid_for(L * n * n, 256), 256, 0, stream>>>(partial.data_ptr<double>(), dc.ptr[2], L, n,
                                                                    npairs, out.data_ptr<T>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

void sq_dists_cuda(const at::Tensor& params, const std::vector<int64_t>& offsets, bool fp64, at::Tensor& out) {
  const c10::cuda::CUDAGuard guard(params.device());
  if (params.scalar_type() == at::kFloat) {
    if (fp64) sq_dists_launch<float, false>(params, offsets, out);
    else sq_dists_launch<float, true>(params, offsets, out);
  } else {
    sq_dists_launch<double, false>(params, offsets, out);
  }
}

// ---- pairwise mix -------------------------------------------------------------------------

constexpr int kMixCols = 64;   // columns per tile
constexpr int kMixGroups = 4;  // row groups: 256 threads = 4 x 64

// kMixRows: rows per i / j block, so that the two shared tiles stay under 48 KiB.
template <typename T, int kMixRows = (sizeof(T) == 4 ? 64 : 32)>
__global__ void mix_kernel(const T* __restrict__ x, int64_t ld, int64_t n, const T* __restrict__ coeffs,
                           const T* __restrict__ self, const int64_t* __restrict__ cbeg,
                           const int64_t* __restrict__ cend, const int64_t* __restrict__ clayer, T* __restrict__ out,
                           int64_t ldo) {
  constexpr int kMixPer = kMixRows / kMixGroups;
  __shared__ T xs[kMixRows][kMixCols];
  __shared__ T ks[kMixRows][kMixRows + 1];
  const int tc = threadIdx.x % kMixCols, tg = threadIdx.x / kMixCols;  // tg is uniform within a warp
  const int64_t q = blockIdx.x;
  const int64_t cb = cbeg[q], ce = cend[q], l = clayer[q];
  const T* K = coeffs + l * n * n;
  const T* S = self + l * n;
  const int64_t nblk = (n + kMixRows - 1) / kMixRows;
  // Coefficients of block (ib, jb) into shared memory (the caller synchronises).
  auto load_k = [&](int64_t ib, int64_t jb, int rows_i, int rows_j) {
    for (int e = threadIdx.x; e < rows_i * kMixRows; e += blockDim.x) {
      const int r = e / kMixRows, c = e % kMixRows;
      ks[r][c] = c < rows_j ? K[(ib * kMixRows + r) * n + jb * kMixRows + c] : T(0);
    }
  };
  if (nblk == 1) {  // one coefficient block for the whole chunk
    load_k(0, 0, static_cast<int>(n), static_cast<int>(n));
  }
  for (int64_t t0 = cb; t0 < ce; t0 += kMixCols) {
    const int64_t col = t0 + tc;
    const bool colok = col < ce;
    for (int64_t ib = 0; ib < nblk; ++ib) {
      const int rows_i = static_cast<int>(n - ib * kMixRows < kMixRows ? n - ib * kMixRows : kMixRows);
      // Rows tg, tg + 4, ... of this block that exist: the first nv slots.
      const int nv = rows_i > tg ? (rows_i - tg + kMixGroups - 1) / kMixGroups : 0;
      T xi[kMixPer], acc[kMixPer];
#pragma unroll
      for (int s = 0; s < kMixPer; ++s) {
        const int64_t i = ib * kMixRows + tg + s * kMixGroups;
        xi[s] = (s < nv && colok) ? x[i * ld + col] : T(0);
        acc[s] = T(0);
      }
      for (int64_t jb = 0; jb < nblk; ++jb) {
        const int rows_j = static_cast<int>(n - jb * kMixRows < kMixRows ? n - jb * kMixRows : kMixRows);
        __syncthreads();  // the previous tile is no longer read
        for (int e = threadIdx.x; e < rows_j * kMixCols; e += blockDim.x) {
          const int r = e / kMixCols, c = e % kMixCols;
          xs[r][c] = t0 + c < ce ? x[(jb * kMixRows + r) * ld + t0 + c] : T(0);
        }
        if (nblk > 1) load_k(ib, jb, rows_i, rows_j);
        __syncthreads();
        for (int jj = 0; jj < rows_j; ++jj) {
          const T xj = xs[jj][tc];
#pragma unroll
          for (int s = 0; s < kMixPer; ++s)
            if (s < nv) {  // a zero coefficient adds nothing, also next to an inf (no 0 * inf = NaN)
              const T kv = ks[tg + s * kMixGroups][jj];
              if (kv != T(0)) acc[s] = fma(kv, xj - xi[s], acc[s]);
            }
        }
      }
      if (colok) {
#pragma unroll
        for (int s = 0; s < kMixPer; ++s)
          if (s < nv) {  // the small sum of differences first, the self term last
            const int64_t i = ib * kMixRows + tg + s * kMixGroups;
            out[i * ldo + col] = S[i] != T(0) ? fma(S[i], xi[s], acc[s]) : acc[s];
          }
      }
    }
  }
}

void mix_cuda(const at::Tensor& params, const std::vector<int64_t>& offsets, const at::Tensor& coeffs,
              const at::Tensor& self, at::Tensor& out) {
  const c10::cuda::CUDAGuard guard(params.device());
  const int64_t P = offsets.back();
  const int64_t want = (P + int64_t(sm_count()) * 8 - 1) / (int64_t(sm_count()) * 8);
  const LayerChunks ch = make_layer_chunks(offsets, std::max<int64_t>(kMixCols, want), kMixCols);
  TORCH_CHECK(ch.size() < (int64_t(1) << 31), "pairwise_mix: too many column chunks");
  const DeviceTables dc = device_tables({&ch.begin, &ch.end, &ch.layer}, params.device());
  auto stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(params.scalar_type(), "mix_cuda", [&] {
    mix_kernel<scalar_t><<<static_cast<unsigned>(ch.size()), kMixGroups * kMixCols, 0, stream>>>(
        params.data_ptr<scalar_t>(), params.stride(0), params.size(0), coeffs.data_ptr<scalar_t>(),
        self.data_ptr<scalar_t>(), dc.ptr[0], dc.ptr[1], dc.ptr[2], out.data_ptr<scalar_t>(), out.stride(0));
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

// ---- per-pair weights -----------------------------------------------------------------------

// Same math as robust_pair in cpu/irls_kernel.cpp: w = s^2 / (s^2 + d2), rho = w d2.
__device__ __forceinline__ void robust_pair(double d2, double s, double& w, double& rho) {
  if (s == 0) {
    w = 0;
    rho = 0;
  } else if (isinf(s)) {
    w = 1;
    rho = d2;
  } else {
    const double r = sqrt(d2) / s;
    const double r2 = r * r;
    w = 1 / (1 + r2);
    rho = r2 <= 1 ? d2 * w : (s * s) / (1 + 1 / r2);
  }
}

template <typename T>
__global__ void pair_kernel(const T* __restrict__ D, int64_t L, int64_t nn, const double* __restrict__ sigma,
                            const T* __restrict__ weights, T* w, T* rho, T* dphi) {
  const int64_t total = L * nn;
  for (int64_t q = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; q < total; q += int64_t(gridDim.x) * blockDim.x) {
    const int64_t l = q / nn;
    const double d2 = static_cast<double>(D[q]) + (l + 1 < L ? static_cast<double>(D[q + nn]) : 0.0);
    if (sigma) {
      double wv, rv;
      robust_pair(d2, sigma[l], wv, rv);
      if (w) w[q] = static_cast<T>(wv);
      rho[q] = static_cast<T>(rv);
      if (dphi) dphi[q] = static_cast<T>(wv * wv);
    } else {
      rho[q] = static_cast<T>(static_cast<double>(weights[q]) * d2);
      if (dphi) dphi[q] = weights[q];
    }
  }
}

void pair_cuda(const at::Tensor& D, const at::Tensor& sigma, const at::Tensor& weights, at::Tensor& w,
               at::Tensor& rho, at::Tensor& dphi) {
  const c10::cuda::CUDAGuard guard(D.device());
  const int64_t L = D.size(0), nn = D.size(1) * D.size(2);
  auto stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(D.scalar_type(), "irls_pair_cuda", [&] {
    pair_kernel<scalar_t><<<grid_for(L * nn, 256), 256, 0, stream>>>(
        D.data_ptr<scalar_t>(), L, nn, sigma.defined() ? sigma.data_ptr<double>() : nullptr,
        weights.defined() ? weights.data_ptr<scalar_t>() : nullptr, w.defined() ? w.data_ptr<scalar_t>() : nullptr,
        rho.data_ptr<scalar_t>(), dphi.defined() ? dphi.data_ptr<scalar_t>() : nullptr);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

}  // namespace

TORCH_LIBRARY_IMPL(mtlkernels, CUDA, m) { register_irls<sq_dists_cuda, mix_cuda, pair_cuda>(m); }

}  // namespace mtlkernels
