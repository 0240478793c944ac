// Joint-IRLS family (Zhang et al. 2019): schemas and device-independent entry points.
// Kernels: csrc/ops/cpu/irls_kernel.cpp, csrc/ops/cuda/irls_kernel.cu.
// Python bridge: mtlkernels/ops/irls.py. Reference: mtlkernels/reference/irls.py.
#include "ops/irls.h"

#include <string>
#include <vector>

#include "common/checks.h"

namespace mtlkernels {

TORCH_LIBRARY_FRAGMENT(mtlkernels, m) {
  m.def("pairwise_sq_dists(Tensor params, int[] offsets, bool fp64_accumulate=False) -> Tensor");
  m.def("pairwise_mix(Tensor params, int[] offsets, Tensor coeffs, bool transpose=False) -> Tensor");
  m.def("irls_weights(Tensor sq_dists, Tensor sigma) -> (Tensor, Tensor)");
  m.def("robust_consistency(Tensor params, int[] offsets, Tensor? sigma, Tensor? weights) -> (Tensor, Tensor)");
  m.def("irls_consensus(Tensor weights, Tensor params, int[] offsets, bool transpose=False) -> Tensor");
}

LayerChunks make_layer_chunks(const std::vector<int64_t>& offsets, int64_t max_cols, int64_t align) {
  max_cols = std::max<int64_t>(align, (max_cols + align - 1) / align * align);
  LayerChunks c;
  const int64_t L = static_cast<int64_t>(offsets.size()) - 1;
  c.first.reserve(L + 1);
  for (int64_t l = 0; l < L; ++l) {
    c.first.push_back(c.size());
    for (int64_t b = offsets[l]; b < offsets[l + 1]; b += max_cols) {
      c.layer.push_back(l);
      c.begin.push_back(b);
      c.end.push_back(std::min(offsets[l + 1], b + max_cols));
    }
  }
  c.first.push_back(c.size());
  return c;
}

namespace {

// Validated layer layout of an (n, P) parameter matrix.
struct Layout {
  at::Tensor x;                  // params with unit column stride (a view when possible)
  std::vector<int64_t> offsets;  // L + 1 entries, 0 .. P, strictly increasing
  int64_t n = 0, P = 0, L = 0;
};

Layout check_layout(const char* op, const at::Tensor& params, at::IntArrayRef offsets) {
  check_floating(op, params, "params");
  TORCH_CHECK(params.dim() == 2, op,
              ": params must be a 2-D (networks, parameters) matrix, one row per network, got shape ",
              params.sizes());
  Layout lay;
  lay.n = params.size(0);
  lay.P = params.size(1);
  TORCH_CHECK(offsets.size() >= 2, op,
              ": offsets must list the layer boundaries 0 = o_0 < o_1 < ... < o_L = P (at least 2 entries), got ",
              offsets.size(), " entr", offsets.size() == 1 ? "y" : "ies");
  TORCH_CHECK(offsets[0] == 0, op, ": offsets must start at 0, got offsets[0] = ", offsets[0]);
  TORCH_CHECK(offsets.back() == lay.P, op, ": offsets must end at the number of parameters P = ", lay.P,
              " (params.size(1)), got offsets[-1] = ", offsets.back());
  for (size_t l = 0; l + 1 < offsets.size(); ++l) {
    TORCH_CHECK(offsets[l + 1] != offsets[l], op, ": layer ", l, " is empty (offsets[", l, "] = offsets[", l + 1,
                "] = ", offsets[l], "); every layer needs at least one parameter");
    TORCH_CHECK(offsets[l + 1] > offsets[l], op, ": offsets must be increasing, got offsets[", l, "] = ", offsets[l],
                " > offsets[", l + 1, "] = ", offsets[l + 1]);
  }
  lay.offsets.assign(offsets.begin(), offsets.end());
  lay.L = static_cast<int64_t>(offsets.size()) - 1;
  // Kernels read row i at x.data + i * x.stride(0) with unit column stride.
  lay.x = (params.stride(1) == 1 || lay.P <= 1) ? params : params.contiguous();
  return lay;
}

// An (L, n, n) tensor on params' device.
void check_lnn(const char* op, const at::Tensor& t, const char* name, int64_t L, int64_t n, const at::Tensor& params) {
  check_floating(op, t, name);
  check_same_device(op, params, "params", t, name);
  TORCH_CHECK(t.dim() == 3 && t.size(0) == L && t.size(1) == n && t.size(2) == n, op, ": ", name,
              " must have shape (L, n, n) = (", L, ", ", n, ", ", n, ") (layers, networks, networks), got ",
              t.sizes());
}

// sigma: a scalar (any 0-dim or 1-element tensor; a 0-dim CPU tensor may serve any
// device) or one value per layer pair; returns (L,) float64 on `device`.
at::Tensor check_sigma(const char* op, const at::Tensor& sigma, int64_t L, const at::Device& device) {
  TORCH_CHECK(sigma.defined(), op, ": sigma is undefined");
  TORCH_CHECK(at::isFloatingType(sigma.scalar_type()) || at::isIntegralType(sigma.scalar_type(), false), op,
              ": sigma must be a real-valued tensor, got ", sigma.scalar_type());
  TORCH_CHECK((sigma.dim() == 0 && sigma.device().is_cpu()) || sigma.device() == device, op, ": sigma is on ",
              sigma.device(), " but the distances are on ", device, " (only a 0-dim CPU scalar may stay on the CPU)");
  TORCH_CHECK(sigma.numel() == 1 || (sigma.dim() == 1 && sigma.size(0) == L), op,
              ": sigma must be a scalar or hold one value per layer pair (shape (", L, ",)), got shape ",
              sigma.sizes());
  check_nonneg_tensor(op, sigma, "sigma");
  return sigma.to(device, at::kDouble).reshape({-1}).expand({L}).contiguous();
}

// Pair-level (L, n, n) coefficients -> per-layer coefficients: layer l belongs to
// pair l and (for l >= 1) to pair l - 1, the adjoint of the pairing of irls.h.
at::Tensor pairs_to_layers(const at::Tensor& g) {
  at::Tensor s = g.clone();
  const int64_t L = g.size(0);
  if (L > 1) s.narrow(0, 1, L - 1).add_(g.narrow(0, 0, L - 1));
  return s;
}

// Run the mix kernel with off-diagonal coefficients `off` (L, n, n) and self
// coefficients `self` (L, n), both float64 on params' device, or with the adjoint
// map when `transpose` (see pairwise_mix in mtlkernels/ops/irls.py).
at::Tensor run_mix(const IrlsKernels& k, const Layout& lay, at::Tensor off, at::Tensor self, bool transpose) {
  off = off.clone();
  off.diagonal(0, 1, 2).zero_();
  if (transpose) {
    // A = off + diag(self - rowsum(off)); A^T in the same form has off^T and
    // self' = rowsum(A^T) = colsum(A) = self - rowsum(off) + colsum(off).
    self = self - off.sum(2) + off.sum(1);
    off = off.transpose(1, 2);
  }
  const auto dtype = lay.x.scalar_type();
  at::Tensor offc = off.to(dtype).contiguous();
  at::Tensor selfc = self.to(dtype).contiguous();
  at::Tensor out = at::empty({lay.n, lay.P}, lay.x.options().memory_format(at::MemoryFormat::Contiguous));
  if (lay.n > 0) k.mix(lay.x, lay.offsets, offc, selfc, out);
  return out;
}

// Finite and non-negative (one read-back on CUDA).
void check_weights_values(const char* op, const at::Tensor& w, const char* name) {
  if (w.numel() == 0) return;
  TORCH_CHECK(((w >= 0) & at::isfinite(w)).all().item<bool>(), op, ": ", name,
              " must be finite and non-negative everywhere");
}

}  // namespace

at::Tensor pairwise_sq_dists_entry(const IrlsKernels& k, const at::Tensor& params, at::IntArrayRef offsets,
                                   bool fp64_accumulate) {
  const Layout lay = check_layout("pairwise_sq_dists", params, offsets);
  at::Tensor out = at::zeros({lay.L, lay.n, lay.n}, params.options());
  if (lay.n >= 2) k.sq_dists(lay.x, lay.offsets, fp64_accumulate, out);
  return out;
}

at::Tensor pairwise_mix_entry(const IrlsKernels& k, const at::Tensor& params, at::IntArrayRef offsets,
                              const at::Tensor& coeffs, bool transpose) {
  const char* op = "pairwise_mix";
  const Layout lay = check_layout(op, params, offsets);
  check_lnn(op, coeffs, "coeffs", lay.L, lay.n, params);
  at::Tensor c = coeffs.to(at::kDouble);  // run_mix copies before it modifies
  return run_mix(k, lay, c, c.diagonal(0, 1, 2).clone(), transpose);
}

std::tuple<at::Tensor, at::Tensor> irls_weights_entry(const IrlsKernels& k, const at::Tensor& sq_dists,
                                                      const at::Tensor& sigma) {
  const char* op = "irls_weights";
  check_floating(op, sq_dists, "sq_dists");
  TORCH_CHECK(sq_dists.dim() == 3 && sq_dists.size(1) == sq_dists.size(2), op,
              ": sq_dists must be an (L, n, n) stack of per-layer squared distance matrices, got shape ",
              sq_dists.sizes());
  check_nonneg_tensor(op, sq_dists, "sq_dists");
  const int64_t L = sq_dists.size(0);
  at::Tensor s = check_sigma(op, sigma, L, sq_dists.device());
  at::Tensor D = sq_dists.contiguous();
  at::Tensor w = at::empty(D.sizes(), D.options());
  at::Tensor rho = at::empty(D.sizes(), D.options());
  at::Tensor none;
  if (D.numel() > 0) k.pair(D, s, at::Tensor(), w, rho, none);
  return {w, rho};
}

std::tuple<at::Tensor, at::Tensor> robust_consistency_entry(const IrlsKernels& k, const at::Tensor& params,
                                                            at::IntArrayRef offsets,
                                                            const std::optional<at::Tensor>& sigma,
                                                            const std::optional<at::Tensor>& weights) {
  const char* op = "robust_consistency";
  const Layout lay = check_layout(op, params, offsets);
  const bool has_sigma = sigma.has_value() && sigma->defined();
  const bool has_weights = weights.has_value() && weights->defined();
  TORCH_CHECK(has_sigma != has_weights, op,
              ": pass exactly one of sigma (the robust loss of eq. 3) or weights (the weighted least squares of "
              "eq. 8), got ", has_sigma ? "both" : "neither");
  at::Tensor D = at::zeros({lay.L, lay.n, lay.n}, params.options());
  if (lay.n >= 2) k.sq_dists(lay.x, lay.offsets, false, D);
  D = D.to(at::kDouble);
  at::Tensor rho = at::empty(D.sizes(), D.options());
  at::Tensor dphi = at::empty(D.sizes(), D.options());
  at::Tensor none;
  if (has_sigma) {
    at::Tensor s = check_sigma(op, *sigma, lay.L, params.device());
    if (D.numel() > 0) k.pair(D, s, at::Tensor(), none, rho, dphi);
  } else {
    check_lnn(op, *weights, "weights", lay.L, lay.n, params);
    check_weights_values(op, *weights, "weights");
    at::Tensor wd = weights->to(at::kDouble).contiguous();
    if (D.numel() > 0) k.pair(D, at::Tensor(), wd, none, rho, dphi);
  }
  // loss = 1/2 sum_{i != j} rho_ij (= sum_{i<j} for symmetric rho; rho_ii = 0).
  at::Tensor loss = rho.sum().mul_(0.5);
  // d loss / d D_l[i, j] for the unordered pair {i, j}, per layer.
  at::Tensor g = (dphi + dphi.transpose(1, 2)).mul_(0.5);
  at::Tensor coeffs = pairs_to_layers(g);
  coeffs.diagonal(0, 1, 2).zero_();
  return {loss.to(params.scalar_type()), coeffs.to(params.scalar_type())};
}

at::Tensor irls_consensus_entry(const IrlsKernels& k, const at::Tensor& weights, const at::Tensor& params,
                                at::IntArrayRef offsets, bool transpose) {
  const char* op = "irls_consensus";
  const Layout lay = check_layout(op, params, offsets);
  check_lnn(op, weights, "weights", lay.L, lay.n, params);
  check_weights_values(op, weights, "weights");
  // Eq. 9: target_i = sum_{j != i} c_ij theta_j / sum_{j != i} c_ij, written as
  // theta_i + sum_{j != i} chat_ij (theta_j - theta_i); a row without weight keeps theta_i.
  at::Tensor c = weights.to(at::kDouble, /*non_blocking=*/false, /*copy=*/true);
  c.diagonal(0, 1, 2).zero_();
  at::Tensor rs = c.sum(2, /*keepdim=*/true);
  at::Tensor chat = at::where(rs > 0, c / at::where(rs > 0, rs, at::ones_like(rs)), at::zeros_like(c));
  at::Tensor self = at::ones({lay.L, lay.n}, c.options());
  return run_mix(k, lay, chat, self, transpose);
}

}  // namespace mtlkernels
