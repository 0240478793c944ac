// Shrinkage family: schemas and device-independent entry points.
// Kernels: csrc/ops/cpu/shrinkage_kernel.cpp, csrc/ops/cuda/shrinkage_kernel.cu.
// Python bridge: mtlkernels/ops/shrinkage.py. Reference: mtlkernels/reference/shrinkage.py.
#include "ops/shrinkage.h"

#include <algorithm>
#include <limits>
#include <vector>

#include "common/checks.h"

namespace mtlkernels {

TORCH_LIBRARY_FRAGMENT(mtlkernels, m) {
  m.def("soft_threshold(Tensor x, Tensor tau) -> Tensor");
  m.def("soft_threshold_(Tensor(a!) x, Tensor tau) -> ()");
  m.def("elastic_net_prox(Tensor x, Tensor l1, float l2) -> Tensor");
  m.def("elastic_net_prox_(Tensor(a!) x, Tensor l1, float l2) -> ()");
  m.def("prox_grad_step(Tensor x, Tensor grad, float lr, Tensor l1, float l2) -> Tensor");
  m.def("prox_grad_step_(Tensor(a!) x, Tensor grad, float lr, Tensor l1, float l2) -> ()");
  m.def("group_soft_threshold(Tensor x, Tensor tau, int dim, Tensor? groups, float l1) -> Tensor");
  m.def("group_soft_threshold_(Tensor(a!) x, Tensor tau, int dim, Tensor? groups, float l1) -> ()");
  m.def("group_prox_grad_step(Tensor x, Tensor grad, float lr, Tensor tau, int dim, Tensor? groups, "
        "float l1) -> Tensor");
  m.def("group_prox_grad_step_(Tensor(a!) x, Tensor grad, float lr, Tensor tau, int dim, Tensor? groups, "
        "float l1) -> ()");
}

namespace {

// A scalar threshold may be a 0-dim CPU tensor whatever x's device (read on the
// host, no transfer); any other threshold tensor must be on x's device.
void check_threshold_device(const char* op, const at::Tensor& tau, const at::Tensor& x, const char* name) {
  if (tau.dim() == 0 && tau.device().is_cpu()) return;
  TORCH_CHECK(tau.device() == x.device(), op, ": ", name, " is on ", tau.device(), " but x is on ", x.device(),
              " (only a 0-dim CPU scalar tensor may stay on the CPU)");
}

// The working copy of an in-place op's x: x itself when the kernels can write it
// (float32 / float64, contiguous), else a contiguous float32 / float64 copy.
at::Tensor working(const at::Tensor& x) {
  if (is_half(x.scalar_type())) return x.to(at::kFloat).contiguous();
  return x.is_contiguous() ? x : x.contiguous();
}

// Describe tau * tmul broadcast against x (float32 / float64, see Threshold in
// shrinkage.h). Thresholds are applied in double precision and clamped to x's largest
// finite value: every finite |v| is at most that, so the result is the same as with
// the exact threshold, and never inf - inf. Sets *tmul_out to the multiplier the
// kernel must still apply (1 when folded in here).
Threshold make_threshold(const char* op, const at::Tensor& tau, const at::Tensor& x, const char* name, double tmul,
                         double* tmul_out) {
  check_real(op, tau, name);
  check_threshold_device(op, tau, x, name);
  const auto xs = x.sizes();
  const auto ts = tau.sizes();
  const int64_t xd = x.dim(), td = tau.dim();
  bool ok = td <= xd;
  for (int64_t i = 1; ok && i <= td; ++i) ok = ts[td - i] == 1 || ts[td - i] == xs[xd - i];
  TORCH_CHECK(ok, op, ": ", name, " of shape ", ts, " does not broadcast to x of shape ", xs,
              " (it must broadcast without changing x's shape)");
  const double big = dtype_max(x.scalar_type());

  Threshold t;
  *tmul_out = 1;
  if (tau.numel() == 1) {  // one read of the value (a single host sync on a device tensor), checked here
    const double v = tau.item<double>();
    TORCH_CHECK(v >= 0, op, ": ", name, " must be non-negative (and not NaN), got ", v);
    t.scalar = std::min(v * tmul, big);
    return t;
  }
  check_nonneg_tensor(op, tau, name);
  // tau * tmul may overflow x's dtype only when tmul > 1 (a step size above 1): then it is
  // formed here in double and clamped; otherwise the kernel multiplies.
  at::Tensor tv;
  if (tmul > 1) {
    tv = tau.to(x.device(), at::kDouble).mul(tmul).clamp_max(big).to(x.scalar_type());
  } else {
    tv = tau.to(x.options());
    *tmul_out = tmul;
  }
  // Dimensions (in x's numbering) along which tau varies.
  int64_t lo = -1, hi = -1;
  for (int64_t i = 0; i < td; ++i) {
    if (ts[i] != 1) {
      const int64_t d = xd - td + i;
      if (lo < 0) lo = d;
      hi = d;
    }
  }
  if (lo < 0) {  // tau is empty: x is empty too (broadcast), nothing to describe
    t.values = tv.reshape({-1});
    return t;
  }
  bool run = true;  // tau matches x on every dim of [lo, hi]: a strided pattern
  for (int64_t d = lo; d <= hi && run; ++d) {
    const int64_t ti = d - (xd - td);
    run = ts[ti] == xs[d] || xs[d] == 1;
  }
  if (run) {
    t.period = 1;
    for (int64_t d = lo; d <= hi; ++d) t.period *= xs[d];
    t.inner = 1;
    for (int64_t d = hi + 1; d < xd; ++d) t.inner *= xs[d];
    t.values = tv.contiguous().reshape({-1});
  } else {  // general broadcast: materialise (rare: tau varying along non-adjacent dims)
    t.values = tv.expand(xs).contiguous().reshape({-1});
    t.period = t.values.numel();
    t.inner = 1;
  }
  return t;
}

void check_step(const char* op, const at::Tensor& x, const at::Tensor& grad, double lr) {
  TORCH_CHECK(grad.defined(), op, ": grad is undefined");
  check_same_device(op, x, "x", grad, "grad");
  check_same_dtype(op, x, "x", grad, "grad");
  check_same_shape(op, x, "x", grad, "grad");
  TORCH_CHECK(std::isfinite(lr) && lr > 0, op, ": lr must be finite and positive, got ", lr);
}

// lr and the factor 1 / (1 + lr * l2) must be finite and non-zero in x's dtype (the
// kernels apply them in that precision): a float32 step of lr = 1e39 would turn a zero
// gradient into inf * 0 = NaN.
void check_fits(const char* op, at::ScalarType dtype, double lr, double scale) {
  TORCH_CHECK(lr <= dtype_max(dtype), op, ": lr = ", lr, " overflows ", dtype,
              "; pass a smaller step or x in float64");
  TORCH_CHECK(round_to(dtype, scale) > 0, op, ": the factor 1 / (1 + lr * l2) = ", scale, " underflows to 0 in ",
              dtype, "; pass a smaller l2 or x in float64");
}

// One validated elementwise shrink of a float32 / float64 tensor x:
// out = scale * S(x - lr * grad, tmul * thr), scale = 1 / (1 + tmul * l2).
struct ShrinkPlan {
  Threshold t;
  double kmul = 1;  // the threshold multiplier left to the kernel
  double scale = 1;
};

ShrinkPlan plan_shrink(const char* op, const at::Tensor& x, double lr, const at::Tensor& thr, const char* name,
                       double tmul, double l2) {
  ShrinkPlan p;
  p.scale = 1.0 / (1.0 + tmul * l2);
  check_fits(op, x.scalar_type(), lr, p.scale);
  p.t = make_threshold(op, thr, x, name, tmul, &p.kmul);
  return p;
}

// Runs the kernel on x (any layout) into out (contiguous, x's shape and dtype; may be x
// itself when x is contiguous).
void apply_shrink(ShrinkKernel k, const ShrinkPlan& p, const at::Tensor& x, const at::Tensor& grad, double lr,
                  at::Tensor& out) {
  if (x.numel() == 0) return;
  const at::Tensor xc = x.contiguous();
  const at::Tensor gc = grad.defined() ? grad.to(x.scalar_type()).contiguous() : grad;
  k(xc, gc, lr, p.t, p.kmul, p.scale, out);
}

at::Tensor shrink_out(const char* op, ShrinkKernel k, const at::Tensor& x, const at::Tensor& grad, double lr,
                      const at::Tensor& thr, const char* name, double tmul, double l2) {
  check_floating(op, x, "x");
  const ShrinkPlan p = plan_shrink(op, x, lr, thr, name, tmul, l2);
  at::Tensor out = at::empty(x.sizes(), x.options());
  apply_shrink(k, p, x, grad, lr, out);
  return out;
}

// In place: into x itself when the kernels can write it, else through a working copy
// (non-contiguous, or float16 / bfloat16 computed in float32). Inputs that share memory
// with x are copied first, so that they are read before x is written.
at::Tensor& shrink_inplace(const char* op, ShrinkKernel k, at::Tensor& x, const at::Tensor& grad, double lr,
                           const at::Tensor& thr, const char* name, double tmul, double l2) {
  at::Tensor w = working(x);
  const ShrinkPlan p = plan_shrink(op, w, lr, unaliased(thr, x), name, tmul, l2);
  if (x.numel() == 0) return x;
  apply_shrink(k, p, w, unaliased(grad, x), lr, w);
  if (!w.is_same(x)) x.copy_(w);
  return x;
}

}  // namespace

at::Tensor soft_threshold_entry(ShrinkKernel k, const at::Tensor& x, const at::Tensor& tau) {
  return shrink_out("soft_threshold", k, x, {}, 0, tau, "tau", 1, 0);
}

at::Tensor& soft_threshold_inplace_entry(ShrinkKernel k, at::Tensor& x, const at::Tensor& tau) {
  check_writable("soft_threshold_", x, "x");
  return shrink_inplace("soft_threshold_", k, x, {}, 0, tau, "tau", 1, 0);
}

at::Tensor elastic_net_prox_entry(ShrinkKernel k, const at::Tensor& x, const at::Tensor& l1, double l2) {
  check_nonneg_scalar("elastic_net_prox", l2, "l2");
  return shrink_out("elastic_net_prox", k, x, {}, 0, l1, "l1", 1, l2);
}

at::Tensor& elastic_net_prox_inplace_entry(ShrinkKernel k, at::Tensor& x, const at::Tensor& l1, double l2) {
  check_writable("elastic_net_prox_", x, "x");
  check_nonneg_scalar("elastic_net_prox_", l2, "l2");
  return shrink_inplace("elastic_net_prox_", k, x, {}, 0, l1, "l1", 1, l2);
}

at::Tensor prox_grad_step_entry(ShrinkKernel k, const at::Tensor& x, const at::Tensor& grad, double lr,
                                const at::Tensor& l1, double l2) {
  const char* op = "prox_grad_step";
  check_floating(op, x, "x");
  check_step(op, x, grad, lr);
  check_nonneg_scalar(op, l2, "l2");
  return shrink_out(op, k, x, grad, lr, l1, "l1", lr, l2);
}

at::Tensor& prox_grad_step_inplace_entry(ShrinkKernel k, at::Tensor& x, const at::Tensor& grad, double lr,
                                         const at::Tensor& l1, double l2) {
  const char* op = "prox_grad_step_";
  check_writable(op, x, "x");
  check_step(op, x, grad, lr);
  check_nonneg_scalar(op, l2, "l2");
  return shrink_inplace(op, k, x, grad, lr, l1, "l1", lr, l2);
}

// ---- group shrinkage ---------------------------------------------------------

namespace {

// What the group ops must know on the host about tensors that may live on the GPU
// (label range, whether tau is valid, a scalar tau's value), read back in one copy:
// one host synchronisation per call instead of one per quantity.
struct HostChecks {
  int64_t label_min = 0, label_max = -1;  // label_max = -1: no labels
  bool tau_bad = false;                   // a negative or NaN tau
  double tau_value = 0;                   // tau's value when it has one element
};

HostChecks host_checks(const at::Tensor& tau, const std::optional<at::Tensor>& groups) {
  HostChecks c;
  const bool has_labels = groups.has_value() && groups->defined() && groups->numel() > 0;
  const at::Tensor td = tau.to(at::kDouble).reshape({-1});
  std::vector<at::Tensor> parts;  // read back in one copy when on a device
  if (td.is_cpu()) {  // read in place: no copy, no sync
    const at::Tensor t = td.contiguous();
    const double* v = t.data_ptr<double>();
    for (int64_t i = 0; i < t.numel(); ++i) c.tau_bad |= !(v[i] >= 0);
    if (t.numel() == 1) c.tau_value = v[0];
  } else {
    const auto dopts = td.options();
    parts.push_back(td.numel() ? (td.lt(0) | td.isnan()).any().to(at::kDouble).reshape({1}) : at::zeros({1}, dopts));
    parts.push_back(td.numel() == 1 ? td : at::zeros({1}, dopts));
  }
  if (has_labels) {
    // Labels as float64 are exact below 2^53; only the range is read.
    const auto mm = at::aminmax(groups->to(at::kLong));
    const auto dev = parts.empty() ? groups->device() : parts[0].device();
    parts.push_back(std::get<0>(mm).to(at::kDouble).reshape({1}).to(dev));
    parts.push_back(std::get<1>(mm).to(at::kDouble).reshape({1}).to(dev));
  }
  if (parts.empty()) return c;
  const at::Tensor h = at::cat(parts).to(at::kCPU);
  const double* v = h.data_ptr<double>();
  int64_t i = 0;
  if (!td.is_cpu()) {
    c.tau_bad = v[i++] != 0;
    c.tau_value = v[i++];
  }
  if (has_labels) {  // (clamped: a label near 2^63 rounds up past int64 as a double)
    constexpr double kTop = 9.2e18;
    const double lo = v[i++], hi = v[i++];
    c.label_min = lo < -kTop ? std::numeric_limits<int64_t>::min() : static_cast<int64_t>(lo);
    c.label_max = hi > kTop ? std::numeric_limits<int64_t>::max() : static_cast<int64_t>(hi);
  }
  return c;
}

struct GroupPlan {
  GroupArgs args;
  bool transpose = false;  // labels along dim 0: run on x^T
};

// The group ops' x: a float32 / float64 matrix (in place: any dtype check_writable takes).
void check_group_x(const char* op, const at::Tensor& x, int64_t dim) {
  TORCH_CHECK(x.dim() == 2, op, ": x must be a 2-D matrix, got shape ", x.sizes());
  TORCH_CHECK(dim >= -2 && dim <= 1, op, ": dim must be 0 or 1 (or -2, -1) for a matrix, got ", dim);
}

// x: the float32 / float64 matrix the kernel works on; tmul: the step size of a fused
// step (tau and l1 are multiplied by it), 1 otherwise.
GroupPlan make_group_plan(const char* op, const at::Tensor& x, const at::Tensor& tau, int64_t dim,
                          const std::optional<at::Tensor>& groups, double l1, double tmul) {
  check_group_x(op, x, dim);
  if (dim < 0) dim += 2;
  check_nonneg_scalar(op, l1, "l1");
  check_real(op, tau, "tau");
  check_threshold_device(op, tau, x, "tau");
  TORCH_CHECK(tau.dim() <= 1, op, ": tau must be a scalar or a 1-D tensor with one value per group, got shape ",
              tau.sizes());
  const bool has_groups = groups.has_value() && groups->defined();
  if (has_groups) {  // metadata first: host_checks reads the labels
    const at::Tensor& g = *groups;
    TORCH_CHECK(at::isIntegralType(g.scalar_type(), /*includeBool=*/false), op,
                ": groups must be an integer tensor of group labels, got ", g.scalar_type());
    TORCH_CHECK(g.dim() == 1, op, ": groups must be 1-D (one label per entry along dim), got shape ", g.sizes());
    TORCH_CHECK(g.size(0) == x.size(dim), op, ": groups has ", g.size(0), " labels but x has ", x.size(dim),
                " entries along dim ", dim);
    check_same_device(op, x, "x", g, "groups");
  }
  const HostChecks hc = host_checks(tau, groups);
  TORCH_CHECK(!hc.tau_bad, op, ": tau must be non-negative (and not NaN) everywhere");

  GroupPlan plan;
  GroupArgs& a = plan.args;
  a.tmul = tmul;
  // The l1 shrink is applied in x's dtype: clamped to its largest value (same result).
  a.l1 = std::min(l1 * tmul, dtype_max(x.scalar_type()));
  at::Tensor tau_values = tau.numel() != 1 ? tau.reshape({-1}) : at::Tensor();
  if (has_groups) {
    a.mode = GroupMode::Labels;
    a.labels = groups->to(at::kLong).contiguous();
    const int64_t lo = hc.label_min, hi = hc.label_max;
    TORCH_CHECK(lo >= 0, op, ": group labels must be non-negative, found ", lo);
    const bool per_group = tau.numel() != 1;
    if (per_group) {
      TORCH_CHECK(hi < tau.numel(), op, ": group label ", hi, " is out of range for ", tau.numel(),
                  " groups (tau has one value per group)");
    }
    // Groups over [0, G): G = tau.numel() for per-group thresholds, else max label + 1.
    // More groups than labelled entries (labels that skip values, or many thresholds):
    // renumber the labels that occur as 0, 1, ... (one sort of the labels), so that the
    // work is linear in x's size whatever the label values.
    const int64_t n_labels = a.labels.numel();
    a.num_groups = per_group ? tau.numel() : (hi < n_labels ? hi + 1 : n_labels + 1);
    if (a.num_groups > n_labels) {
      const auto u = at::_unique2(a.labels, /*sorted=*/true, /*return_inverse=*/true, /*return_counts=*/false);
      const at::Tensor present = std::get<0>(u);
      a.labels = std::get<1>(u).contiguous();
      a.num_groups = present.numel();
      if (tau_values.defined()) tau_values = tau_values.index_select(0, present.to(tau_values.device()));
    }
    plan.transpose = dim == 0;
  } else {
    a.mode = dim == 1 ? GroupMode::Rows : GroupMode::Cols;
    a.num_groups = dim == 1 ? x.size(0) : x.size(1);
  }
  if (tau.numel() == 1) {
    a.tau.scalar = hc.tau_value;
  } else {
    TORCH_CHECK(tau.numel() == a.num_groups || has_groups, op, ": tau has ", tau.numel(), " values but there are ",
                a.num_groups, " groups");
    a.tau.values = tau_values.to(x.options()).contiguous();
    a.tau.period = a.num_groups;
  }
  return plan;
}

// Contiguous input in the orientation the kernel works on.
at::Tensor oriented(const at::Tensor& t, bool transpose) {
  return transpose ? t.t().contiguous() : t.contiguous();
}

at::Tensor run_group_out(GroupKernel k, const at::Tensor& x, const at::Tensor& grad, double lr,
                         const GroupPlan& p) {
  at::Tensor xc = oriented(x, p.transpose);
  at::Tensor gc = grad.defined() ? oriented(grad.to(x.scalar_type()), p.transpose) : grad;
  at::Tensor out = at::empty(xc.sizes(), xc.options());
  if (x.numel() > 0) k(xc, gc, lr, p.args, out);
  return p.transpose ? out.t().contiguous() : out;
}

at::Tensor group_out(const char* op, GroupKernel k, const at::Tensor& x, const at::Tensor& grad, double lr,
                     const at::Tensor& tau, int64_t dim, const std::optional<at::Tensor>& groups, double l1,
                     double tmul) {
  check_floating(op, x, "x");
  const GroupPlan p = make_group_plan(op, x, tau, dim, groups, l1, tmul);
  return run_group_out(k, x, grad, lr, p);
}

// In place: into x itself when it is a contiguous float32 / float64 matrix grouped
// along rows, else through a working copy. Inputs sharing memory with x are copied first.
at::Tensor& group_inplace(const char* op, GroupKernel k, at::Tensor& x, const at::Tensor& grad, double lr,
                          const at::Tensor& tau, int64_t dim, const std::optional<at::Tensor>& groups, double l1,
                          double tmul) {
  check_writable(op, x, "x");
  check_group_x(op, x, dim);
  std::optional<at::Tensor> g = groups;
  if (g.has_value() && g->defined()) g = unaliased(*g, x);
  const at::Tensor gr = unaliased(grad, x);
  at::Tensor w = working(x);
  const GroupPlan p = make_group_plan(op, w, unaliased(tau, x), dim, g, l1, tmul);
  if (x.numel() == 0) return x;
  if (!p.transpose) {
    k(w, gr.defined() ? gr.to(w.scalar_type()).contiguous() : gr, lr, p.args, w);
    if (!w.is_same(x)) x.copy_(w);
  } else {
    x.copy_(run_group_out(k, w, gr, lr, p));
  }
  return x;
}

}  // namespace

at::Tensor group_soft_threshold_entry(GroupKernel k, const at::Tensor& x, const at::Tensor& tau, int64_t dim,
                                      const std::optional<at::Tensor>& groups, double l1) {
  return group_out("group_soft_threshold", k, x, {}, 0, tau, dim, groups, l1, 1);
}

at::Tensor& group_soft_threshold_inplace_entry(GroupKernel k, at::Tensor& x, const at::Tensor& tau,
                                               int64_t dim, const std::optional<at::Tensor>& groups,
                                               double l1) {
  return group_inplace("group_soft_threshold_", k, x, {}, 0, tau, dim, groups, l1, 1);
}

at::Tensor group_prox_grad_step_entry(GroupKernel k, const at::Tensor& x, const at::Tensor& grad, double lr,
                                      const at::Tensor& tau, int64_t dim,
                                      const std::optional<at::Tensor>& groups, double l1) {
  const char* op = "group_prox_grad_step";
  check_floating(op, x, "x");
  check_step(op, x, grad, lr);
  check_fits(op, x.scalar_type(), lr, 1.0);
  return group_out(op, k, x, grad, lr, tau, dim, groups, l1, lr);
}

at::Tensor& group_prox_grad_step_inplace_entry(GroupKernel k, at::Tensor& x, const at::Tensor& grad,
                                               double lr, const at::Tensor& tau, int64_t dim,
                                               const std::optional<at::Tensor>& groups, double l1) {
  const char* op = "group_prox_grad_step_";
  check_writable(op, x, "x");
  check_step(op, x, grad, lr);
  check_fits(op, is_half(x.scalar_type()) ? at::kFloat : x.scalar_type(), lr, 1.0);
  return group_inplace(op, k, x, grad, lr, tau, dim, groups, l1, lr);
}

}  // namespace mtlkernels
