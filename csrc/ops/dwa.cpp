// CETL family: schemas and device-independent entry points of the DWA penalty.
// Kernels: csrc/ops/cpu/dwa_kernel.cpp, csrc/ops/cuda/dwa_kernel.cu.
// Python bridge: mtlkernels/ops/dwa.py. Reference: mtlkernels/reference/dwa.py.
#include "ops/dwa.h"

#include <cstdint>
#include <unordered_map>
#include <vector>

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
  // The kernels scale by T(lam * upstream gradient): lam must be finite in the tensors' dtype
  // (a float32 lam of 1e39 would make inf * 0 = NaN where theta = theta*).
  TORCH_CHECK(lam <= dtype_max(params[0].scalar_type()), op, ": lam = ", lam, " overflows ",
              params[0].scalar_type(), "; pass a smaller lam or float64 tensors");
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
              ": importance must be non-negative (and not NaN) everywhere (it is the GFI of Chen et al. 2018 (CETL), eq. 10)");
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
  for (size_t i = 0; i < grads.size(); ++i) {
    TORCH_CHECK(at::has_internal_overlap(grads[i]) != at::MemOverlap::Yes, op, ": several elements of grads[", i,
                "] share one memory location (an expanded or stride-0 view); pass a tensor that can be written "
                "in place");
  }
  if (check) {  // before touching grads: a failed check leaves them unchanged
    at::Tensor bad = at::zeros({}, l.p[0].options().dtype(at::kInt));
    c(l.f, bad);
    raise_if_bad(op, bad);
  }
  // Memory shared between gradients (a tensor listed twice: tied parameters) or between a
  // gradient and an input. Storages are compared first (one hash per tensor); only
  // tensors in a gradient's storage are compared precisely.
  std::unordered_multimap<const void*, size_t> by_storage;
  for (size_t i = 0; i < grads.size(); ++i) {
    if (grads[i].has_storage() && grads[i].numel() > 0) by_storage.emplace(grads[i].storage().data(), i);
  }
  auto overlaps_grad = [&](const at::Tensor& t, size_t skip) {
    if (!t.has_storage() || t.numel() == 0) return false;
    const auto range = by_storage.equal_range(t.storage().data());
    for (auto it = range.first; it != range.second; ++it) {
      if (it->second != skip && may_overlap(t, grads[it->second])) return true;
    }
    return false;
  };
  bool shared_grads = false;
  for (size_t i = 0; i < grads.size() && !shared_grads; ++i) shared_grads = overlaps_grad(grads[i], i);
  // An input that shares memory with a gradient is read from a copy taken before any write.
  for (auto* list : {&l.p, &l.a, &l.f}) {
    for (size_t i = 0; i < list->size(); ++i) {
      if (overlaps_grad((*list)[i], SIZE_MAX)) (*list)[i] = (*list)[i].clone();
    }
  }
  if (shared_grads) {
    // Gradients that share memory are updated one after the other (in stream order on
    // CUDA): every update lands, as a sum of the terms.
    for (size_t i = 0; i < grads.size(); ++i) {
      std::vector<at::Tensor> out{grads[i].is_contiguous() ? grads[i] : grads[i].contiguous()};
      k(out, {l.p[i]}, {l.a[i]}, {l.f[i]}, lam, at::Tensor(), /*accumulate=*/true);
      if (!out[0].is_same(grads[i])) grads[i].copy_(out[0]);
    }
    return;
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
