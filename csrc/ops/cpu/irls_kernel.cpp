// CPU kernels of the joint-IRLS family.
//
// pairwise_sq_dists reads every parameter once: the columns are cut into chunks
// (never straddling a layer), at::parallel_for runs over chunks, and each chunk
// walks blocks of kBlock columns that stay in cache while all n(n-1)/2 pairs are
// formed from them in register tiles of TI x TJ pairs (difference form, so nothing
// cancels when networks are close). Float32 sums run in float32 within a block
// (at most kBlock / V terms per SIMD lane) and in float64 across blocks, in one
// float64 partial row per chunk; the chunks of a layer are added at the end, in a
// fixed order (the result does not depend on the thread count).
//
// The inner loops use GCC vector extensions and are compiled three times (AVX-512,
// AVX2 + FMA, baseline x86-64 / any other target) with the ISA picked at run time,
// since the extension is built without -march flags.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <string>
#include <type_traits>
#include <vector>

#include "common/cpu_isa.h"
#include "ops/irls.h"

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wpsabi"
#endif

#define MTL_INLINE inline __attribute__((always_inline))

namespace mtlkernels {
namespace {

constexpr int64_t kBlock = 512;  // columns per cache block (a multiple of every V)

template <typename A, int V>
struct VecT {
  typedef A type __attribute__((vector_size(V * sizeof(A))));
};
template <typename A, int V>
using Vec = typename VecT<A, V>::type;

// V consecutive values of type T at p (unaligned), as a vector of A.
template <typename A, int V, typename T>
MTL_INLINE Vec<A, V> vload(const T* p) {
  if constexpr (std::is_same_v<A, T>) {
    Vec<A, V> v;
    std::memcpy(&v, p, sizeof(v));
    return v;
  } else {
    Vec<T, V> t;
    std::memcpy(&t, p, sizeof(t));
    return __builtin_convertvector(t, Vec<A, V>);
  }
}

template <typename A, int V>
MTL_INLINE void vstore(A* p, const Vec<A, V>& v) {
  std::memcpy(p, &v, sizeof(v));
}

// Sum of the lanes, by halving (log2(V) roundings in A).
template <typename A, int V>
MTL_INLINE A hsum(const Vec<A, V>& v) {
  if constexpr (V == 1) {
    return v[0];
  } else {
    Vec<A, V / 2> lo, hi;
    std::memcpy(&lo, &v, sizeof(lo));
    std::memcpy(&hi, reinterpret_cast<const char*>(&v) + sizeof(lo), sizeof(hi));
    return hsum<A, V / 2>(lo + hi);
  }
}

// ---- pairwise squared distances ----------------------------------------------------

// Columns [cb, ce) of one layer: part[pair_index(i, j)] += sum_c (x_i[c] - x_j[c])^2.
// x: row i at x + i * ld. T: storage type, A: accumulation type within a block.
template <typename T, typename A, int V, int TI, int TJ>
MTL_INLINE void sq_dists_chunk(const T* x, int64_t ld, int64_t n, int64_t cb, int64_t ce, double* part) {
  using VA = Vec<A, V>;
  constexpr int TP = TI > TJ ? TI : TJ;
  const int64_t npad = (n + TP - 1) / TP * TP;
  std::vector<const T*> rp(npad);
  std::vector<T> zeros(kBlock, T(0));  // stands in for the padding rows
  for (int64_t c = cb; c < ce; c += kBlock) {
    const int64_t len = std::min(kBlock, ce - c);
    const int64_t nv = len / V * V;
    for (int64_t i = 0; i < npad; ++i) rp[i] = i < n ? x + i * ld + c : zeros.data();
    if (c + kBlock < ce) {  // the next block, one cache line at a time, while this one is computed
      const int64_t next = std::min(kBlock, ce - c - kBlock) * int64_t(sizeof(T));
      for (int64_t i = 0; i < n; ++i) {
        const char* p = reinterpret_cast<const char*>(x + i * ld + c + kBlock);
        for (int64_t o = 0; o < next; o += 64) __builtin_prefetch(p + o);
      }
    }
    for (int64_t i0 = 0; i0 < n; i0 += TI) {
      for (int64_t j0 = i0 / TJ * TJ; j0 < n; j0 += TJ) {
        VA acc[TI][TJ];
        for (int r = 0; r < TI; ++r)
          for (int s = 0; s < TJ; ++s) acc[r][s] = VA{};
        const T* pi[TI];
        const T* pj[TJ];
        for (int r = 0; r < TI; ++r) pi[r] = rp[i0 + r];
        for (int s = 0; s < TJ; ++s) pj[s] = rp[j0 + s];
        for (int64_t k = 0; k < nv; k += V) {
          VA a[TI], b[TJ];
          for (int r = 0; r < TI; ++r) a[r] = vload<A, V>(pi[r] + k);
          for (int s = 0; s < TJ; ++s) b[s] = vload<A, V>(pj[s] + k);
          for (int r = 0; r < TI; ++r)
            for (int s = 0; s < TJ; ++s) {
              const VA d = a[r] - b[s];
              acc[r][s] += d * d;
            }
        }
        for (int r = 0; r < TI; ++r) {
          const int64_t i = i0 + r;
          for (int s = 0; s < TJ; ++s) {
            const int64_t j = j0 + s;
            if (!(i < j && j < n)) continue;
            double t = static_cast<double>(hsum<A, V>(acc[r][s]));
            for (int64_t k = nv; k < len; ++k) {
              const double d = static_cast<double>(pi[r][k]) - static_cast<double>(pj[s][k]);
              t += d * d;
            }
            part[pair_index(i, j, n)] += t;
          }
        }
      }
    }
  }
}

using SqChunkFn = void (*)(const void* x, int64_t ld, int64_t n, int64_t cb, int64_t ce, double* part);

// One instantiation per ISA: AVX-512 has 32 vector registers (4 x 4 tiles), AVX2 and
// SSE2 have 16 (2 x 4 tiles). V is one full register of the accumulation type.
#define MTL_SQ_CHUNK(NAME, TARGET, T, A, V, TI, TJ)                                                      \
  TARGET void NAME(const void* x, int64_t ld, int64_t n, int64_t cb, int64_t ce, double* part) {        \
    sq_dists_chunk<T, A, V, TI, TJ>(static_cast<const T*>(x), ld, n, cb, ce, part);                     \
  }

#ifdef MTL_HAVE_X86_VARIANTS
MTL_SQ_CHUNK(sq_f32_avx512, MTL_TARGET_AVX512, float, float, 16, 4, 4)
MTL_SQ_CHUNK(sq_f32d_avx512, MTL_TARGET_AVX512, float, double, 8, 4, 4)
MTL_SQ_CHUNK(sq_f64_avx512, MTL_TARGET_AVX512, double, double, 8, 4, 4)
MTL_SQ_CHUNK(sq_f32_avx2, MTL_TARGET_AVX2, float, float, 8, 2, 4)
MTL_SQ_CHUNK(sq_f32d_avx2, MTL_TARGET_AVX2, float, double, 4, 2, 4)
MTL_SQ_CHUNK(sq_f64_avx2, MTL_TARGET_AVX2, double, double, 4, 2, 4)
#endif
MTL_SQ_CHUNK(sq_f32_base, , float, float, 4, 2, 4)
MTL_SQ_CHUNK(sq_f32d_base, , float, double, 2, 2, 4)
MTL_SQ_CHUNK(sq_f64_base, , double, double, 2, 2, 4)

// Indexed by 0 float32, 1 float32 summed in float64, 2 float64.
const SqChunkFn sq_chunk_base[3] = {sq_f32_base, sq_f32d_base, sq_f64_base};
#ifdef MTL_HAVE_X86_VARIANTS
const SqChunkFn sq_chunk_avx2[3] = {sq_f32_avx2, sq_f32d_avx2, sq_f64_avx2};
const SqChunkFn sq_chunk_avx512[3] = {sq_f32_avx512, sq_f32d_avx512, sq_f64_avx512};
#endif

SqChunkFn pick_sq_chunk(at::ScalarType dtype, bool fp64) {
  return pick_isa(dtype == at::kDouble ? 2 : (fp64 ? 1 : 0), MTL_ISA_TABLES(sq_chunk));
}

// Chunks: at least 16 blocks each, and at most about 256 of them over all layers
// (plus one per layer), fewer when n is so large that the float64 partial rows
// (npairs each) would pass 64 MiB. Independent of the thread count.
LayerChunks cpu_chunks(const std::vector<int64_t>& offsets, int64_t npairs) {
  const int64_t P = offsets.back();
  const int64_t target = std::clamp<int64_t>((int64_t(64) << 20) / (8 * std::max<int64_t>(npairs, 1)), 8, 256);
  return make_layer_chunks(offsets, std::max<int64_t>(16 * kBlock, (P + target - 1) / target), kBlock);
}

void sq_dists_cpu(const at::Tensor& params, const std::vector<int64_t>& offsets, bool fp64, at::Tensor& out) {
  const int64_t n = params.size(0);
  const int64_t npairs = n * (n - 1) / 2;
  const int64_t L = static_cast<int64_t>(offsets.size()) - 1;
  const LayerChunks ch = cpu_chunks(offsets, npairs);
  const SqChunkFn fn = pick_sq_chunk(params.scalar_type(), fp64 && params.scalar_type() == at::kFloat);
  const int64_t ld = params.stride(0);
  const char* base = static_cast<const char*>(params.data_ptr());
  std::vector<double> part(static_cast<size_t>(ch.size() * npairs), 0.0);
  at::parallel_for(0, ch.size(), 1, [&](int64_t b, int64_t e) {
    for (int64_t q = b; q < e; ++q) fn(base, ld, n, ch.begin[q], ch.end[q], part.data() + q * npairs);
  });
  AT_DISPATCH_FLOATING_TYPES(out.scalar_type(), "sq_dists_cpu_out", [&] {
    scalar_t* o = out.data_ptr<scalar_t>();
    at::parallel_for(0, L, 1, [&](int64_t lb, int64_t le) {
      std::vector<double> acc(npairs);
      for (int64_t l = lb; l < le; ++l) {
        std::fill(acc.begin(), acc.end(), 0.0);
        for (int64_t q = ch.first[l]; q < ch.first[l + 1]; ++q) {
          const double* pq = part.data() + q * npairs;
          for (int64_t p = 0; p < npairs; ++p) acc[p] += pq[p];
        }
        scalar_t* ol = o + l * n * n;
        for (int64_t i = 0; i < n; ++i) {
          ol[i * n + i] = 0;
          for (int64_t j = i + 1; j < n; ++j) {
            const scalar_t v = static_cast<scalar_t>(acc[pair_index(i, j, n)]);
            ol[i * n + j] = v;
            ol[j * n + i] = v;
          }
        }
      }
    });
  });
}

// ---- pairwise mix --------------------------------------------------------------------

// Columns [cb, ce) of layer l: out_i = self_i x_i + sum_j K_ij (x_j - x_i), with K the
// layer's (n, n) off-diagonal coefficients (zero diagonal), in TI output rows at a time.
// A zero coefficient (the diagonal, a network without weight) contributes nothing, also
// next to an inf (0 * inf is taken as 0, not NaN): the branch is on a scalar, uniform
// over the vector.
template <typename T, int V, int TI>
MTL_INLINE void mix_rows(const T* x, int64_t ld, int64_t n, const T* K, const T* self, int64_t i0, int64_t c,
                         int64_t len, T* out, int64_t ldo) {
  using VT = Vec<T, V>;
  const int64_t nv = len / V * V;
  const T* xi[TI];
  for (int r = 0; r < TI; ++r) xi[r] = x + (i0 + r) * ld + c;
  for (int64_t k = 0; k < nv; k += V) {
    VT a[TI], acc[TI];
    for (int r = 0; r < TI; ++r) {
      a[r] = vload<T, V>(xi[r] + k);
      acc[r] = VT{};
    }
    for (int64_t j = 0; j < n; ++j) {
      const VT b = vload<T, V>(x + j * ld + c + k);
      for (int r = 0; r < TI; ++r) {
        const T kr = K[(i0 + r) * n + j];
        if (kr != T(0)) acc[r] += (b - a[r]) * kr;
      }
    }
    // The small sum of differences first, the self term last: one rounding at x's scale.
    for (int r = 0; r < TI; ++r) {
      const T s = self[i0 + r];
      vstore<T, V>(out + (i0 + r) * ldo + c + k, s != T(0) ? a[r] * s + acc[r] : acc[r]);
    }
  }
  for (int64_t k = nv; k < len; ++k) {
    for (int r = 0; r < TI; ++r) {
      const T a = xi[r][k];
      T acc = 0;
      for (int64_t j = 0; j < n; ++j) {
        const T kr = K[(i0 + r) * n + j];
        if (kr != T(0)) acc += (x[j * ld + c + k] - a) * kr;
      }
      const T s = self[i0 + r];
      out[(i0 + r) * ldo + c + k] = s != T(0) ? a * s + acc : acc;
    }
  }
}

template <typename T, int V, int TI>
MTL_INLINE void mix_chunk(const T* x, int64_t ld, int64_t n, const T* K, const T* self, int64_t cb, int64_t ce,
                          T* out, int64_t ldo) {
  for (int64_t c = cb; c < ce; c += kBlock) {
    const int64_t len = std::min(kBlock, ce - c);
    int64_t i0 = 0;
    for (; i0 + TI <= n; i0 += TI) mix_rows<T, V, TI>(x, ld, n, K, self, i0, c, len, out, ldo);
    for (; i0 < n; ++i0) mix_rows<T, V, 1>(x, ld, n, K, self, i0, c, len, out, ldo);
  }
}

using MixChunkFn = void (*)(const void* x, int64_t ld, int64_t n, const void* K, const void* self, int64_t cb,
                            int64_t ce, void* out, int64_t ldo);

#define MTL_MIX_CHUNK(NAME, TARGET, T, V, TI)                                                                \
  TARGET void NAME(const void* x, int64_t ld, int64_t n, const void* K, const void* self, int64_t cb,        \
                   int64_t ce, void* out, int64_t ldo) {                                                     \
    mix_chunk<T, V, TI>(static_cast<const T*>(x), ld, n, static_cast<const T*>(K),                           \
                        static_cast<const T*>(self), cb, ce, static_cast<T*>(out), ldo);                     \
  }

#ifdef MTL_HAVE_X86_VARIANTS
MTL_MIX_CHUNK(mix_f32_avx512, MTL_TARGET_AVX512, float, 16, 4)
MTL_MIX_CHUNK(mix_f64_avx512, MTL_TARGET_AVX512, double, 8, 4)
MTL_MIX_CHUNK(mix_f32_avx2, MTL_TARGET_AVX2, float, 8, 4)
MTL_MIX_CHUNK(mix_f64_avx2, MTL_TARGET_AVX2, double, 4, 4)
#endif
MTL_MIX_CHUNK(mix_f32_base, , float, 4, 4)
MTL_MIX_CHUNK(mix_f64_base, , double, 2, 4)

const MixChunkFn mix_chunk_base[2] = {mix_f32_base, mix_f64_base};
#ifdef MTL_HAVE_X86_VARIANTS
const MixChunkFn mix_chunk_avx2[2] = {mix_f32_avx2, mix_f64_avx2};
const MixChunkFn mix_chunk_avx512[2] = {mix_f32_avx512, mix_f64_avx512};
#endif

MixChunkFn pick_mix_chunk(at::ScalarType dtype) {
  return pick_isa(dtype == at::kDouble ? 1 : 0, MTL_ISA_TABLES(mix_chunk));
}

void mix_cpu(const at::Tensor& params, const std::vector<int64_t>& offsets, const at::Tensor& coeffs,
             const at::Tensor& self, at::Tensor& out) {
  const int64_t n = params.size(0);
  const LayerChunks ch = cpu_chunks(offsets, 0);
  const MixChunkFn fn = pick_mix_chunk(params.scalar_type());
  const int64_t ld = params.stride(0), ldo = out.stride(0);
  const int64_t es = params.element_size();
  const char* K = static_cast<const char*>(coeffs.data_ptr());
  const char* S = static_cast<const char*>(self.data_ptr());
  at::parallel_for(0, ch.size(), 1, [&](int64_t b, int64_t e) {
    for (int64_t q = b; q < e; ++q) {
      const int64_t l = ch.layer[q];
      fn(params.data_ptr(), ld, n, K + l * n * n * es, S + l * n * es, ch.begin[q], ch.end[q], out.data_ptr(), ldo);
    }
  });
}

// ---- per-pair weights ----------------------------------------------------------------

// Robust weight and value of eqs. 7 and 3 for a pair squared distance d2 and scale s:
// w = s^2 / (s^2 + d2) and rho = w * d2, evaluated without overflow or 0/0.
inline void robust_pair(double d2, double s, double& w, double& rho) {
  if (s == 0) {
    w = 0;
    rho = 0;
  } else if (std::isinf(s)) {
    w = 1;
    rho = d2;
  } else {
    const double r = std::sqrt(d2) / s;  // distance in units of sigma
    const double r2 = r * r;
    w = 1 / (1 + r2);
    rho = r2 <= 1 ? d2 * w : (s * s) / (1 + 1 / r2);
  }
}

void pair_cpu(const at::Tensor& D, const at::Tensor& sigma, const at::Tensor& weights, at::Tensor& w,
              at::Tensor& rho, at::Tensor& dphi) {
  const int64_t L = D.size(0), nn = D.size(1) * D.size(2);
  AT_DISPATCH_FLOATING_TYPES(D.scalar_type(), "irls_pair_cpu", [&] {
    const scalar_t* d = D.data_ptr<scalar_t>();
    const double* sg = sigma.defined() ? sigma.data_ptr<double>() : nullptr;
    const scalar_t* wt = weights.defined() ? weights.data_ptr<scalar_t>() : nullptr;
    scalar_t* wo = w.defined() ? w.data_ptr<scalar_t>() : nullptr;
    scalar_t* ro = rho.data_ptr<scalar_t>();
    scalar_t* go = dphi.defined() ? dphi.data_ptr<scalar_t>() : nullptr;
    at::parallel_for(0, L * nn, 4096, [&](int64_t b, int64_t e) {
      for (int64_t q = b; q < e; ++q) {
        const int64_t l = q / nn;
        const double d2 = static_cast<double>(d[q]) + (l + 1 < L ? static_cast<double>(d[q + nn]) : 0.0);
        if (sg) {
          double wv, rv;
          robust_pair(d2, sg[l], wv, rv);
          if (wo) wo[q] = static_cast<scalar_t>(wv);
          ro[q] = static_cast<scalar_t>(rv);
          if (go) go[q] = static_cast<scalar_t>(wv * wv);
        } else {
          ro[q] = static_cast<scalar_t>(static_cast<double>(wt[q]) * d2);
          if (go) go[q] = wt[q];
        }
      }
    });
  });
}

}  // namespace

TORCH_LIBRARY_IMPL(mtlkernels, CPU, m) { register_irls<sq_dists_cpu, mix_cpu, pair_cpu>(m); }

}  // namespace mtlkernels
