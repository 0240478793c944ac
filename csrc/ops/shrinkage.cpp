// Shrinkage family: schemas and device-independent entry points.
// Kernels: csrc/ops/cpu/shrinkage_kernel.cpp, csrc/ops/cuda/shrinkage_kernel.cu.
// Python bridge: mtlkernels/ops/shrinkage.py. Reference: mtlkernels/reference/shrinkage.py.
#include "ops/shrinkage.h"

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

void check_real(const char* op, const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.defined(), op, ": ", name, " is undefined");
  TORCH_CHECK(at::isFloatingType(t.scalar_type()) || at::isIntegralType(t.scalar_type(), false), op, ": ", name,
              " must be a real-valued tensor, got ", t.scalar_type());
}

// Describe tau broadcast against x (see Threshold in shrinkage.h).
Threshold make_threshold(const char* op, const at::Tensor& tau, const at::Tensor& x, const char* name) {
  check_real(op, tau, name);
  check_threshold_device(op, tau, x, name);
  const auto xs = x.sizes();
  const auto ts = tau.sizes();
  const int64_t xd = x.dim(), td = tau.dim();
  bool ok = td <= xd;
  for (int64_t i = 1; ok && i <= td; ++i) ok = ts[td - i] == 1 || ts[td - i] == xs[xd - i];
  TORCH_CHECK(ok, op, ": ", name, " of shape ", ts, " does not broadcast to x of shape ", xs,
              " (it must broadcast without changing x's shape)");

  Threshold t;
  if (tau.numel() == 1) {  // one read of the value (a single host sync on a device tensor), checked here
    t.scalar = tau.item<double>();
    TORCH_CHECK(t.scalar >= 0, op, ": ", name, " must be non-negative (and not NaN), got ", t.scalar);
    return t;
  }
  check_nonneg_tensor(op, tau, name);
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
    t.values = tau.to(x.options()).reshape({-1});
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
    t.values = tau.to(x.options()).contiguous().reshape({-1});
  } else {  // general broadcast: materialise (rare: tau varying along non-adjacent dims)
    t.values = tau.to(x.options()).expand(xs).contiguous().reshape({-1});
    t.period = t.values.numel();
    t.inner = 1;
  }
  return t;
}

void check_step(const char* op, const at::Tensor& x, const at::Tensor& grad, double lr) {
  check_floating(op, grad, "grad");
  check_same_device(op, x, "x", grad, "grad");
  check_same_dtype(op, x, "x", grad, "grad");
  check_same_shape(op, x, "x", grad, "grad");
  TORCH_CHECK(std::isfinite(lr) && lr > 0, op, ": lr must be finite and positive, got ", lr);
}

// Run an elementwise kernel into x itself, through a contiguous copy if needed.
at::Tensor& run_inplace(ShrinkKernel k, at::Tensor& x, const at::Tensor& grad, double lr, const Threshold& t,
                        double tmul, double scale) {
  if (x.numel() == 0) return x;
  if (x.is_contiguous()) {
    k(x, grad, lr, t, tmul, scale, x);
  } else {
    at::Tensor tmp = x.contiguous();
    k(tmp, grad, lr, t, tmul, scale, tmp);
    x.copy_(tmp);
  }
  return x;
}

at::Tensor run_out(ShrinkKernel k, const at::Tensor& x, const at::Tensor& grad, double lr, const Threshold& t,
                   double tmul, double scale) {
  at::Tensor xc = x.contiguous();
  at::Tensor out = at::empty(x.sizes(), x.options());
  if (x.numel() > 0) k(xc, grad, lr, t, tmul, scale, out);
  return out;
}

}  // namespace

at::Tensor soft_threshold_entry(ShrinkKernel k, const at::Tensor& x, const at::Tensor& tau) {
  check_floating("soft_threshold", x, "x");
  return run_out(k, x, {}, 0, make_threshold("soft_threshold", tau, x, "tau"), 1, 1);
}

at::Tensor& soft_threshold_inplace_entry(ShrinkKernel k, at::Tensor& x, const at::Tensor& tau) {
  check_floating("soft_threshold_", x, "x");
  return run_inplace(k, x, {}, 0, make_threshold("soft_threshold_", tau, x, "tau"), 1, 1);
}

at::Tensor elastic_net_prox_entry(ShrinkKernel k, const at::Tensor& x, const at::Tensor& l1, double l2) {
  check_floating("elastic_net_prox", x, "x");
  check_nonneg_scalar("elastic_net_prox", l2, "l2");
  return run_out(k, x, {}, 0, make_threshold("elastic_net_prox", l1, x, "l1"), 1, 1.0 / (1.0 + l2));
}

at::Tensor& elastic_net_prox_inplace_entry(ShrinkKernel k, at::Tensor& x, const at::Tensor& l1, double l2) {
  check_floating("elastic_net_prox_", x, "x");
  check_nonneg_scalar("elastic_net_prox_", l2, "l2");
  return run_inplace(k, x, {}, 0, make_threshold("elastic_net_prox_", l1, x, "l1"), 1, 1.0 / (1.0 + l2));
}

at::Tensor prox_grad_step_entry(ShrinkKernel k, const at::Tensor& x, const at::Tensor& grad, double lr,
                                const at::Tensor& l1, double l2) {
  check_floating("prox_grad_step", x, "x");
  check_step("prox_grad_step", x, grad, lr);
  check_nonneg_scalar("prox_grad_step", l2, "l2");
  return run_out(k, x, grad.contiguous(), lr, make_threshold("prox_grad_step", l1, x, "l1"), lr,
                 1.0 / (1.0 + lr * l2));
}

at::Tensor& prox_grad_step_inplace_entry(ShrinkKernel k, at::Tensor& x, const at::Tensor& grad, double lr,
                                         const at::Tensor& l1, double l2) {
  check_floating("prox_grad_step_", x, "x");
  check_step("prox_grad_step_", x, grad, lr);
  check_nonneg_scalar("prox_grad_step_", l2, "l2");
  return run_inplace(k, x, grad.contiguous(), lr, make_threshold("prox_grad_step_", l1, x, "l1"), lr,
                     1.0 / (1.0 + lr * l2));
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
  if (has_labels) {
    c.label_min = static_cast<int64_t>(v[i++]);
    c.label_max = static_cast<int64_t>(v[i++]);
  }
  return c;
}

struct GroupPlan {
  GroupArgs args;
  bool transpose = false;  // labels along dim 0: run on x^T
};

GroupPlan make_group_plan(const char* op, const at::Tensor& x, const at::Tensor& tau, int64_t dim,
                          const std::optional<at::Tensor>& groups, double l1, double tmul) {
  check_floating(op, x, "x");
  TORCH_CHECK(x.dim() == 2, op, ": x must be a 2-D matrix, got shape ", x.sizes());
  TORCH_CHECK(dim >= -2 && dim <= 1, op, ": dim must be 0 or 1 (or -2, -1) for a matrix, got ", dim);
  if (dim < 0) dim += 2;
  check_nonneg_scalar(op, l1, "l1");
  check_real(op, tau, "tau");
  check_threshold_device(op, tau, x, "tau");
  TORCH_CHECK(tau.dim() <= 1, op, ": tau must be a scalar or a 1-D tensor with one value per group, got shape ",
              tau.sizes());
  const HostChecks hc = host_checks(tau, groups);
  TORCH_CHECK(!hc.tau_bad, op, ": tau must be non-negative (and not NaN) everywhere");

  GroupPlan plan;
  GroupArgs& a = plan.args;
  a.tmul = tmul;
  a.l1 = l1;
  if (groups.has_value() && groups->defined()) {
    const at::Tensor& g = *groups;
    TORCH_CHECK(!at::isFloatingType(g.scalar_type()) && g.scalar_type() != at::kBool, op,
                ": groups must be an integer tensor of group labels, got ", g.scalar_type());
    TORCH_CHECK(g.dim() == 1, op, ": groups must be 1-D (one label per entry along dim), got shape ", g.sizes());
    TORCH_CHECK(g.size(0) == x.size(dim), op, ": groups has ", g.size(0), " labels but x has ", x.size(dim),
                " entries along dim ", dim);
    check_same_device(op, x, "x", g, "groups");
    a.mode = GroupMode::Labels;
    a.labels = g.to(at::kLong).contiguous();
    const int64_t lo = hc.label_min, hi = hc.label_max;
    TORCH_CHECK(lo >= 0, op, ": group labels must be non-negative, found ", lo);
    a.num_groups = tau.numel() > 1 ? tau.numel() : hi + 1;
    TORCH_CHECK(hi < a.num_groups, op, ": group label ", hi, " is out of range for ", a.num_groups,
                " groups (tau has one value per group)");
    plan.transpose = dim == 0;
  } else {
    a.mode = dim == 1 ? GroupMode::Rows : GroupMode::Cols;
    a.num_groups = dim == 1 ? x.size(0) : x.size(1);
  }
  if (tau.numel() == 1) {
    a.tau.scalar = hc.tau_value;
  } else {
    TORCH_CHECK(tau.numel() == a.num_groups, op, ": tau has ", tau.numel(), " values but there are ",
                a.num_groups, " groups");
    a.tau.values = tau.to(x.options()).contiguous().reshape({-1});
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
  at::Tensor gc = grad.defined() ? oriented(grad, p.transpose) : grad;
  at::Tensor out = at::empty(xc.sizes(), xc.options());
  if (x.numel() > 0) k(xc, gc, lr, p.args, out);
  return p.transpose ? out.t().contiguous() : out;
}

at::Tensor& run_group_inplace(GroupKernel k, at::Tensor& x, const at::Tensor& grad, double lr,
                              const GroupPlan& p) {
  if (x.numel() == 0) return x;
  if (!p.transpose && x.is_contiguous()) {
    k(x, grad.defined() ? grad.contiguous() : grad, lr, p.args, x);
  } else {
    x.copy_(run_group_out(k, x, grad, lr, p));
  }
  return x;
}

}  // namespace

at::Tensor group_soft_threshold_entry(GroupKernel k, const at::Tensor& x, const at::Tensor& tau, int64_t dim,
                                      const std::optional<at::Tensor>& groups, double l1) {
  return run_group_out(k, x, {}, 0, make_group_plan("group_soft_threshold", x, tau, dim, groups, l1, 1));
}

at::Tensor& group_soft_threshold_inplace_entry(GroupKernel k, at::Tensor& x, const at::Tensor& tau,
                                               int64_t dim, const std::optional<at::Tensor>& groups,
                                               double l1) {
  return run_group_inplace(k, x, {}, 0, make_group_plan("group_soft_threshold_", x, tau, dim, groups, l1, 1));
}

at::Tensor group_prox_grad_step_entry(GroupKernel k, const at::Tensor& x, const at::Tensor& grad, double lr,
                                      const at::Tensor& tau, int64_t dim,
                                      const std::optional<at::Tensor>& groups, double l1) {
  const char* op = "group_prox_grad_step";
  check_floating(op, x, "x");
  check_step(op, x, grad, lr);
  auto plan = make_group_plan(op, x, tau, dim, groups, l1 * lr, lr);
  return run_group_out(k, x, grad, lr, plan);
}

at::Tensor& group_prox_grad_step_inplace_entry(GroupKernel k, at::Tensor& x, const at::Tensor& grad,
                                               double lr, const at::Tensor& tau, int64_t dim,
                                               const std::optional<at::Tensor>& groups, double l1) {
  const char* op = "group_prox_grad_step_";
  check_floating(op, x, "x");
  check_step(op, x, grad, lr);
  auto plan = make_group_plan(op, x, tau, dim, groups, l1 * lr, lr);
  return run_group_inplace(k, x, grad, lr, plan);
}

}  // namespace mtlkernels
