// CPU kernels of the shrinkage family: parallel over elements (or groups) with
// at::parallel_for; inner loops are branch-free so the compiler vectorises them.
// The elementwise loop and the row-group loop are compiled once per instruction set
// (AVX-512, AVX2, baseline; common/cpu_isa.h) and picked at run time.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <type_traits>
#include <vector>

#include "common/cpu_isa.h"
#include "ops/shrinkage.h"

#define MTL_INLINE inline __attribute__((always_inline))

namespace mtlkernels {
namespace {

constexpr int64_t kGrain = 32768;

// scale * sign(v) * max(|v| - t, 0). NaN in v propagates (std::max keeps its
// first argument when the comparison is false).
template <typename T>
MTL_INLINE T shrink1(T v, T t, T scale) {
  T a = std::max(std::abs(v) - t, T(0));
  return (v < T(0) ? -a : a) * scale;
}

template <typename T, bool HasGrad>
MTL_INLINE T step1(const T* x, const T* g, int64_t i, T lr) {
  if constexpr (HasGrad) return x[i] - lr * g[i];
  else return x[i];
}

template <typename T, bool HasGrad>
MTL_INLINE void shrink_range(const T* x, const T* g, T* out, int64_t b, int64_t e, T lr, const Threshold& th, T tmul,
                  T scale) {
  if (th.uniform()) {
    const T t = static_cast<T>(th.scalar) * tmul;
    for (int64_t i = b; i < e; ++i) out[i] = shrink1(step1<T, HasGrad>(x, g, i, lr), t, scale);
    return;
  }
  const T* tv = th.values.data_ptr<T>();
  const int64_t inner = th.inner, period = th.period;
  if (inner == 1) {  // tau cycles with every element: walk whole periods
    int64_t i = b;
    while (i < e) {
      const int64_t j0 = i % period;
      const int64_t stop = std::min(e, i + (period - j0));
      const T* tj = tv + (j0 - i);
      for (int64_t k = i; k < stop; ++k) out[k] = shrink1(step1<T, HasGrad>(x, g, k, lr), tj[k] * tmul, scale);
      i = stop;
    }
  } else {  // tau constant over runs of `inner` elements
    int64_t i = b;
    while (i < e) {
      const int64_t s = i / inner;
      const int64_t stop = std::min(e, (s + 1) * inner);
      const T t = tv[s % period] * tmul;
      for (int64_t k = i; k < stop; ++k) out[k] = shrink1(step1<T, HasGrad>(x, g, k, lr), t, scale);
      i = stop;
    }
  }
}

using ShrinkRangeFn = void (*)(const void* x, const void* g, void* out, int64_t b, int64_t e, double lr,
                              const Threshold& th, double tmul, double scale);

#define MTL_SHRINK_RANGE(NAME, TARGET, T, G)                                                              \
  TARGET void NAME(const void* x, const void* g, void* out, int64_t b, int64_t e, double lr,              \
                   const Threshold& th, double tmul, double scale) {                                      \
    shrink_range<T, G>(static_cast<const T*>(x), static_cast<const T*>(g), static_cast<T*>(out), b, e,    \
                       static_cast<T>(lr), th, static_cast<T>(tmul), static_cast<T>(scale));             \
  }
// One set per ISA, indexed by 2 * (dtype is float64) + (has a gradient step).
#define MTL_SHRINK_SET(SUF, TARGET)                          \
  MTL_SHRINK_RANGE(shrink_f32_##SUF, TARGET, float, false)   \
  MTL_SHRINK_RANGE(shrink_f32g_##SUF, TARGET, float, true)   \
  MTL_SHRINK_RANGE(shrink_f64_##SUF, TARGET, double, false)  \
  MTL_SHRINK_RANGE(shrink_f64g_##SUF, TARGET, double, true)  \
  const ShrinkRangeFn shrink_set_##SUF[4] = {shrink_f32_##SUF, shrink_f32g_##SUF, shrink_f64_##SUF, shrink_f64g_##SUF};

MTL_SHRINK_SET(base, )
#ifdef MTL_HAVE_X86_VARIANTS
MTL_SHRINK_SET(avx2, MTL_TARGET_AVX2)
MTL_SHRINK_SET(avx512, MTL_TARGET_AVX512)
#endif

void shrink_cpu(const at::Tensor& x, const at::Tensor& grad, double lr, const Threshold& th, double tmul,
                double scale, at::Tensor& out) {
  const bool has_grad = grad.defined();
  const ShrinkRangeFn fn = pick_isa(2 * (x.scalar_type() == at::kDouble) + has_grad, MTL_ISA_TABLES(shrink_set));
  const void* xp = x.data_ptr();
  const void* gp = has_grad ? grad.data_ptr() : nullptr;
  void* op = out.data_ptr();
  // A uniform threshold is T(tau * tmul), the product in double, as the CUDA kernel has it.
  Threshold t = th;
  double tm = tmul;
  if (th.uniform()) {
    t.scalar = th.scalar * tmul;
    tm = 1.0;
  }
  at::parallel_for(0, x.numel(), kGrain, [&](int64_t b, int64_t e) { fn(xp, gp, op, b, e, lr, t, tm, scale); });
}

// Group factor max(0, 1 - t / norm), NaN-propagating.
inline double group_factor(double sumsq, double t) {
  const double nrm = std::sqrt(sumsq);
  if (std::isnan(nrm)) return nrm;
  return nrm > t ? 1.0 - t / nrm : 0.0;
}

// Sum of squares in double with kLanes independent partial sums: one running sum is a
// serial chain of dependent adds (one add latency per element); independent lanes let
// the compiler vectorise. Fixed order, so the result does not depend on threads.
constexpr int kLanes = 8;

template <typename T>
MTL_INLINE double sum_squares(const T* v, int64_t n) {
  double acc[kLanes] = {0};
  int64_t c = 0;
  for (; c + kLanes <= n; c += kLanes) {
    for (int j = 0; j < kLanes; ++j) acc[j] += static_cast<double>(v[c + j]) * static_cast<double>(v[c + j]);
  }
  double s = 0;
  for (int j = 0; j < kLanes; ++j) s += acc[j];
  for (; c < n; ++c) s += static_cast<double>(v[c]) * static_cast<double>(v[c]);
  return s;
}

template <typename T>
inline double tau_of(const GroupArgs& a, const T* tv, int64_t grp) {
  return (tv ? static_cast<double>(tv[grp]) : a.tau.scalar) * a.tmul;
}

// Row groups for rows [b, e): z = S(x - lr g, l1) into out, then each row scaled by
// its group factor; three passes over a row that stays in L1.
template <typename T, bool HasGrad>
MTL_INLINE void rows_range(const T* x, const T* g, T* out, int64_t n, int64_t b, int64_t e, T lr, T l1,
                           const GroupArgs& a, const T* tv) {
  for (int64_t r = b; r < e; ++r) {
    const int64_t base = r * n;
    T* row = out + base;
    for (int64_t c = 0; c < n; ++c) row[c] = shrink1(step1<T, HasGrad>(x, g, base + c, lr), l1, T(1));
    const T f = static_cast<T>(group_factor(sum_squares(row, n), tau_of(a, tv, r)));
    for (int64_t c = 0; c < n; ++c) row[c] *= f;
  }
}

using RowsRangeFn = void (*)(const void* x, const void* g, void* out, int64_t n, int64_t b, int64_t e, double lr,
                             double l1, const GroupArgs& a, const void* tv);

#define MTL_ROWS_RANGE(NAME, TARGET, T, G)                                                                   \
  TARGET void NAME(const void* x, const void* g, void* out, int64_t n, int64_t b, int64_t e, double lr,       \
                   double l1, const GroupArgs& a, const void* tv) {                                          \
    rows_range<T, G>(static_cast<const T*>(x), static_cast<const T*>(g), static_cast<T*>(out), n, b, e,      \
                     static_cast<T>(lr), static_cast<T>(l1), a, static_cast<const T*>(tv));                  \
  }
#define MTL_ROWS_SET(SUF, TARGET)                        \
  MTL_ROWS_RANGE(rows_f32_##SUF, TARGET, float, false)   \
  MTL_ROWS_RANGE(rows_f32g_##SUF, TARGET, float, true)   \
  MTL_ROWS_RANGE(rows_f64_##SUF, TARGET, double, false)  \
  MTL_ROWS_RANGE(rows_f64g_##SUF, TARGET, double, true)  \
  const RowsRangeFn rows_set_##SUF[4] = {rows_f32_##SUF, rows_f32g_##SUF, rows_f64_##SUF, rows_f64g_##SUF};

MTL_ROWS_SET(base, )
#ifdef MTL_HAVE_X86_VARIANTS
MTL_ROWS_SET(avx2, MTL_TARGET_AVX2)
MTL_ROWS_SET(avx512, MTL_TARGET_AVX512)
#endif

// Column groups of a matrix with many rows, in two streaming passes over contiguous
// rows: (1) out = prox(row) and per-chunk partial column sums of squares (a fixed number
// of row chunks, so the summation order does not depend on the thread count), then the
// column factors from the chunks' sums in chunk order; (2) every row scaled by them.
constexpr int64_t kMinRowsForPartials = 64;
constexpr int64_t kMaxChunks = 16;

template <typename T, typename ProxRow, typename TauOf>
void cols_by_row_chunks(int64_t m, int64_t n, const ProxRow& prox_row, T* op, const TauOf& tau_of_col) {
  const int64_t chunks = std::min<int64_t>(kMaxChunks, std::max<int64_t>(1, m * n / kGrain));
  const int64_t rows_per = (m + chunks - 1) / chunks;
  std::vector<double> part(static_cast<size_t>(chunks * n), 0.0);
  at::parallel_for(0, chunks, 1, [&](int64_t b, int64_t e) {
    for (int64_t k = b; k < e; ++k) {
      double* ss = part.data() + k * n;
      for (int64_t r = k * rows_per; r < std::min(m, (k + 1) * rows_per); ++r) {
        prox_row(r, 0, n);
        const T* row = op + r * n;
        for (int64_t c = 0; c < n; ++c) ss[c] += static_cast<double>(row[c]) * static_cast<double>(row[c]);
      }
    }
  });
  std::vector<T> f(static_cast<size_t>(n));
  for (int64_t c = 0; c < n; ++c) {
    double s = 0;
    for (int64_t k = 0; k < chunks; ++k) s += part[k * n + c];
    f[c] = static_cast<T>(group_factor(s, tau_of_col(c)));
  }
  const T* fp = f.data();
  at::parallel_for(0, m, std::max<int64_t>(1, kGrain / std::max<int64_t>(n, 1)), [&](int64_t b, int64_t e) {
    for (int64_t r = b; r < e; ++r) {
      T* row = op + r * n;
      for (int64_t c = 0; c < n; ++c) row[c] *= fp[c];
    }
  });
}

template <typename T>
void group_cpu_impl(const at::Tensor& x, const at::Tensor& grad, double lr_, const GroupArgs& a, at::Tensor& out) {
  const int64_t m = x.size(0), n = x.size(1);
  const T* xp = x.data_ptr<T>();
  const T* gp = grad.defined() ? grad.data_ptr<T>() : nullptr;
  T* op = out.data_ptr<T>();
  const T* tv = a.tau.uniform() ? nullptr : a.tau.values.data_ptr<T>();
  const T lr = static_cast<T>(lr_), l1 = static_cast<T>(a.l1), one = T(1);
  // z = S(x - lr g, l1), written into out.
  auto prox_row = [&](int64_t r, int64_t c0, int64_t c1) {
    const int64_t base = r * n;
    if (gp) {
      for (int64_t c = base + c0; c < base + c1; ++c) op[c] = shrink1(xp[c] - lr * gp[c], l1, one);
    } else {
      for (int64_t c = base + c0; c < base + c1; ++c) op[c] = shrink1(xp[c], l1, one);
    }
  };
  const int64_t row_grain = std::max<int64_t>(1, kGrain / std::max<int64_t>(n, 1));

  switch (a.mode) {
    case GroupMode::Rows: {
      const int kind = 2 * std::is_same_v<T, double> + (gp != nullptr);
      const RowsRangeFn fn = pick_isa(kind, MTL_ISA_TABLES(rows_set));
      at::parallel_for(0, m, row_grain,
                       [&](int64_t b, int64_t e) { fn(xp, gp, op, n, b, e, lr_, a.l1, a, tv); });
      break;
    }
    case GroupMode::Labels: {
      const int64_t G = a.num_groups;
      const int64_t* lab = a.labels.data_ptr<int64_t>();
      std::vector<double> taus(G);
      for (int64_t k = 0; k < G; ++k) taus[k] = tau_of(a, tv, k);
      at::parallel_for(0, m, row_grain, [&](int64_t b, int64_t e) {
        std::vector<double> ss(G);
        std::vector<T> f(G);
        for (int64_t r = b; r < e; ++r) {
          prox_row(r, 0, n);
          T* row = op + r * n;
          std::fill(ss.begin(), ss.end(), 0.0);
          for (int64_t c = 0; c < n; ++c) ss[lab[c]] += static_cast<double>(row[c]) * row[c];
          for (int64_t k = 0; k < G; ++k) f[k] = static_cast<T>(group_factor(ss[k], taus[k]));
          for (int64_t c = 0; c < n; ++c) row[c] *= f[lab[c]];
        }
      });
      break;
    }
    case GroupMode::Cols: {
      if (m >= kMinRowsForPartials) {
        cols_by_row_chunks(m, n, prox_row, op, [&](int64_t c) { return tau_of(a, tv, c); });
        break;
      }
      // Few rows: blocks of columns, each row touching a short contiguous run of the block.
      constexpr int64_t kBlock = 64;
      const int64_t nblocks = (n + kBlock - 1) / kBlock;
      const int64_t grain = std::max<int64_t>(1, kGrain / std::max<int64_t>(m * kBlock, 1));
      at::parallel_for(0, nblocks, grain, [&](int64_t b, int64_t e) {
        double ss[kBlock];
        T f[kBlock];
        for (int64_t blk = b; blk < e; ++blk) {
          const int64_t c0 = blk * kBlock, c1 = std::min(n, c0 + kBlock), w = c1 - c0;
          std::fill(ss, ss + w, 0.0);
          for (int64_t r = 0; r < m; ++r) {
            prox_row(r, c0, c1);
            const T* row = op + r * n + c0;
            for (int64_t j = 0; j < w; ++j) ss[j] += static_cast<double>(row[j]) * row[j];
          }
          for (int64_t j = 0; j < w; ++j) f[j] = static_cast<T>(group_factor(ss[j], tau_of(a, tv, c0 + j)));
          for (int64_t r = 0; r < m; ++r) {
            T* row = op + r * n + c0;
            for (int64_t j = 0; j < w; ++j) row[j] *= f[j];
          }
        }
      });
      break;
    }
  }
}

void group_shrink_cpu(const at::Tensor& x, const at::Tensor& grad, double lr, const GroupArgs& a, at::Tensor& out) {
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "group_shrink_cpu",
                             [&] { group_cpu_impl<scalar_t>(x, grad, lr, a, out); });
}

}  // namespace

TORCH_LIBRARY_IMPL(mtlkernels, CPU, m) { register_shrinkage<shrink_cpu, group_shrink_cpu>(m); }

}  // namespace mtlkernels
