// Nuclear-norm family: the Gram route's per-matrix arithmetic in scalar loops, for small
// batches on the CPU (the multi-task solvers call svt and nuclear_norm on one d x T matrix
// per iteration). The rule, the filter and the values are those of nuclear.cpp
// (gram_accept, gram_filter, value_of), evaluated per matrix in float64 without the
// two dozen small tensor operations (and their allocations and dispatches) the batched
// form costs; on a 28 x 139 matrix that overhead was larger than the eigensolver itself.
// Used by nuclear.cpp:gram_tier when use_scalar_rule() says so; the results are the same
// (tested against the batched form in python_tests/test_nuclear.py through both paths).
#include <algorithm>
#include <cmath>
#include <limits>

#include "ops/nuclear.h"

namespace mtlkernels {

bool use_scalar_rule(const at::Tensor& xs) {
  // CPU, and few enough singular values that the loops below cost less than the
  // batched tensor ops they replace (which pay a fixed cost per op, not per value).
  const int64_t b = xs.size(0), k = std::min(xs.size(1), xs.size(2));
  return xs.device().is_cpu() && b * k <= 4096;
}

ScalarRule gram_rule_scalar(const at::Tensor& w, const at::Tensor& ts, const at::Tensor& gfin, const at::Tensor& xs,
                            const SpectralArgs& a, double eps_c, double eps_out, double realmin_c) {
  constexpr double kAcceptFactor = 16.0;
  const int64_t b = w.size(0), k = w.size(1);
  const bool matrix = spectral_is_matrix(a.kind);
  const at::Tensor wd = w.to(at::kDouble).contiguous();
  const at::Tensor td = ts.to(at::kDouble).contiguous();
  const at::Tensor gf = gfin.contiguous();
  const double* W = wd.data_ptr<double>();
  const double* Tt = td.data_ptr<double>();
  const bool* GF = gf.data_ptr<bool>();
  ScalarRule out;
  out.ok = at::empty({b}, w.options().dtype(at::kBool));
  bool* OK = out.ok.data_ptr<bool>();
  at::Tensor fd = matrix ? at::empty({b, k}, w.options().dtype(at::kDouble)) : at::empty({b}, w.options().dtype(at::kDouble));
  double* F = fd.data_ptr<double>();
  const double sqrt_eps = std::sqrt(eps_c);
  const double tiny_floor = std::sqrt(realmin_c / eps_c);
  at::Tensor xmax;  // max |x| per matrix, computed only if a matrix is near underflow
  for (int64_t i = 0; i < b; ++i) {
    const double* wi = W + i * k;
    const double t = Tt[i];
    double smax = 0.0, smin = std::numeric_limits<double>::infinity();
    for (int64_t j = 0; j < k; ++j) {
      const double s = std::sqrt(std::max(wi[j], 0.0));
      smax = std::max(smax, s);
      smin = std::min(smin, s);
    }
    // the rule (nuclear.cpp, top): estimated error of each component, aggregated
    double acc = 0.0;
    for (int64_t j = 0; j < k; ++j) {
      const double s = std::sqrt(std::max(wi[j], 0.0));
      const double delta = smax > 0 ? eps_c * smax * smax / std::max(s, smax * sqrt_eps) : 0.0;
      double e = 0.0;
      switch (a.kind) {
        case Spectral::Shrink:
        case Spectral::Complement:
          e = s > t ? t / s * delta : std::max(s + delta - t, 0.0);
          break;
        case Spectral::Nuclear:
          e = delta;
          break;
        case Spectral::Smoothed:
          e = std::min(s / t, 1.0) * delta;
          break;
      }
      acc += matrix ? e * e : e;
    }
    const double agg = matrix ? std::sqrt(acc / k) : acc / k;
    double bound = kAcceptFactor * eps_out * smax;
    if (a.kind == Spectral::Complement && smin > t) bound *= t / smin;
    bool ok = agg <= bound;
    if (a.kind != Spectral::Nuclear) ok = ok || t == 0;
    ok = ok && GF[i];
    if (smax < tiny_floor) {  // underflow: keep the result only for an exactly zero matrix
      if (!xmax.defined()) xmax = xs.abs().flatten(1).amax(1).to(at::kDouble).contiguous();
      ok = ok && xmax.data_ptr<double>()[i] == 0;
    }
    OK[i] = ok;
    // the filter f(s) = g(s) / s (matrix kinds) or the value (value kinds)
    if (matrix) {
      double* fi = F + i * k;
      for (int64_t j = 0; j < k; ++j) {
        const double s = std::sqrt(std::max(wi[j], 0.0));
        if (a.kind == Spectral::Shrink) {
          fi[j] = t == 0 ? 1.0 : (s > t ? 1.0 - t / s : 0.0);
        } else {  // Complement
          fi[j] = t == 0 ? 0.0 : (s > t ? t / s : 1.0) * a.scale;
        }
      }
    } else if (a.kind == Spectral::Nuclear) {
      double v = 0.0;
      for (int64_t j = 0; j < k; ++j) v += std::sqrt(std::max(wi[j], 0.0));
      F[i] = v;
    } else {  // Smoothed
      double v = 0.0;
      for (int64_t j = 0; j < k; ++j) {
        const double s = std::sqrt(std::max(wi[j], 0.0));
        v += s <= t ? std::max(wi[j], 0.0) / (2 * a.eps) : a.lam * (s - t * 0.5);
      }
      F[i] = v;
    }
  }
  out.values = fd;
  return out;
}

}  // namespace mtlkernels
