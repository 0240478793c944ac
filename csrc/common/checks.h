// Input validation shared by every op: clear errors instead of crashes or
// silent NaNs. Each message starts with the op's name. The Python bridges
// (mtlkernels/ops/_checks.py and the families' validators) apply the same
// metadata rules before calling an op, and the fake kernels too; the value
// checks (a read of tensor data) live here only.
#pragma once

#include <ATen/ATen.h>
#include <ATen/MemoryOverlap.h>

#include <cmath>
#include <limits>

namespace mtlkernels {

// float32 or float64 only.
inline void check_floating(const char* op, const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.defined(), op, ": ", name, " is undefined");
  TORCH_CHECK(t.scalar_type() == at::kFloat || t.scalar_type() == at::kDouble, op, ": ", name,
              " must be float32 or float64, got ", t.scalar_type());
}

inline bool is_half(at::ScalarType s) { return s == at::kHalf || s == at::kBFloat16; }

// The tensor an in-place op writes: float32 or float64, or float16 / bfloat16
// (computed in float32 and written back), and one memory location per element.
inline void check_writable(const char* op, const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.defined(), op, ": ", name, " is undefined");
  TORCH_CHECK(t.scalar_type() == at::kFloat || t.scalar_type() == at::kDouble || is_half(t.scalar_type()), op,
              ": ", name, " must be float32 or float64 (or float16 / bfloat16, computed in float32), got ",
              t.scalar_type());
  TORCH_CHECK(at::has_internal_overlap(t) != at::MemOverlap::Yes, op, ": several elements of ", name,
              " share one memory location (an expanded or stride-0 view), so it cannot be written in place; "
              "pass ", name, ".clone()");
}

// Largest finite value of float32 or float64.
inline double dtype_max(at::ScalarType s) {
  return s == at::kDouble ? std::numeric_limits<double>::max() : double(std::numeric_limits<float>::max());
}

// v rounded to float32 or float64.
inline double round_to(at::ScalarType s, double v) { return s == at::kDouble ? v : double(static_cast<float>(v)); }

// An input of an in-place op that shares memory with the tensor it writes: a private
// copy, so that every value is read before it is overwritten (the op then equals its
// out-of-place form). Inputs in other storage are returned as they are.
inline at::Tensor unaliased(const at::Tensor& t, const at::Tensor& written) {
  if (!t.defined() || !written.defined() || t.numel() == 0 || written.numel() == 0) return t;
  if (!t.has_storage() || !written.has_storage() || !t.storage().is_alias_of(written.storage())) return t;
  return at::get_overlap_status(t, written) == at::MemOverlapStatus::No ? t : t.clone();
}

// True when a and b may share a memory location.
inline bool may_overlap(const at::Tensor& a, const at::Tensor& b) {
  if (a.numel() == 0 || b.numel() == 0 || !a.has_storage() || !b.has_storage()) return false;
  if (!a.storage().is_alias_of(b.storage())) return false;
  return at::get_overlap_status(a, b) != at::MemOverlapStatus::No;
}

inline void check_same_device(const char* op, const at::Tensor& a, const char* an, const at::Tensor& b,
                              const char* bn) {
  TORCH_CHECK(a.device() == b.device(), op, ": ", an, " is on ", a.device(), " but ", bn, " is on ",
              b.device(), "; move them to one device");
}

inline void check_same_dtype(const char* op, const at::Tensor& a, const char* an, const at::Tensor& b,
                             const char* bn) {
  TORCH_CHECK(a.scalar_type() == b.scalar_type(), op, ": ", an, " is ", a.scalar_type(), " but ", bn, " is ",
              b.scalar_type());
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

// A tensor of real numbers: floating or integer, not bool or complex.
inline void check_real(const char* op, const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.defined(), op, ": ", name, " is undefined");
  TORCH_CHECK(at::isFloatingType(t.scalar_type()) || at::isIntegralType(t.scalar_type(), /*includeBool=*/false),
              op, ": ", name, " must be a real-valued (floating or integer) tensor, got ", t.scalar_type());
}

// All entries >= 0 and none NaN. On CUDA this reads one boolean back (a sync).
inline void check_nonneg_tensor(const char* op, const at::Tensor& t, const char* name) {
  check_real(op, t, name);
  if (t.numel() == 0) return;
  TORCH_CHECK((t >= 0).all().item<bool>(), op, ": ", name,
              " must be non-negative (and not NaN) everywhere");
}

}  // namespace mtlkernels
