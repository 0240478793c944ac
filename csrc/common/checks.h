// Input validation shared by every op: clear errors instead of crashes or
// silent NaNs. Each message starts with the op's name.
#pragma once

#include <ATen/ATen.h>

namespace mtlkernels {

// float32 or float64 only.
inline void check_floating(const char* op, const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.defined(), op, ": ", name, " is undefined");
  TORCH_CHECK(t.scalar_type() == at::kFloat || t.scalar_type() == at::kDouble, op, ": ", name,
              " must be float32 or float64, got ", t.scalar_type());
}

inline void check_same_device(const char* op, const at::Tensor& a, const char* an, const at::Tensor& b,
                              const char* bn) {
  TORCH_CHECK(a.device() == b.device(), op, ": ", an, " is on ", a.device(), " but ", bn, " is on ",
              b.device(), "; move them to one device");
}

inline void check_same_dtype(const char* op, const at::Tensor& a, const char* an, const at::Tensor& b,
                             const char* bn) {
  TORCH_CHECK(a.scalar_type() == b.scalar_type(), op, ": ", an, " is ", a.scalar_type(), " but ", bn,
              " is ", b.scalar_type());
}

inline void check_same_shape(const char* op, const at::Tensor& a, const char* an, const at::Tensor& b,
                             const char* bn) {
  TORCH_CHECK(a.sizes() == b.sizes(), op, ": ", an, " has shape ", a.sizes(), " but ", bn, " has shape ",
              b.sizes());
}

// A finite, non-negative scalar hyper-parameter.
inline void check_nonneg_scalar(const char* op, double v, const char* name) {
  TORCH_CHECK(std::isfinite(v) && v >= 0, op, ": ", name, " must be finite and non-negative, got ", v);
}

// All entries >= 0 and none NaN. On CUDA this reads one boolean back (a sync).
inline void check_nonneg_tensor(const char* op, const at::Tensor& t, const char* name) {
  if (t.numel() == 0) return;
  TORCH_CHECK(at::is_floating_point(t) || at::isIntegralType(t.scalar_type(), /*includeBool=*/false), op,
              ": ", name, " must be a real number tensor, got ", t.scalar_type());
  TORCH_CHECK((t >= 0).all().item<bool>(), op, ": ", name,
              " must be non-negative (and not NaN) everywhere");
}

}  // namespace mtlkernels
