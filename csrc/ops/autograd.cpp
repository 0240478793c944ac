// Autograd-key kernels of the ops that autograd cannot differentiate through, so
// that they behave as torch's own ops do also when called through torch.ops.mtlkernels
// (the Python bridge registers the formulas of the differentiable ops).
//
// In-place solver steps (soft_threshold_, ..., dwa_grad_): with grad mode on, an
// argument that requires grad is refused (a leaf written in place, as torch refuses
// it; any other: no derivative is defined); under torch.no_grad() they run, and the
// version counter of every tensor they write is bumped, so that a graph which saved
// one of them fails at backward instead of using the new values.
//
// _spectral_route (an int64 diagnostic): run below autograd, whatever requires grad.
#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/library.h>

#include <vector>

namespace mtlkernels {
namespace {

template <typename F>
void for_each_tensor(const c10::IValue& v, const F& f) {
  if (v.isTensor()) {
    f(v.toTensor());
  } else if (v.isTensorList()) {
    for (const at::Tensor& t : v.toTensorVector()) f(t);
  } else if (v.isOptionalTensorList()) {
    for (const auto& t : v.toOptionalTensorList()) {
      const std::optional<at::Tensor> o = t;
      if (o.has_value()) f(*o);
    }
  }
}

void inplace_solver_step(const c10::OperatorHandle& op, torch::jit::Stack* stack) {
  const auto& schema = op.schema();
  const auto& args = schema.arguments();
  const size_t n = args.size();
  const std::string name = schema.operator_name().name.substr(schema.operator_name().name.find("::") + 2);
  std::vector<at::Tensor> written;
  const auto first = stack->size() - n;
  const bool grad_mode = at::GradMode::is_enabled();
  for (size_t i = 0; i < n; ++i) {
    const bool writes = args[i].alias_info() != nullptr && args[i].alias_info()->isWrite();
    for_each_tensor((*stack)[first + i], [&](const at::Tensor& t) {
      if (!t.defined()) return;
      if (writes) {
        TORCH_CHECK(!t.is_inference(), name, ": ", args[i].name(),
                    " is an inference tensor: it cannot be updated in place outside InferenceMode");
        written.push_back(t);
      }
      if (!grad_mode || !t.requires_grad()) return;
      TORCH_CHECK(!(writes && t.is_leaf()), name, ": ", args[i].name(),
                  " is a leaf tensor that requires grad, which cannot be modified in place while grad mode is on; "
                  "call it under torch.no_grad() (as an optimizer step does)");
      TORCH_CHECK(false, name, " is an in-place proximal solver step and has no derivative, but ", args[i].name(),
                  " requires grad; call it under torch.no_grad() or on detached tensors");
    });
  }
  {
    at::AutoDispatchBelowADInplaceOrView guard;
    op.callBoxed(stack);
  }
  for (const at::Tensor& t : written) t.unsafeGetTensorImpl()->bump_version();
}

void below_autograd(const c10::OperatorHandle& op, torch::jit::Stack* stack) {
  at::AutoDispatchBelowADInplaceOrView guard;
  op.callBoxed(stack);
}

}  // namespace

TORCH_LIBRARY_IMPL(mtlkernels, Autograd, m) {
  for (const char* name : {"soft_threshold_", "elastic_net_prox_", "prox_grad_step_", "group_soft_threshold_",
                           "group_prox_grad_step_", "dwa_grad_"}) {
    m.impl(name, torch::CppFunction::makeFromBoxedFunction<&inplace_solver_step>());
  }
  m.impl("_spectral_route", torch::CppFunction::makeFromBoxedFunction<&below_autograd>());
}

}  // namespace mtlkernels
