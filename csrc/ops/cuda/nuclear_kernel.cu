// CUDA kernels of the nuclear-norm family (routing and the rule: nuclear.cpp).
//
// 1. small_spectral_kernel: the fused exact route for small matrices
//    (k = min(m, n) <= kSmallMaxK, max(m, n) <= kSmallMaxRows, fitting in shared
//    memory). One thread block per matrix. The matrix, oriented so that it has k
//    columns (x or x^T), is loaded into shared memory and orthogonalised by one-sided
//    (Hestenes) Jacobi: for each pair of columns (p, q) a plane rotation makes them
//    orthogonal and is accumulated into V. Pairs follow the round-robin (circle)
//    ordering: each round holds k/2 disjoint pairs, one warp per pair, and k - 1 rounds
//    make a sweep over all pairs. At convergence the columns are U diag(s) and the
//    kernel writes, in the same launch, out = A diag(g(s) / s) V^T = U diag(g(s)) V^T
//    (svt, the smoothed-norm gradient) or the sum of a function of s (the norms, where
//    V is not accumulated).
// 2. jacobi_eigh_kernel: the batched symmetric eigensolver of the Gram route
//    (k <= kCudaMaxGramK). One thread block per k x k matrix, cyclic two-sided Jacobi
//    with the same round-robin ordering: per round, k/2 rotations are computed from the
//    current matrix, then applied to all rows, then to all columns (and to V). The
//    matrix lives in shared memory when it fits, else in a global workspace.
//
// Both compute in float64 whatever the input dtype. In float32 the accumulated rotations
// lose orthogonality roughly in proportion to k * eps32 (measured in a NumPy model of
// these kernels: 1e-5 relative reconstruction error at k = 64, 5-10x worse than
// LAPACK); in float64 the float32 results are correct to rounding. Matrices are scaled by a power
// of two (exact) so that squares neither overflow nor underflow. A rotation is applied
// when |a_pq| > tol * sqrt(a_pp) * sqrt(a_qq) (the relative criterion of Demmel and Veselic);
// sweeps stop when none is, or after kMaxSweeps.
//
// The route limits are first guesses, to be tuned on a GPU with benchmarks/bench_svt.py
// --device cuda. They can be changed without rebuilding through environment variables,
// read once per process: MTLKERNELS_NUCLEAR_SMALL_MAX_K (default 64, at most 64; 0
// disables the fused route), MTLKERNELS_NUCLEAR_SMALL_MAX_ROWS (default 512) and
// MTLKERNELS_NUCLEAR_MAX_GRAM_K (default 512; 0 sends everything past the fused route to
// at::linalg_svd).
#include <ATen/Dispatch.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>

#include <algorithm>
#include <cfloat>
#include <climits>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <mutex>
#include <set>
#include <utility>

#include "ops/nuclear.h"

namespace mtlkernels {
namespace {

constexpr int64_t kSmallMaxK = 64;       // fused route: at most 32 warps, one per column pair
constexpr int64_t kSmallMaxRows = 512;   // beyond this the Gram route should be cheaper
constexpr int64_t kCudaMaxGramK = 512;   // beyond this: at::linalg_svd
constexpr int64_t kEigMaxK = 4096;       // what jacobi_eigh_kernel's int indexing allows
constexpr int kMaxSweeps = 30;
constexpr int kMaxThreads = 1024;        // both kernels launch up to 1024 threads (32 warps)
constexpr size_t kStaticSmemReserve = 1024;  // the kernels' static __shared__ variables, with margin
constexpr unsigned kFull = 0xffffffffu;

int64_t env_limit(const char* name, int64_t fallback, int64_t hi) {
  const char* v = std::getenv(name);
  if (v == nullptr || *v == 0) return fallback;
  char* end = nullptr;
  const long long r = std::strtoll(v, &end, 10);
  TORCH_CHECK(end != v && *end == 0 && r >= 0 && r <= hi, name, " must be an integer in [0, ", hi, "], got '", v,
              "'");
  return r;
}

struct CudaLimits {
  int64_t small_max_k, small_max_rows, max_gram_k;
};

const CudaLimits& cuda_limits() {
  static const CudaLimits lim{env_limit("MTLKERNELS_NUCLEAR_SMALL_MAX_K", kSmallMaxK, kSmallMaxK),
                              env_limit("MTLKERNELS_NUCLEAR_SMALL_MAX_ROWS", kSmallMaxRows, int64_t(1) << 30),
                              env_limit("MTLKERNELS_NUCLEAR_MAX_GRAM_K", kCudaMaxGramK, kEigMaxK)};
  return lim;
}

int64_t max_gram_k_cuda() { return cuda_limits().max_gram_k; }

// ---- device helpers ---------------------------------------------------------------

// Round-robin (circle method) ordering for kp (even) indices: in round r (0 <= r < kp - 1)
// slot j (0 <= j < kp / 2) pairs the players at positions j and kp - 1 - j; position 0
// is fixed, the others rotate. Every pair occurs once per kp - 1 rounds and the pairs
// of one round are disjoint. Indices >= k (the padding of an odd k) are skipped.
__device__ __forceinline__ int rr_player(int pos, int r, int kp) {
  return pos == 0 ? 0 : ((pos - 1 + r) % (kp - 1)) + 1;
}

__device__ __forceinline__ void rr_pair(int j, int r, int kp, int& p, int& q) {
  const int a = rr_player(j, r, kp), b = rr_player(kp - 1 - j, r, kp);
  p = min(a, b);
  q = max(a, b);
}

// The rotation J = [[c, s], [-s, c]] that diagonalises J^T [[a, b], [b, d]] J (b != 0):
// cot(2 theta) = (d - a) / (2 b), t = tan(theta) the root of smaller magnitude.
__device__ __forceinline__ void jacobi_rotation(double a, double d, double b, double& c, double& s) {
  const double zeta = (d - a) / (2.0 * b);
  const double t = copysign(1.0, zeta) / (fabs(zeta) + sqrt(1.0 + zeta * zeta));  // 0 if zeta^2 overflows
  c = 1.0 / sqrt(1.0 + t * t);
  s = c * t;
}

__device__ __forceinline__ double warp_sum(double v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(kFull, v, o);
  return v;  // bitwise identical in every lane (each butterfly step adds the same two values)
}

__device__ __forceinline__ double warp_max(double v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = fmax(v, __shfl_xor_sync(kFull, v, o));
  return v;
}

// Maximum over the block (blockDim.x a multiple of 32); every thread gets it.
__device__ double block_max(double v, double* red) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
  v = warp_max(v);
  if (lane == 0) red[warp] = v;
  __syncthreads();
  if (warp == 0) {
    double u = lane < nwarps ? red[lane] : 0.0;
    u = warp_max(u);
    if (lane == 0) red[0] = u;
  }
  __syncthreads();
  const double out = red[0];
  __syncthreads();
  return out;
}

// Power-of-two exponent e with amax * 2^-e in [0.5, 1) (0 for 0, inf or NaN).
__device__ __forceinline__ int scale_exponent(double amax) {
  int e = 0;
  if (amax > 0 && isfinite(amax)) frexp(amax, &e);
  return e;
}

// g(s) / s for the matrix kinds, with its limit at s = 0 (see gram_filter in nuclear.cpp).
__device__ __forceinline__ double spectral_filter(int kind, double s, double t, double scale) {
  if (kind == static_cast<int>(Spectral::Shrink)) {
    if (t == 0) return 1.0;
    return s > t ? 1.0 - t / s : 0.0;
  }
  if (t == 0) return 0.0;  // Complement
  return (s > t ? t / s : 1.0) * scale;
}

__device__ __forceinline__ double spectral_value(int kind, double s, double t, double lam, double eps) {
  if (kind == static_cast<int>(Spectral::Nuclear)) return s;
  return s <= t ? s * s / (2.0 * eps) : lam * (s - 0.5 * t);  // Smoothed
}

// ---- 1. fused small-matrix route: one-sided Jacobi SVD ------------------------------

struct SmallParams {
  int64_t m, n;  // the matrix shape
  int r, k, kp;  // working orientation A (r x k, r >= k); kp = k rounded up to even
  bool wide;     // m < n: A = x^T
  int kind;      // Spectral
  double lam, eps, scale;
  const double* t;  // (B,) thresholds
};

// Dynamic shared memory (float64): A (k columns of length r), then V (k x k, column
// j at V + j * k; kMatrix only), then k singular values / filters.
template <typename T, bool kMatrix>
__global__ void __launch_bounds__(kMaxThreads)
    small_spectral_kernel(const T* __restrict__ x, T* __restrict__ out, SmallParams P) {
  extern __shared__ double smem[];
  __shared__ double s_red[32];
  __shared__ int s_rot;
  __shared__ int s_bad;

  const int r = P.r, k = P.k;
  double* A = smem;
  double* V = A + static_cast<size_t>(r) * k;
  double* sv = kMatrix ? V + static_cast<size_t>(k) * k : V;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, nwarps = blockDim.x >> 5;
  const int64_t b = blockIdx.x;
  const int64_t mn = P.m * P.n;
  const T* xb = x + b * mn;

  // Load (x or x^T) column-major into A, and scale it by a power of two.
  double amax = 0;
  for (int64_t g = tid; g < mn; g += blockDim.x) {
    const double v = static_cast<double>(xb[g]);
    const int64_t row = g / P.n, col = g - row * P.n;
    const int64_t i = P.wide ? col : row, j = P.wide ? row : col;
    A[j * r + i] = v;
    amax = fmax(amax, fabs(v));  // fmax ignores NaN; NaN is caught on the singular values
  }
  const int e = scale_exponent(block_max(amax, s_red));  // block_max synchronises
  if (e != 0) {
    for (int64_t g = tid; g < mn; g += blockDim.x) A[g] = ldexp(A[g], -e);
  }
  if (kMatrix) {
    for (int g = tid; g < k * k; g += blockDim.x) V[g] = (g % (k + 1) == 0) ? 1.0 : 0.0;
  }
  __syncthreads();

  // One-sided Jacobi sweeps.
  const double tol = sqrt(static_cast<double>(r)) * DBL_EPSILON;
  const int npairs = P.kp / 2;
  for (int sweep = 0; sweep < kMaxSweeps; ++sweep) {
    if (tid == 0) s_rot = 0;
    __syncthreads();
    for (int rd = 0; rd < P.kp - 1; ++rd) {
      for (int j = warp; j < npairs; j += nwarps) {
        int p, q;
        rr_pair(j, rd, P.kp, p, q);
        if (q >= k) continue;
        double* ap = A + static_cast<size_t>(p) * r;
        double* aq = A + static_cast<size_t>(q) * r;
        double al = 0, be = 0, ga = 0;
        for (int i = lane; i < r; i += 32) {
          const double u = ap[i], w = aq[i];
          al += u * u;
          be += w * w;
          ga += u * w;
        }
        al = warp_sum(al);
        be = warp_sum(be);
        ga = warp_sum(ga);
        // sqrt(al) * sqrt(be), not sqrt(al * be): the product underflows for tiny columns
        if (fabs(ga) > tol * sqrt(al) * sqrt(be)) {  // false for ga == 0 and for NaN
          double c, s;
          jacobi_rotation(al, be, ga, c, s);
          for (int i = lane; i < r; i += 32) {
            const double u = ap[i], w = aq[i];
            ap[i] = c * u - s * w;
            aq[i] = s * u + c * w;
          }
          if (kMatrix) {
            double* vp = V + static_cast<size_t>(p) * k;
            double* vq = V + static_cast<size_t>(q) * k;
            for (int i = lane; i < k; i += 32) {
              const double u = vp[i], w = vq[i];
              vp[i] = c * u - s * w;
              vq[i] = s * u + c * w;
            }
          }
          if (lane == 0) atomicOr(&s_rot, 1);  // an atomic: several warps may set it
        }
      }
      __syncthreads();
    }
    const int rotated = s_rot;
    __syncthreads();  // everyone has read s_rot before thread 0 resets it
    if (!rotated) break;
  }

  // Singular values (scaled by 2^-e) = column norms.
  for (int j = warp; j < k; j += nwarps) {
    const double* aj = A + static_cast<size_t>(j) * r;
    double ss = 0;
    for (int i = lane; i < r; i += 32) ss += aj[i] * aj[i];
    ss = warp_sum(ss);
    if (lane == 0) sv[j] = sqrt(ss);
  }
  __syncthreads();
  const double t = P.t[b];
  if (tid == 0) {
    int bad = 0;
    for (int j = 0; j < k; ++j) bad |= !isfinite(sv[j]);
    s_bad = bad;
    if (!kMatrix) {
      double acc = 0;
      for (int j = 0; j < k; ++j) acc += spectral_value(P.kind, ldexp(sv[j], e), t, P.lam, P.eps);
      out[b] = static_cast<T>(bad ? NAN : acc);
    }
  }
  if (!kMatrix) return;
  __syncthreads();
  const bool bad = s_bad != 0;
  if (tid < k) sv[tid] = spectral_filter(P.kind, ldexp(sv[tid], e), t, P.scale);
  __syncthreads();

  // out = A diag(f) V^T (times 2^e), written in x's layout.
  T* ob = out + b * mn;
  for (int64_t g = tid; g < mn; g += blockDim.x) {
    const int64_t row = g / P.n, col = g - row * P.n;
    const int i = static_cast<int>(P.wide ? col : row), l = static_cast<int>(P.wide ? row : col);
    double acc = 0;
    for (int j = 0; j < k; ++j) acc += A[static_cast<size_t>(j) * r + i] * sv[j] * V[static_cast<size_t>(j) * k + l];
    ob[g] = static_cast<T>(bad ? NAN : ldexp(acc, e));
  }
}

size_t smem_optin() {
  return static_cast<size_t>(at::cuda::getCurrentDeviceProperties()->sharedMemPerBlockOptin);
}

// Opt `kernel` in to all the shared memory a block may have on the current device, once
// per (kernel, device). The 48 KiB a launch gets without opting in covers static and
// dynamic shared memory together, so opting in only for dynamic sizes above 48 KiB
// failed every launch whose dynamic size fit but whose sum with the static arrays did
// not ("invalid argument"). Setting the maximum once, and never lowering it, also keeps
// a concurrent launch of another size from shrinking the limit under this one.
template <typename K>
void opt_in_max_smem(K kernel) {
  static std::mutex mu;
  static std::set<std::pair<const void*, int>> done;
  int dev = 0;
  C10_CUDA_CHECK(cudaGetDevice(&dev));
  const auto key = std::make_pair(reinterpret_cast<const void*>(kernel), dev);
  const std::lock_guard<std::mutex> lock(mu);
  if (done.count(key)) return;
  cudaFuncAttributes attr;
  C10_CUDA_CHECK(cudaFuncGetAttributes(&attr, kernel));
  const size_t optin = smem_optin();
  TORCH_CHECK(attr.sharedSizeBytes <= kStaticSmemReserve && optin > attr.sharedSizeBytes,
              "nuclear ops (CUDA): internal error, ", attr.sharedSizeBytes, " bytes of static shared memory");
  C10_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                      static_cast<int>(optin - attr.sharedSizeBytes)));
  done.insert(key);
}

bool small_spectral_cuda(const at::Tensor& x, const SpectralArgs& a, at::Tensor& out) {
  const int64_t B = x.size(0), m = x.size(1), n = x.size(2);
  const int64_t k = std::min(m, n), r = std::max(m, n);
  if (k > cuda_limits().small_max_k || r > cuda_limits().small_max_rows) return false;
  const c10::cuda::CUDAGuard guard(x.device());  // before reading the device's properties
  const bool matrix = spectral_is_matrix(a.kind);
  const size_t bytes = sizeof(double) * static_cast<size_t>(r * k + (matrix ? k * k : 0) + k);
  if (bytes + kStaticSmemReserve > smem_optin()) return false;
  TORCH_CHECK(a.t.is_cuda() && a.t.scalar_type() == at::kDouble && a.t.is_contiguous() && a.t.numel() == B,
              "nuclear ops (CUDA): internal error, thresholds must be contiguous float64, one per matrix");

  auto stream = at::cuda::getCurrentCUDAStream();
  SmallParams P;
  P.m = m;
  P.n = n;
  P.r = static_cast<int>(r);
  P.k = static_cast<int>(k);
  P.kp = static_cast<int>(k + (k & 1));
  P.wide = m < n;
  P.kind = static_cast<int>(a.kind);
  P.lam = a.lam;
  P.eps = a.eps;
  P.scale = a.scale;
  const int threads = 32 * std::max(1, P.kp / 2);
  constexpr int64_t kMaxGrid = INT_MAX;
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "small_spectral_cuda", [&] {
    auto kernel = matrix ? small_spectral_kernel<scalar_t, true> : small_spectral_kernel<scalar_t, false>;
    opt_in_max_smem(kernel);
    for (int64_t b0 = 0; b0 < B; b0 += kMaxGrid) {
      const int64_t nb = std::min(kMaxGrid, B - b0);
      P.t = a.t.data_ptr<double>() + b0;
      scalar_t* o = out.data_ptr<scalar_t>() + (matrix ? b0 * m * n : b0);
      kernel<<<static_cast<unsigned>(nb), threads, bytes, stream>>>(x.data_ptr<scalar_t>() + b0 * m * n, o, P);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    }
  });
  return true;
}

// ---- 2. batched symmetric eigensolver of the Gram route: two-sided Jacobi ------------

struct EigParams {
  int k, kp, ld;  // size, k rounded up to even, leading dimension (odd: conflict-free columns)
  bool vectors;
  bool in_smem;   // matrices in shared memory (else in `work`)
};

// Dynamic shared memory: c[np], s[np] (float64), pq[2 np] (int), then, when in_smem,
// G (k x ld) and V (k x ld), row-major.
template <typename T>
__global__ void __launch_bounds__(kMaxThreads)
    jacobi_eigh_kernel(const T* __restrict__ Gin, double* __restrict__ w, double* __restrict__ Vout,
                       double* __restrict__ work, EigParams P) {
  extern __shared__ double smem[];
  __shared__ double s_red[32];
  __shared__ int s_rot;

  const int k = P.k, ld = P.ld, npairs = P.kp / 2;
  const int tid = threadIdx.x, nthreads = blockDim.x;
  const int64_t b = blockIdx.x;
  double* cs = smem;
  double* sn = cs + npairs;
  int* pq = reinterpret_cast<int*>(sn + npairs);
  const size_t mat = static_cast<size_t>(k) * ld;
  double* G = P.in_smem ? reinterpret_cast<double*>(pq + 2 * npairs)
                        : work + b * (P.vectors ? 2 : 1) * mat;
  double* V = G + mat;
  const T* gb = Gin + b * k * k;

  // Scale by a power of two from the largest diagonal entry (the largest |G_ij|).
  double dmax = 0;
  for (int i = tid; i < k; i += nthreads) dmax = fmax(dmax, fabs(static_cast<double>(gb[i * k + i])));
  const int e = scale_exponent(block_max(dmax, s_red));
  for (int g = tid; g < k * k; g += nthreads) {
    const int i = g / k, j = g - i * k;
    // symmetrise: a GEMM may round G_ij and G_ji differently
    G[i * ld + j] = ldexp(0.5 * (static_cast<double>(gb[g]) + static_cast<double>(gb[j * k + i])), -e);
    if (P.vectors) V[i * ld + j] = i == j ? 1.0 : 0.0;
  }
  __syncthreads();

  const double tol = DBL_EPSILON, floor_abs = DBL_EPSILON * DBL_EPSILON;  // the scaled max diagonal is in [0.5, 1)
  for (int sweep = 0; sweep < kMaxSweeps; ++sweep) {
    if (tid == 0) s_rot = 0;
    __syncthreads();
    for (int rd = 0; rd < P.kp - 1; ++rd) {
      // (a) the rotations of this round, from the current matrix
      for (int j = tid; j < npairs; j += nthreads) {
        int p, q;
        rr_pair(j, rd, P.kp, p, q);
        int code = -1;
        if (q < k) {
          const double app = G[p * ld + p], aqq = G[q * ld + q], apq = G[p * ld + q];
          if (fabs(apq) > fmax(tol * sqrt(fabs(app)) * sqrt(fabs(aqq)), floor_abs)) {
            double c, s;
            jacobi_rotation(app, aqq, apq, c, s);
            cs[j] = c;
            sn[j] = s;
            code = q;
            atomicOr(&s_rot, 1);  // an atomic: several threads may set it
          }
        }
        pq[2 * j] = p;
        pq[2 * j + 1] = code;
      }
      __syncthreads();
      // (b) rows: G <- J^T G
      for (int g = tid; g < npairs * k; g += nthreads) {
        const int j = g / k, col = g - j * k;
        const int q = pq[2 * j + 1];
        if (q < 0) continue;
        const int p = pq[2 * j];
        const double c = cs[j], s = sn[j];
        const double u = G[p * ld + col], v = G[q * ld + col];
        G[p * ld + col] = c * u - s * v;
        G[q * ld + col] = s * u + c * v;
      }
      __syncthreads();
      // (c) columns: G <- G J, V <- V J; the annihilated pair is set to exact zeros
      for (int g = tid; g < npairs * k; g += nthreads) {
        const int j = g / k, row = g - j * k;
        const int q = pq[2 * j + 1];
        if (q < 0) continue;
        const int p = pq[2 * j];
        const double c = cs[j], s = sn[j];
        const double u = G[row * ld + p], v = G[row * ld + q];
        G[row * ld + p] = row == q ? 0.0 : c * u - s * v;
        G[row * ld + q] = row == p ? 0.0 : s * u + c * v;
        if (P.vectors) {
          const double y = V[row * ld + p], z = V[row * ld + q];
          V[row * ld + p] = c * y - s * z;
          V[row * ld + q] = s * y + c * z;
        }
      }
      __syncthreads();
    }
    const int rotated = s_rot;
    __syncthreads();
    if (!rotated) break;
  }

  for (int j = tid; j < k; j += nthreads) w[b * k + j] = ldexp(G[j * ld + j], e);
  if (P.vectors) {
    for (int g = tid; g < k * k; g += nthreads) {
      const int i = g / k, j = g - i * k;
      Vout[b * k * k + g] = V[i * ld + j];
    }
  }
}

std::tuple<at::Tensor, at::Tensor> sym_eig_cuda(const at::Tensor& G, bool want_vectors) {
  const c10::cuda::CUDAGuard guard(G.device());
  const int64_t B = G.size(0), k = G.size(1);
  TORCH_CHECK(G.dim() == 3 && G.size(2) == k && G.is_contiguous(), "sym_eig_cuda: internal error, G must be (b, k, k)");
  TORCH_CHECK(k <= kEigMaxK, "sym_eig_cuda: internal error, k = ", k, " exceeds ", kEigMaxK);
  const auto dopts = G.options().dtype(at::kDouble);
  if (B == 0 || k == 0) return {at::empty({B, k}, dopts), want_vectors ? at::empty({B, k, k}, dopts) : at::Tensor()};

  EigParams P;
  P.k = static_cast<int>(k);
  P.kp = static_cast<int>(k + (k & 1));
  P.ld = static_cast<int>(k | 1);
  P.vectors = want_vectors;
  const int npairs = P.kp / 2;
  const size_t rot_bytes = static_cast<size_t>(npairs) * (2 * sizeof(double) + 2 * sizeof(int));
  const size_t mat_bytes = (want_vectors ? 2 : 1) * static_cast<size_t>(k) * P.ld * sizeof(double);
  P.in_smem = rot_bytes + mat_bytes + kStaticSmemReserve <= smem_optin();
  const size_t dyn = rot_bytes + (P.in_smem ? mat_bytes : 0);
  const int threads = k <= 32 ? 128 : k <= 64 ? 256 : k <= 128 ? 512 : kMaxThreads;

  // Out of shared memory a block sweeps from global memory, one matrix per block. On an
  // H200 (ops.svt, 2026-11-26) such a block took 47 ms at k = 128 and 190 ms at k = 200,
  // where cuSOLVER's float64 eigh took 2-4 ms a matrix, one matrix after another: the
  // kernel wins only for batches above about k / 4 matrices.
  if (!P.in_smem && B * 4 <= k) {
    const at::Tensor Gd = G.to(at::kDouble);
    return want_vectors ? at::linalg_eigh(Gd) : std::make_tuple(at::linalg_eigvalsh(Gd), at::Tensor());
  }
  at::Tensor w = at::empty({B, k}, dopts);
  at::Tensor V = want_vectors ? at::empty({B, k, k}, dopts) : at::Tensor();

  // Out of shared memory: a global workspace per matrix, in chunks of <= 512 MiB.
  int64_t chunk = std::min<int64_t>(B, INT_MAX);
  at::Tensor work;
  if (!P.in_smem) {
    const int64_t per = static_cast<int64_t>(mat_bytes / sizeof(double));
    chunk = std::max<int64_t>(1, std::min<int64_t>(chunk, (int64_t(1) << 26) / per));
    work = at::empty({chunk * per}, dopts);
  }
  auto stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(G.scalar_type(), "sym_eig_cuda", [&] {
    auto kernel = jacobi_eigh_kernel<scalar_t>;
    opt_in_max_smem(kernel);
    for (int64_t b0 = 0; b0 < B; b0 += chunk) {
      const int64_t nb = std::min(chunk, B - b0);
      kernel<<<static_cast<unsigned>(nb), threads, dyn, stream>>>(
          G.data_ptr<scalar_t>() + b0 * k * k, w.data_ptr<double>() + b0 * k,
          want_vectors ? V.data_ptr<double>() + b0 * k * k : nullptr, P.in_smem ? nullptr : work.data_ptr<double>(),
          P);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    }
  });
  return {w, V};
}

}  // namespace

TORCH_LIBRARY_IMPL(mtlkernels, CUDA, m) {
  register_nuclear<sym_eig_cuda, small_spectral_cuda, max_gram_k_cuda>(m);
}

}  // namespace mtlkernels
