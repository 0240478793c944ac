// Nuclear-norm family: singular value soft-thresholding (svt, the prox of
// tau * ||X||_*), the batched nuclear norm, and the smoothed nuclear norm (the
// Moreau envelope of lam * ||X||_*) with its gradient. Shen et al. 2015
// (Adaptive Sharing): the prox in eq. 9, Omega_eps in eq. 11, its gradient (eq. 12, see
// nuclear.cpp for the corrected formula).
//
// Every op is a spectral function of each matrix x_b of a batch (B, m, n):
// with x_b = U diag(s) V^T (thin SVD, k = min(m, n) singular values) it either
// rebuilds a matrix U diag(g(s)) V^T or sums a function of s. nuclear.cpp holds
// the schemas, validation and the routing between three routes:
//
//   small   a device kernel that does everything for one matrix in one place
//           (CUDA: one-sided Jacobi SVD per thread block, fused thresholding and
//           reconstruction); exact. Optional per device.
//   gram    G = x^T x (or x x^T) of size k x k by a batched GEMM, a device
//           symmetric eigensolver G = V diag(w) V^T, s = sqrt(w), then one more
//           GEMM: out = x V diag(g(s) / s) V^T. Accurate only where the
//           a-posteriori rule in nuclear.cpp accepts it (Gram squares the
//           condition number); matrices it rejects go to the next tier.
//   exact   at::linalg_svd / at::linalg_svdvals (LAPACK / cuSOLVER).
#pragma once

#include <ATen/ATen.h>
#include <torch/library.h>

namespace mtlkernels {

// What a spectral op computes from the singular values s of each matrix, with t
// the matrix's threshold (t_b >= 0).
enum class Spectral : int64_t {
  Shrink = 0,      // matrix: U diag(max(s - t, 0)) V^T                      (svt)
  Complement = 1,  // matrix: scale * U diag(min(s, t)) V^T = scale * (x - svt(x, t))
  Nuclear = 2,     // value:  sum_i s_i                                      (t unused)
  Smoothed = 3,    // value:  sum_i h(s_i), h(s) = s^2 / (2 eps) if s <= t,
                   //                            lam * (s - t / 2) otherwise (t = eps * lam)
};

inline bool spectral_is_matrix(Spectral k) { return k == Spectral::Shrink || k == Spectral::Complement; }

struct SpectralArgs {
  Spectral kind = Spectral::Shrink;
  at::Tensor t;        // (B,) float64 on x's device: one threshold per matrix
  double scale = 1.0;  // Complement: the factor in front (1 / eps for the gradient)
  double lam = 0.0;    // Smoothed
  double eps = 1.0;    // Smoothed
};

// Route codes reported by the diagnostic op _spectral_route (one per matrix).
enum class Route : int64_t {
  Empty = -1,     // a matrix with no entries (m or n is 0): nothing to compute
  Small = 0,      // device fused small-matrix kernel (exact)
  GramSame = 1,   // Gram route, Gram matrix in x's dtype
  GramDouble = 2, // Gram route, Gram matrix in float64 (float32 input only)
  Exact = 3,      // at::linalg_svd / svdvals (also every matrix holding NaN or inf)
};

// Batched symmetric eigensolver: G (b, k, k) contiguous, symmetric (up to
// rounding), float32 or float64, every entry finite. Returns the eigenvalues w
// (b, k) (any order) and, when want_vectors, V (b, k, k) with orthonormal
// eigenvectors in its columns (G = V diag(w) V^T). The kernel chooses the dtype
// it returns (at least G's precision).
using SymEigKernel = std::tuple<at::Tensor, at::Tensor> (*)(const at::Tensor& G, bool want_vectors);

// Fused exact kernel for small matrices: x (B, m, n) contiguous, out preallocated
// ((B, m, n) for matrix kinds, (B,) for values, x's dtype). Returns false, having
// done nothing, when it does not handle this shape / dtype.
using SmallSpectralKernel = bool (*)(const at::Tensor& x, const SpectralArgs& a, at::Tensor& out);

// Per-device routing limits.
struct SpectralLimits {
  int64_t max_gram_k;  // the Gram route is tried only for k = min(m, n) <= max_gram_k
};
using MaxGramKFn = int64_t (*)();

// ---- the Gram route's per-matrix arithmetic in scalar loops (nuclear_rule.cpp) ----
// For small batches on the CPU: the accuracy rule, the filter g(s) / s (matrix kinds, in
// values (b, k)) or the value (value kinds, in values (b,)), all in float64, from the Gram
// eigenvalues w (b, k), the thresholds (b,), G's finiteness (b,) and x (for the underflow
// test). Same results as the batched form in nuclear.cpp.
struct ScalarRule {
  at::Tensor ok;      // (b,) bool
  at::Tensor values;  // (b, k) filter or (b,) value, float64
};
bool use_scalar_rule(const at::Tensor& xs);
ScalarRule gram_rule_scalar(const at::Tensor& w, const at::Tensor& ts, const at::Tensor& gfin, const at::Tensor& xs,
                            const SpectralArgs& a, double eps_c, double eps_out, double realmin_c);

// ---- entry points (nuclear.cpp) -----------------------------------------------
at::Tensor svt_entry(SymEigKernel e, SmallSpectralKernel s, SpectralLimits lim, const at::Tensor& x,
                     const at::Tensor& tau);
at::Tensor nuclear_norm_entry(SymEigKernel e, SmallSpectralKernel s, SpectralLimits lim, const at::Tensor& x);
at::Tensor smoothed_nuclear_norm_entry(SymEigKernel e, SmallSpectralKernel s, SpectralLimits lim,
                                       const at::Tensor& x, double lam, double eps);
at::Tensor smoothed_nuclear_norm_grad_entry(SymEigKernel e, SmallSpectralKernel s, SpectralLimits lim,
                                            const at::Tensor& x, double lam, double eps);
at::Tensor spectral_route_entry(SymEigKernel e, SmallSpectralKernel s, SpectralLimits lim, const at::Tensor& x,
                                const at::Tensor& tau, int64_t kind);

// Registers every nuclear-family op for one dispatch key, given its kernels.
template <SymEigKernel E, SmallSpectralKernel S, MaxGramKFn L>
void register_nuclear(torch::Library& m) {
  m.impl("svt", [](const at::Tensor& x, const at::Tensor& tau) {
    return svt_entry(E, S, SpectralLimits{L()}, x, tau);
  });
  m.impl("nuclear_norm", [](const at::Tensor& x) { return nuclear_norm_entry(E, S, SpectralLimits{L()}, x); });
  m.impl("smoothed_nuclear_norm", [](const at::Tensor& x, double lam, double eps) {
    return smoothed_nuclear_norm_entry(E, S, SpectralLimits{L()}, x, lam, eps);
  });
  m.impl("smoothed_nuclear_norm_grad", [](const at::Tensor& x, double lam, double eps) {
    return smoothed_nuclear_norm_grad_entry(E, S, SpectralLimits{L()}, x, lam, eps);
  });
  m.impl("_spectral_route", [](const at::Tensor& x, const at::Tensor& tau, int64_t kind) {
    return spectral_route_entry(E, S, SpectralLimits{L()}, x, tau, kind);
  });
}

}  // namespace mtlkernels
