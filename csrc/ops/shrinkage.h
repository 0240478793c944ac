// Shrinkage family: soft-thresholding (prox of the l1 norm), the elastic-net
// prox, block (group) soft-thresholding for l2,1 and sparse-group norms, and the
// fused proximal-gradient steps x <- prox_{lr h}(x - lr g) built on them.
//
// The schemas and the device-independent entry points (validation, output
// allocation, in-place handling) live in shrinkage.cpp; each device provides two
// kernels with the signatures below and registers the entry points with
// register_shrinkage<...>() in its TORCH_LIBRARY_IMPL block.
#pragma once

#include <ATen/ATen.h>
#include <torch/library.h>

namespace mtlkernels {

// A threshold broadcast over x (contiguous, numel N) described without
// materialising it: element i uses values[(i / inner) % period], or `scalar`
// when `values` is undefined.
struct Threshold {
  at::Tensor values;  // contiguous, dtype of x, on x's device; undefined => uniform
  double scalar = 0;
  int64_t inner = 1;
  int64_t period = 1;
  bool uniform() const { return !values.defined(); }
};

// out = scale * S(x - lr * grad, tmul * t) elementwise, S the soft-threshold.
// x, grad (may be undefined: no gradient step) and out are contiguous, same shape
// and dtype; out may alias x.
using ShrinkKernel = void (*)(const at::Tensor& x, const at::Tensor& grad, double lr, const Threshold& t,
                              double tmul, double scale, at::Tensor& out);

// Block soft-thresholding of a contiguous (m, n) matrix after an optional
// gradient step and an optional l1 shrink:
//   z = S(x - lr * grad, l1);  out_g = z_g * max(0, 1 - tau_g / ||z_g||_2)
// Groups (`mode`): each row, each column, or, within every row, the columns that
// share a label (labels: int64, length n, values in [0, num_groups)).
enum class GroupMode { Rows, Cols, Labels };
struct GroupArgs {
  GroupMode mode = GroupMode::Rows;
  at::Tensor labels;   // Labels mode only
  int64_t num_groups = 0;  // per row in Labels mode, else m (Rows) or n (Cols)
  Threshold tau;       // one value per group (period == num_groups) or uniform
  double tmul = 1;     // tau is multiplied by tmul (the step size in a prox step)
  double l1 = 0;       // already multiplied by the step size
};
using GroupKernel = void (*)(const at::Tensor& x, const at::Tensor& grad, double lr, const GroupArgs& a,
                             at::Tensor& out);

// ---- entry points (shrinkage.cpp) ------------------------------------------
at::Tensor soft_threshold_entry(ShrinkKernel k, const at::Tensor& x, const at::Tensor& tau);
at::Tensor& soft_threshold_inplace_entry(ShrinkKernel k, at::Tensor& x, const at::Tensor& tau);
at::Tensor elastic_net_prox_entry(ShrinkKernel k, const at::Tensor& x, const at::Tensor& l1, double l2);
at::Tensor& elastic_net_prox_inplace_entry(ShrinkKernel k, at::Tensor& x, const at::Tensor& l1, double l2);
at::Tensor prox_grad_step_entry(ShrinkKernel k, const at::Tensor& x, const at::Tensor& grad, double lr,
                                const at::Tensor& l1, double l2);
at::Tensor& prox_grad_step_inplace_entry(ShrinkKernel k, at::Tensor& x, const at::Tensor& grad, double lr,
                                         const at::Tensor& l1, double l2);
at::Tensor group_soft_threshold_entry(GroupKernel k, const at::Tensor& x, const at::Tensor& tau, int64_t dim,
                                      const std::optional<at::Tensor>& groups, double l1);
at::Tensor& group_soft_threshold_inplace_entry(GroupKernel k, at::Tensor& x, const at::Tensor& tau,
                                               int64_t dim, const std::optional<at::Tensor>& groups,
                                               double l1);
at::Tensor group_prox_grad_step_entry(GroupKernel k, const at::Tensor& x, const at::Tensor& grad, double lr,
                                      const at::Tensor& tau, int64_t dim,
                                      const std::optional<at::Tensor>& groups, double l1);
at::Tensor& group_prox_grad_step_inplace_entry(GroupKernel k, at::Tensor& x, const at::Tensor& grad,
                                               double lr, const at::Tensor& tau, int64_t dim,
                                               const std::optional<at::Tensor>& groups, double l1);

// Registers every shrinkage op for one dispatch key, given that key's kernels.
template <ShrinkKernel K, GroupKernel G>
void register_shrinkage(torch::Library& m) {
  m.impl("soft_threshold", [](const at::Tensor& x, const at::Tensor& tau) { return soft_threshold_entry(K, x, tau); });
  m.impl("soft_threshold_",
         [](at::Tensor& x, const at::Tensor& tau) { soft_threshold_inplace_entry(K, x, tau); });
  m.impl("elastic_net_prox", [](const at::Tensor& x, const at::Tensor& l1, double l2) {
    return elastic_net_prox_entry(K, x, l1, l2);
  });
  m.impl("elastic_net_prox_", [](at::Tensor& x, const at::Tensor& l1, double l2) {
    elastic_net_prox_inplace_entry(K, x, l1, l2);
  });
  m.impl("prox_grad_step", [](const at::Tensor& x, const at::Tensor& g, double lr, const at::Tensor& l1, double l2) {
    return prox_grad_step_entry(K, x, g, lr, l1, l2);
  });
  m.impl("prox_grad_step_",
         [](at::Tensor& x, const at::Tensor& g, double lr, const at::Tensor& l1, double l2) {
           prox_grad_step_inplace_entry(K, x, g, lr, l1, l2);
         });
  m.impl("group_soft_threshold", [](const at::Tensor& x, const at::Tensor& tau, int64_t dim,
                                    const std::optional<at::Tensor>& groups, double l1) {
    return group_soft_threshold_entry(G, x, tau, dim, groups, l1);
  });
  m.impl("group_soft_threshold_", [](at::Tensor& x, const at::Tensor& tau, int64_t dim,
                                     const std::optional<at::Tensor>& groups, double l1) {
    group_soft_threshold_inplace_entry(G, x, tau, dim, groups, l1);
  });
  m.impl("group_prox_grad_step", [](const at::Tensor& x, const at::Tensor& g, double lr, const at::Tensor& tau,
                                    int64_t dim, const std::optional<at::Tensor>& groups, double l1) {
    return group_prox_grad_step_entry(G, x, g, lr, tau, dim, groups, l1);
  });
  m.impl("group_prox_grad_step_",
         [](at::Tensor& x, const at::Tensor& g, double lr, const at::Tensor& tau, int64_t dim,
            const std::optional<at::Tensor>& groups, double l1) {
           group_prox_grad_step_inplace_entry(G, x, g, lr, tau, dim, groups, l1);
         });
}

}  // namespace mtlkernels
