// Nuclear-norm family: schemas, validation and the routing shared by every device.
// Kernels: csrc/ops/cpu/nuclear_kernel.cpp, csrc/ops/cuda/nuclear_kernel.cu.
// Python bridge: mtlkernels/ops/nuclear.py. Reference: mtlkernels/reference/nuclear.py.
//
// ---- The accuracy rule of the Gram route ------------------------------------------
// The Gram route computes G = x^T x in a precision c (eps_c = machine epsilon of c),
// then its eigenvalues w_i = s_i^2 to an absolute accuracy of about eps_c * s_max^2.
// A singular value s_i therefore carries an absolute error of about
//     delta_i = eps_c * s_max^2 / max(s_i, sqrt(eps_c) * s_max)
// (relative accuracy is lost below the floor sqrt(eps_c) * s_max). What this does to
// each op, per singular component i (s_i computed, t the threshold):
//   svt / gradient:  s_i > t:  (t / s_i) * delta_i  (the error of 1 - t / s_i times s_i)
//                    s_i <= t: max(s_i + delta_i - t, 0)  (a zeroed value that may be active)
//   nuclear norm:    delta_i
//   smoothed value:  min(s_i / t, 1) * delta_i  (in units of lam; h' = min(s / eps, lam))
// An exact SVD in the output precision has an error of about eps_out * s_max per
// component (for the gradient, eps_out * s_max * t / s_min when every s_i > t: the
// output is then t U V^T). THE RULE: a matrix's Gram result is accepted (1) when the
// estimated error, aggregated over the k components as the error of the op's result
// aggregates (root mean square for a matrix, whose Frobenius error it is; mean for a
// sum), is at most kAcceptFactor (16) times that of the exact route, e.g. for svt
// sqrt(mean_i e_i^2) <= 16 eps_out s_max, or (2) when t == 0 (svt is then the identity
// x V V^T, the gradient and the smoothed value are zero); in both cases only if G is
// finite and s_max^2 does not underflow. For svt with every s_i well above t this
// accepts any t; in the worst case (every singular value near t) it needs
// t >= s_max * eps_c / (16 eps_out), i.e. t >= s_max / 16 when the Gram matrix is in
// the input's precision. Rejected matrices go to the next tier: for float32 input
// the Gram matrix in float64, whose floor sqrt(eps64) s_max ~ 1.5e-8 s_max is below
// float32 resolution (it passes the rule for svt and the norms whatever t; only the
// gradient with t far below s_min can fail it), then the exact route (LAPACK /
// cuSOLVER SVD), the only route for float64 input the rule rejects, which also takes
// every matrix holding NaN or inf (its result is NaN). Both sides of the rule are
// tested in python_tests/test_nuclear.py.
//
// ---- Shen et al. 2015 (Adaptive Sharing), eq. 12 -------------------------------------
// Omega_eps(C) = min_Q 1/(2 eps) ||Q - C||_F^2 + lam ||Q||_* (eq. 11) is the Moreau
// envelope of lam ||.||_* with parameter eps, so its gradient is (C - Q*) / eps with
// Q* = prox_{eps lam ||.||_*}(C) = svt(C, eps * lam). The paper prints lam (C - Q*),
// which is eps * lam times the true gradient (equal only when eps * lam = 1). Per
// singular value the envelope is the Huber function h(s) = s^2 / (2 eps) for s <= eps
// lam, lam (s - eps lam / 2) above, and its gradient is U diag(min(s, eps lam)) V^T / eps.
#include "ops/nuclear.h"

#include <cmath>
#include <limits>
#include <vector>

#include "common/checks.h"

namespace mtlkernels {

TORCH_LIBRARY_FRAGMENT(mtlkernels, m) {
  m.def("svt(Tensor x, Tensor tau) -> Tensor");
  m.def("nuclear_norm(Tensor x) -> Tensor");
  m.def("smoothed_nuclear_norm(Tensor x, float lam, float eps) -> Tensor");
  m.def("smoothed_nuclear_norm_grad(Tensor x, float lam, float eps) -> Tensor");
  m.def("_spectral_route(Tensor x, Tensor tau, int kind) -> Tensor");
}

namespace {

constexpr double kAcceptFactor = 16.0;

double dtype_eps(at::ScalarType s) {
  return s == at::kFloat ? double(std::numeric_limits<float>::epsilon()) : std::numeric_limits<double>::epsilon();
}

double dtype_realmin(at::ScalarType s) {
  return s == at::kFloat ? double(std::numeric_limits<float>::min()) : std::numeric_limits<double>::min();
}

struct Runner {
  SymEigKernel eig;
  SmallSpectralKernel small;
  SpectralLimits lim;
};

// ---- validation ------------------------------------------------------------------

void check_matrix_batch(const char* op, const at::Tensor& x) {
  check_floating(op, x, "x");
  TORCH_CHECK(x.dim() >= 2, op, ": x must be a matrix or a batch of matrices of shape (..., m, n), got shape ",
              x.sizes());
}

int64_t batch_numel(const at::Tensor& x) {
  int64_t b = 1;
  for (int64_t d = 0; d < x.dim() - 2; ++d) b *= x.size(d);
  return b;
}

// One float64 threshold per matrix, on x's device, from a 0-dim tensor (a number)
// or a tensor broadcastable to the batch shape x.shape[:-2].
at::Tensor per_matrix_threshold(const char* op, const at::Tensor& tau, const at::Tensor& x, const char* name) {
  TORCH_CHECK(tau.defined(), op, ": ", name, " is undefined");
  TORCH_CHECK(at::isFloatingType(tau.scalar_type()) || at::isIntegralType(tau.scalar_type(), false), op, ": ",
              name, " must be a real-valued tensor, got ", tau.scalar_type());
  const auto batch = x.sizes().slice(0, x.dim() - 2);
  const int64_t B = batch_numel(x);
  if (tau.dim() == 0) {
    TORCH_CHECK(tau.device().is_cpu() || tau.device() == x.device(), op, ": ", name, " is on ", tau.device(),
                " but x is on ", x.device());
    const double v = tau.item<double>();
    TORCH_CHECK(v >= 0, op, ": ", name, " must be non-negative (and not NaN), got ", v);
    return at::full({B}, v, x.options().dtype(at::kDouble));
  }
  TORCH_CHECK(tau.device() == x.device(), op, ": ", name, " is on ", tau.device(), " but x is on ", x.device(),
              " (only a 0-dim CPU scalar tensor may stay on the CPU)");
  const auto ts = tau.sizes();
  bool ok = tau.dim() <= static_cast<int64_t>(batch.size());
  for (int64_t i = 1; ok && i <= tau.dim(); ++i) {
    const int64_t tb = ts[tau.dim() - i], xb = batch[batch.size() - i];
    ok = tb == 1 || tb == xb;
  }
  TORCH_CHECK(ok, op, ": ", name, " of shape ", ts, " does not match the batch shape ", batch, " of x (shape ",
              x.sizes(), "); pass a number or one value per matrix (a tensor broadcastable to the batch shape)");
  check_nonneg_tensor(op, tau, name);
  return tau.to(at::kDouble).expand(batch).reshape({B}).contiguous();
}

void fill_route(at::Tensor* route, Route r) {
  if (route) route->fill_(static_cast<int64_t>(r));
}

// ---- spectral formulas (on (b, k) singular values; t is (b, 1)) --------------------

// g(s): the new singular values of a matrix kind (exact route).
at::Tensor apply_g(const at::Tensor& s, const at::Tensor& t, const SpectralArgs& a) {
  if (a.kind == Spectral::Shrink) return (s - t).clamp_min(0);
  return at::minimum(s, t) * a.scale;  // Complement
}

// f(s) = g(s) / s with its limit at s = 0 (Gram route: out = x V diag(f) V^T).
at::Tensor gram_filter(const at::Tensor& s, const at::Tensor& t, const SpectralArgs& a) {
  const at::Tensor t0 = t == 0;
  if (a.kind == Spectral::Shrink) {
    // s > t: 1 - t / s; s <= t: 0; t == 0: 1 (identity, also on a zero s).
    at::Tensor f = at::where(s > t, 1 - t / s, at::zeros({}, s.options()));
    return at::where(t0, at::ones({}, s.options()), f);
  }
  // Complement: min(s, t) / s = t / s above t, 1 below (also as s -> 0 with t > 0), 0 when t == 0.
  at::Tensor f = at::where(s > t, t / s, at::ones({}, s.options()));
  return at::where(t0, at::zeros({}, s.options()), f) * a.scale;
}

// The value of a value kind; w (the Gram eigenvalues) gives s^2 without a square root
// when defined.
at::Tensor value_of(const at::Tensor& s, const at::Tensor& w, const at::Tensor& t, const SpectralArgs& a) {
  if (a.kind == Spectral::Nuclear) return s.sum(-1);
  at::Tensor sq = w.defined() ? w.clamp_min(0) : s * s;
  at::Tensor h = at::where(s <= t, sq / (2 * a.eps), a.lam * (s - t * 0.5));
  return h.sum(-1);
}

// The rule (see the top of this file): which matrices the Gram route in precision
// eps_c gets right, from their computed singular values s (b, k), in float64.
at::Tensor gram_accept(const at::Tensor& s, const at::Tensor& t, Spectral kind, double eps_c, double eps_out) {
  at::Tensor smax = s.amax(-1, /*keepdim=*/true);
  at::Tensor delta = eps_c * smax * smax / at::maximum(s, smax * std::sqrt(eps_c));
  delta = at::where(smax > 0, delta, at::zeros({}, s.options()));
  at::Tensor e;
  switch (kind) {
    case Spectral::Shrink:
    case Spectral::Complement:
      e = at::where(s > t, t / s * delta, (s + delta - t).clamp_min(0));
      break;
    case Spectral::Nuclear:
      e = delta;
      break;
    case Spectral::Smoothed:
      e = at::minimum(s / t, at::ones({}, s.options())) * delta;
      break;
  }
  at::Tensor bound = kAcceptFactor * eps_out * smax;
  if (kind == Spectral::Complement) {
    // The exact route is more accurate here when every s_i > t: U diag(min(s, t)) V^T
    // = t U V^T then moves by about eps_out s_max t / s_min, not eps_out s_max.
    const at::Tensor smin = s.amin(-1, /*keepdim=*/true);
    bound = bound * at::where(smin > t, t / smin, at::ones({}, s.options()));
  }
  const at::Tensor agg = spectral_is_matrix(kind) ? e.square().mean(-1).sqrt() : e.mean(-1);
  at::Tensor ok = agg <= bound.squeeze(-1);
  if (kind != Spectral::Nuclear) ok = ok | (t.squeeze(-1) == 0);
  return ok;
}

struct TierResult {
  at::Tensor ok;   // (b,) bool: accepted by the rule
  at::Tensor res;  // (b, m, n) or (b,) in x's dtype, for every matrix (only accepted ones are used)
};

// One tier of the Gram route, the Gram matrix in precision c.
TierResult gram_tier(const Runner& r, const at::Tensor& xs, const at::Tensor& ts, const SpectralArgs& a,
                     at::ScalarType c) {
  const bool matrix = spectral_is_matrix(a.kind);
  const bool wide = xs.size(1) < xs.size(2);  // Gram of the rows: x x^T
  const at::Tensor xc = xs.scalar_type() == c ? xs : xs.to(c);
  at::Tensor G = wide ? at::matmul(xc, xc.mT()) : at::matmul(xc.mT(), xc);
  // G is finite iff its diagonal (sums of squares) is: |G_ij| <= sqrt(G_ii G_jj), and the
  // same bound holds for every partial sum of the GEMM. A quarter of the largest float
  // leaves room for rounding. Non-finite matrices are zeroed for the eigensolver and
  // rejected.
  const at::Tensor diag = G.diagonal(0, -2, -1);
  const double big = (c == at::kFloat ? double(std::numeric_limits<float>::max())
                                      : std::numeric_limits<double>::max()) / 4;
  const at::Tensor gfin = at::isfinite(diag).all(-1) & (diag.amax(-1) < big);
  G = at::where(gfin.view({-1, 1, 1}), G, at::zeros({}, G.options())).contiguous();  // no host sync

  auto [w, V] = r.eig(G, matrix);
  const double eps_c0 = dtype_eps(c), eps_out0 = dtype_eps(xs.scalar_type());
  if (use_scalar_rule(xs)) {  // small CPU batches: the same arithmetic in scalar loops (nuclear_rule.cpp)
    const ScalarRule sr = gram_rule_scalar(w, ts, gfin, xs, a, eps_c0, eps_out0, dtype_realmin(c));
    if (!matrix) return {sr.ok, sr.values.to(xs.scalar_type())};
    const at::Tensor M = at::matmul(V * sr.values.to(V.scalar_type()).unsqueeze(-2), V.mT()).to(c);
    at::Tensor res = wide ? at::matmul(M, xc) : at::matmul(xc, M);
    if (res.scalar_type() != xs.scalar_type()) res = res.to(xs.scalar_type());
    return {sr.ok, res};
  }
  const at::Tensor wd = w.to(at::kDouble);
  const at::Tensor sd = wd.clamp_min(0).sqrt();
  const at::Tensor td = ts.unsqueeze(-1);
  const double eps_c = dtype_eps(c), eps_out = dtype_eps(xs.scalar_type());
  at::Tensor ok = gram_accept(sd, td, a.kind, eps_c, eps_out) & gfin;
  // Underflow: below sqrt(realmin / eps_c), s_max^2 has lost digits to gradual
  // underflow; accept such a matrix only when it is exactly zero.
  // (One read of xs, small next to the eigensolver, instead of a host sync to skip it.)
  const at::Tensor tiny = sd.amax(-1) < std::sqrt(dtype_realmin(c) / eps_c);
  const at::Tensor zero = xs.abs().flatten(1).amax(1) == 0;
  ok = ok & (tiny.logical_not() | zero);

  at::Tensor res;
  if (matrix) {
    const at::Tensor s = sd.to(w.scalar_type());
    const at::Tensor f = gram_filter(s, ts.to(w.scalar_type()).unsqueeze(-1), a);
    const at::Tensor M = at::matmul(V * f.unsqueeze(-2), V.mT()).to(c);
    res = wide ? at::matmul(M, xc) : at::matmul(xc, M);
    if (res.scalar_type() != xs.scalar_type()) res = res.to(xs.scalar_type());
  } else {
    res = value_of(sd, wd, td, a).to(xs.scalar_type());
  }
  return {ok, res};
}

// The exact route: LAPACK / cuSOLVER SVD. Matrices with NaN or inf give NaN.
// On CUDA the SVD is cuSOLVER's QR-based gesvd in float64: the default Jacobi driver
// (gesvdj) was measured on an H200 at 2.4e-4 relative error for a float32 (600, 520)
// svt and 4.9e-12 in float64, where LAPACK gives 1.9e-6 and 5e-16; this route is the
// one taken for the hard (ill-conditioned, near-threshold) cases, so it must be exact.
at::Tensor exact_route(const at::Tensor& xs, const at::Tensor& ts, const SpectralArgs& a) {
  const bool cuda = xs.is_cuda();
  const at::Tensor fin = at::isfinite(xs).flatten(1).all(1);
  at::Tensor xf = at::where(fin.view({-1, 1, 1}), xs, at::zeros({}, xs.options()));
  if (cuda) xf = xf.to(at::kDouble);
  const std::optional<c10::string_view> driver =
      cuda ? std::optional<c10::string_view>("gesvd") : std::nullopt;
  const at::Tensor t = ts.to(xf.scalar_type()).unsqueeze(-1);
  const double nan = std::numeric_limits<double>::quiet_NaN();
  if (spectral_is_matrix(a.kind)) {
    auto [U, S, Vh] = at::linalg_svd(xf, /*full_matrices=*/false, driver);
    at::Tensor res = at::matmul(U * apply_g(S, t, a).unsqueeze(-2), Vh).to(xs.scalar_type());
    return at::where(fin.view({-1, 1, 1}), res, at::full({}, nan, res.options()));
  }
  const at::Tensor S = at::linalg_svdvals(xf, driver);
  const at::Tensor res = value_of(S, at::Tensor(), t, a).to(xs.scalar_type());
  return at::where(fin, res, at::full({}, nan, res.options()));
}

// Runs one spectral op on a contiguous batch x3 (B, m, n): small -> gram tiers -> exact.
at::Tensor run_spectral(const Runner& r, const at::Tensor& x3, const SpectralArgs& a, at::Tensor* route) {
  at::NoTF32Guard no_tf32;  // the GEMMs of the Gram route run in full float32
  const int64_t B = x3.size(0), m = x3.size(1), n = x3.size(2), k = std::min(m, n);
  const bool matrix = spectral_is_matrix(a.kind);
  at::Tensor out = matrix ? at::empty({B, m, n}, x3.options()) : at::empty({B}, x3.options());
  if (route) *route = at::empty({B}, x3.options().dtype(at::kLong));
  if (B == 0) return out;
  if (k == 0) {
    out.zero_();  // an empty matrix: svt is empty, its norms are 0
    fill_route(route, Route::Empty);
    return out;
  }
  if (r.small != nullptr && r.small(x3, a, out)) {
    fill_route(route, Route::Small);
    return out;
  }

  at::Tensor todo;  // indices of the matrices not done yet; undefined: all of them
  if (k <= r.lim.max_gram_k) {
    std::vector<std::pair<at::ScalarType, Route>> tiers{{x3.scalar_type(), Route::GramSame}};
    if (x3.scalar_type() == at::kFloat) tiers.emplace_back(at::kDouble, Route::GramDouble);
    for (const auto& [c, code] : tiers) {
      const at::Tensor xs = todo.defined() ? x3.index_select(0, todo) : x3;
      const at::Tensor ts = todo.defined() ? a.t.index_select(0, todo) : a.t;
      const TierResult tr = gram_tier(r, xs, ts, a, c);
      // The tier's one host synchronisation: which matrices the rule accepted.
      const at::Tensor ok = tr.ok.to(at::kCPU).contiguous();
      const bool* okp = ok.data_ptr<bool>();
      int64_t n_acc = 0;
      for (int64_t i = 0; i < ok.numel(); ++i) n_acc += okp[i];
      const int64_t n_rej = ok.numel() - n_acc;
      if (!todo.defined() && n_rej == 0) {
        fill_route(route, code);
        return tr.res;
      }
      // Indices on the device without another sync: the counts are known.
      const at::Tensor acc = at::nonzero_static(tr.ok, n_acc).squeeze(1);
      const at::Tensor rej = at::nonzero_static(tr.ok.logical_not(), n_rej).squeeze(1);
      if (acc.numel() > 0) {
        const at::Tensor dst = todo.defined() ? todo.index_select(0, acc) : acc;
        out.index_copy_(0, dst, tr.res.index_select(0, acc));
        if (route) route->index_fill_(0, dst, static_cast<int64_t>(code));
      }
      todo = todo.defined() ? todo.index_select(0, rej) : rej;
      if (todo.numel() == 0) return out;
    }
  }

  const at::Tensor xs = todo.defined() ? x3.index_select(0, todo) : x3;
  const at::Tensor ts = todo.defined() ? a.t.index_select(0, todo) : a.t;
  const at::Tensor res = exact_route(xs, ts, a);
  if (!todo.defined()) {
    fill_route(route, Route::Exact);
    return res;
  }
  out.index_copy_(0, todo, res);
  if (route) route->index_fill_(0, todo, static_cast<int64_t>(Route::Exact));
  return out;
}

at::Tensor as_batch3(const at::Tensor& x) {
  return x.reshape({batch_numel(x), x.size(-2), x.size(-1)}).contiguous();
}

at::Tensor run_op(const Runner& r, const at::Tensor& x, const SpectralArgs& a, at::Tensor* route = nullptr) {
  at::Tensor out = run_spectral(r, as_batch3(x), a, route);
  if (spectral_is_matrix(a.kind)) return out.view(x.sizes());
  return out.view(x.sizes().slice(0, x.dim() - 2));
}

void check_smoothing(const char* op, double lam, double eps) {
  check_nonneg_scalar(op, lam, "lam");
  TORCH_CHECK(std::isfinite(eps) && eps > 0, op, ": eps must be finite and positive, got ", eps);
  TORCH_CHECK(std::isfinite(1.0 / eps), op, ": eps = ", eps, " is too small (1 / eps overflows float64)");
}

// The hyper-parameters are applied in double precision; a float32 x whose eps, 1 / eps or
// eps * lam fall outside float32's normal range is computed in float64 (the Gram route
// and the exact route form some of them in x's dtype) and the result rounded to float32.
bool smoothing_needs_double(const at::Tensor& x, double lam, double eps) {
  if (x.scalar_type() != at::kFloat) return false;
  const double lo = std::numeric_limits<float>::min(), hi = std::numeric_limits<float>::max();
  const double t = eps * lam;
  return eps < lo || eps > hi || 1.0 / eps > hi || t > hi || (t > 0 && t < lo);
}

SpectralArgs smoothing_args(const at::Tensor& x, Spectral kind, double lam, double eps) {
  SpectralArgs a;
  a.kind = kind;
  a.lam = lam;
  a.eps = eps;
  a.scale = 1.0 / eps;
  a.t = at::full({batch_numel(x)}, eps * lam, x.options().dtype(at::kDouble));
  return a;
}

}  // namespace

at::Tensor svt_entry(SymEigKernel e, SmallSpectralKernel s, SpectralLimits lim, const at::Tensor& x,
                     const at::Tensor& tau) {
  check_matrix_batch("svt", x);
  SpectralArgs a;
  a.kind = Spectral::Shrink;
  a.t = per_matrix_threshold("svt", tau, x, "tau");
  return run_op({e, s, lim}, x, a);
}

at::Tensor nuclear_norm_entry(SymEigKernel e, SmallSpectralKernel s, SpectralLimits lim, const at::Tensor& x) {
  check_matrix_batch("nuclear_norm", x);
  SpectralArgs a;
  a.kind = Spectral::Nuclear;
  a.t = at::zeros({batch_numel(x)}, x.options().dtype(at::kDouble));
  return run_op({e, s, lim}, x, a);
}

at::Tensor smoothed_nuclear_norm_entry(SymEigKernel e, SmallSpectralKernel s, SpectralLimits lim,
                                       const at::Tensor& x, double lam, double eps) {
  check_matrix_batch("smoothed_nuclear_norm", x);
  check_smoothing("smoothed_nuclear_norm", lam, eps);
  if (smoothing_needs_double(x, lam, eps))
    return smoothed_nuclear_norm_entry(e, s, lim, x.to(at::kDouble), lam, eps).to(at::kFloat);
  return run_op({e, s, lim}, x, smoothing_args(x, Spectral::Smoothed, lam, eps));
}

at::Tensor smoothed_nuclear_norm_grad_entry(SymEigKernel e, SmallSpectralKernel s, SpectralLimits lim,
                                            const at::Tensor& x, double lam, double eps) {
  check_matrix_batch("smoothed_nuclear_norm_grad", x);
  check_smoothing("smoothed_nuclear_norm_grad", lam, eps);
  if (smoothing_needs_double(x, lam, eps))
    return smoothed_nuclear_norm_grad_entry(e, s, lim, x.to(at::kDouble), lam, eps).to(at::kFloat);
  return run_op({e, s, lim}, x, smoothing_args(x, Spectral::Complement, lam, eps));
}

at::Tensor spectral_route_entry(SymEigKernel e, SmallSpectralKernel s, SpectralLimits lim, const at::Tensor& x,
                                const at::Tensor& tau, int64_t kind) {
  const char* op = "_spectral_route";
  check_matrix_batch(op, x);
  TORCH_CHECK(kind >= 0 && kind <= 3, op, ": kind must be 0 (svt), 1 (smoothed gradient), 2 (nuclear norm) or ",
              "3 (smoothed value), got ", kind);
  SpectralArgs a;
  a.kind = static_cast<Spectral>(kind);
  a.t = per_matrix_threshold(op, tau, x, "tau");
  // The smoothed kinds take tau as t = eps * lam; eps = 1 gives lam = t.
  a.eps = 1.0;
  a.lam = 1.0;
  a.scale = 1.0;
  at::Tensor route;
  run_spectral({e, s, lim}, as_batch3(x), a, &route);
  return route.view(x.sizes().slice(0, x.dim() - 2));
}

}  // namespace mtlkernels
