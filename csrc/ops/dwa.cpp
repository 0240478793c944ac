// CETL family: schemas and device-independent entry points of the DWA penalty.
// Kernels: csrc/ops/cpu/dwa_kernel.cpp, csrc/ops/cuda/dwa_kernel.cu.
// Python bridge: mtlkernels/ops/dwa.py. Reference: mtlkernels/reference/dwa.py.
#include "ops/dwa.h"

#include "common/checks.h"

namespace mtlkernels {

TORCH_LIBRARY_FRAGMENT(mtlkernels, m) {
  m.def("dwa_penalty(Tensor[] params, Tensor[] anchors, Tensor[] importance, float lam, bool check) "
        "-> Tensor");
  m.def("dwa_penalty_backward(Tensor grad, Tensor[] params, Tensor[] anchors, Tensor[] importance, "
        "float lam) -> Tensor[]");
  m.def("dwa_grad_(Tensor(a!)[] grads, Tensor[] params, Tensor[] anchors, Tensor[] importance, float lam, "
        "bool check) -> ()");
}

namespace {

struct Lists {
  std::vector<at::Tensor> p, a, f;
};

// Validate one list against params (length, and per index: float32/float64, the
// dtype and device of params[0], the shape of params[i]). Messages are formatted
// only on failure: this runs on every call, for lists of hundreds of tensors.
void check_list(const char* op, at::TensorList params, at::TensorList other, const char* name) {
  TORCH_CHECK(other.size() == params.size(), op, ": params has ", params.size(), " tensors but ", name, " has ",
              other.size(), "; pass one ", name, " tensor per parameter");
  const at::Tensor& ref = params[0];
  const bool self = other.data() == params.data();
  for (size_t i = 0; i < other.size(); ++i) {
    const at::Tensor& t = other[i];
    TORCH_CHECK(t.defined(), op, ": ", name, "[", i, "] is undefined");
    TORCH_CHECK(t.scalar_type() == at::kFloat || t.scalar_type() == at::kDouble, op, ": ", name, "[", i,
                "] must be float32 or float64, got ", t.scalar_type());
    TORCH_CHECK(t.scalar_type() == ref.scalar_type(), op, ": params[0] is ", ref.scalar_type(), " but ", name, "[",
                i, "] is ", t.scalar_type(), " (all tensors must share one dtype)");
    TORCH_CHECK(t.device() == ref.device(), op, ": params[0] is on ", ref.device(), " but ", name, "[", i,
                "] is on ", t.device(), "; move them to one device");
    TORCH_CHECK(self || t.sizes() == params[i].sizes(), op, ": params[", i, "] has shape ", params[i].sizes(),
                " but ", name, "[", i, "] has shape ", t.sizes());
  }
}

Lists prepare(const char* op, at::TensorList params, at::TensorList anchors, at::TensorList importance,
              double lam) {
  TORCH_CHECK(!params.empty(), op, ": params is empty; pass a list of at least one tensor");
  check_nonneg_scalar(op, lam, "lam");
  check_list(op, params, params, "params");
  check_list(op, params, anchors, "anchors");
  check_list(op, params, importance, "importance");
  Lists l;
  const size_t n = params.size();
  l.p.reserve(n);
  l.a.reserve(n);
  l.f.reserve(n);
  for (size_t i = 0; i < n; ++i) {
    l.p.push_back(params[i].contiguous());
    l.a.push_back(anchors[i].contiguous());
    l.f.push_back(importance[i].contiguous());
  }
  return l;
}

void raise_if_bad(const char* op, const at::Tensor& bad) {
  TORCH_CHECK(bad.item<int>() == 0, op,
              ": importance must be non-negative (and not NaN) everywhere (it is the GFI of seed 002, eq. 10)");
}

}  // namespace

at::Tensor dwa_penalty_entry(DwaSumKernel k, at::TensorList params, at::TensorList anchors,
                             at::TensorList importance, double lam, bool check) {
  const char* op = "dwa_penalty";
  Lists l = prepare(op, params, anchors, importance, lam);
  const auto& ref = l.p[0];
  at::Tensor bad = check ? at::zeros({}, ref.options().dtype(at::kInt)) : at::Tensor();
  at::Tensor sum = k(l.p, l.a, l.f, bad);  // float64, on the device
  if (check) raise_if_bad(op, bad);
  return sum.mul(0.5 * lam).to(ref.scalar_type());
}

std::vector<at::Tensor> dwa_penalty_backward_entry(DwaAxpyKernel k, const at::Tensor& grad,
                                                   at::TensorList params, at::TensorList anchors,
                                                   at::TensorList importance, double lam) {
  const char* op = "dwa_penalty_backward";
  Lists l = prepare(op, params, anchors, importance, lam);
  check_floating(op, grad, "grad");
  TORCH_CHECK(grad.numel() == 1, op, ": grad must hold one value (the gradient of the scalar penalty), got shape ",
              grad.sizes());
  const at::Tensor scale = grad.reshape({}).to(l.p[0].options());
  std::vector<at::Tensor> out;
  out.reserve(l.p.size());
  for (const auto& p : l.p) out.push_back(at::empty(p.sizes(), p.options()));
  k(out, l.p, l.a, l.f, lam, scale, /*accumulate=*/false);
  return out;
}

void dwa_grad_inplace_entry(DwaAxpyKernel k, DwaCheckKernel c, at::TensorList grads, at::TensorList params,
                            at::TensorList anchors, at::TensorList importance, double lam, bool check) {
  const char* op = "dwa_grad_";
  Lists l = prepare(op, params, anchors, importance, lam);
  check_list(op, params, grads, "grads");
  if (check) {  // before touching grads: a failed check leaves them unchanged
    at::Tensor bad = at::zeros({}, l.p[0].options().dtype(at::kInt));
    c(l.f, bad);
    raise_if_bad(op, bad);
  }
  std::vector<at::Tensor> out;
  out.reserve(grads.size());
  for (const auto& g : grads) out.push_back(g.is_contiguous() ? g : g.contiguous());
  k(out, l.p, l.a, l.f, lam, at::Tensor(), /*accumulate=*/true);
  for (size_t i = 0; i < grads.size(); ++i) {
    if (!out[i].is_same(grads[i])) grads[i].copy_(out[i]);
  }
}

}  // namespace mtlkernels
