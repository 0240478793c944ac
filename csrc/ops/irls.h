// Joint-IRLS family (Zhang et al. 2019, "Joint learning of neural networks via iterative
// reweighted least squares"): per-layer pairwise squared distances between n
// networks, the robust weights and values of eqs. 3 and 7, the consistency loss
// (eqs. 3 / 8) and the block-coordinate consensus target of eq. 9.
//
// Layout shared by every op: `params` is an (n, P) matrix, row i network i's
// flattened parameters; `offsets` (L + 1 increasing ints, 0 .. P) cut the columns
// into L non-empty layers, layer l = columns [offsets[l], offsets[l+1]).
//
// Layer pairs (eq. 3 pairing, documented in mtlkernels/ops/irls.py): pair l joins
// layers l and l + 1 for l < L - 1; pair L - 1 is the last layer alone. The squared
// distance of pair l is D[l] + D[l+1] (D[L-1] for the last pair).
//
// The schemas and device-independent entry points live in irls.cpp; each device
// provides the kernels below and registers them with register_irls<...>().
#pragma once

#include <ATen/ATen.h>
#include <torch/library.h>

#include <vector>

namespace mtlkernels {

// Column ranges of at most `max_cols` columns that never straddle a layer. Chunks
// of layer l are [first[l], first[l + 1]); `max_cols` is rounded up to `align`.
struct LayerChunks {
  std::vector<int64_t> layer, begin, end;  // one entry per chunk
  std::vector<int64_t> first;              // L + 1 entries
  int64_t size() const { return static_cast<int64_t>(layer.size()); }
};
LayerChunks make_layer_chunks(const std::vector<int64_t>& offsets, int64_t max_cols, int64_t align);

// Index of the unordered pair (i, j), i < j, in row-major upper-triangle order.
inline int64_t pair_index(int64_t i, int64_t j, int64_t n) { return i * n - i * (i + 1) / 2 + (j - i - 1); }

// out (L, n, n), dtype of params, every entry written (zero diagonal):
//   out[l, i, j] = sum over columns c of layer l of (params[i, c] - params[j, c])^2.
// params: (n, P) with unit column stride (any row stride), n >= 2. fp64: accumulate
// float32 input entirely in float64 (otherwise in float32 over short blocks of
// columns and in float64 across blocks).
using PairwiseSqDistsKernel = void (*)(const at::Tensor& params, const std::vector<int64_t>& offsets, bool fp64,
                                       at::Tensor& out);

// out (n, P) contiguous, for every column c of layer l:
//   out[i, c] = self[l, i] * x_i[c] + sum_j coeffs[l, i, j] * (x_j[c] - x_i[c])
// params as above (n >= 1); coeffs (L, n, n) contiguous with a zero diagonal and
// self (L, n) contiguous, both of params' dtype and device.
using PairwiseMixKernel = void (*)(const at::Tensor& params, const std::vector<int64_t>& offsets,
                                   const at::Tensor& coeffs, const at::Tensor& self, at::Tensor& out);

// Elementwise over the layer pairs of per-layer squared distances D (L, n, n),
// contiguous, with d2 = the pair's squared distance (see above). Two modes:
//   robust (sigma defined: (L,) float64 on D's device), eqs. 3 and 7:
//     w = sigma^2 / (sigma^2 + d2), rho = w * d2, dphi = d rho / d d2 = w^2,
//     with w = 1 where d2 == 0 < sigma, w = 0 where sigma == 0, w = 1 where sigma == inf;
//   weighted (weights defined: (L, n, n) contiguous, D's dtype), eq. 8:
//     rho = weights * d2, dphi = weights (w is not written).
// w and dphi may be undefined (not wanted); outputs are contiguous, D's dtype.
using IrlsPairKernel = void (*)(const at::Tensor& D, const at::Tensor& sigma, const at::Tensor& weights,
                                at::Tensor& w, at::Tensor& rho, at::Tensor& dphi);

struct IrlsKernels {
  PairwiseSqDistsKernel sq_dists;
  PairwiseMixKernel mix;
  IrlsPairKernel pair;
};

// ---- entry points (irls.cpp) --------------------------------------------------
at::Tensor pairwise_sq_dists_entry(const IrlsKernels& k, const at::Tensor& params, at::IntArrayRef offsets,
                                   bool fp64_accumulate);
at::Tensor pairwise_mix_entry(const IrlsKernels& k, const at::Tensor& params, at::IntArrayRef offsets,
                              const at::Tensor& coeffs, bool transpose);
std::tuple<at::Tensor, at::Tensor> irls_weights_entry(const IrlsKernels& k, const at::Tensor& sq_dists,
                                                      const at::Tensor& sigma);
std::tuple<at::Tensor, at::Tensor> robust_consistency_entry(const IrlsKernels& k, const at::Tensor& params,
                                                            at::IntArrayRef offsets,
                                                            const std::optional<at::Tensor>& sigma,
                                                            const std::optional<at::Tensor>& weights);
at::Tensor irls_consensus_entry(const IrlsKernels& k, const at::Tensor& weights, const at::Tensor& params,
                                at::IntArrayRef offsets, bool transpose);

// Registers every IRLS op for one dispatch key, given that key's kernels.
template <PairwiseSqDistsKernel D, PairwiseMixKernel M, IrlsPairKernel W>
void register_irls(torch::Library& m) {
  static const IrlsKernels k{D, M, W};
  m.impl("pairwise_sq_dists", [](const at::Tensor& params, at::IntArrayRef offsets, bool fp64) {
    return pairwise_sq_dists_entry(k, params, offsets, fp64);
  });
  m.impl("pairwise_mix", [](const at::Tensor& params, at::IntArrayRef offsets, const at::Tensor& coeffs,
                            bool transpose) { return pairwise_mix_entry(k, params, offsets, coeffs, transpose); });
  m.impl("irls_weights",
         [](const at::Tensor& sq_dists, const at::Tensor& sigma) { return irls_weights_entry(k, sq_dists, sigma); });
  m.impl("robust_consistency", [](const at::Tensor& params, at::IntArrayRef offsets,
                                  const std::optional<at::Tensor>& sigma, const std::optional<at::Tensor>& weights) {
    return robust_consistency_entry(k, params, offsets, sigma, weights);
  });
  m.impl("irls_consensus", [](const at::Tensor& weights, const at::Tensor& params, at::IntArrayRef offsets,
                              bool transpose) { return irls_consensus_entry(k, weights, params, offsets, transpose); });
}

}  // namespace mtlkernels
