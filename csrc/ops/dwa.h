// CETL family: the Dynamic Weight Allocation penalty (Chen et al. 2018 (CETL), eq. 11),
//
//   DWA = sum_i lam/2 * GFI_i * (theta_i - theta*_i)^2,
//
// summed over every element of every tensor of a list (the parameters of a
// network), with its gradient lam * GFI * (theta - theta*). Each device kernel
// handles a whole list in one multi-tensor sweep (CPU: parallel over (tensor,
// chunk) work items; CUDA: one launch per batch of up to 64 tensors).
//
// The schemas and the device-independent entry points (validation, contiguity,
// in-place handling) live in dwa.cpp; each device provides the kernels below and
// registers the entry points with register_dwa<...>() in its TORCH_LIBRARY_IMPL.
#pragma once

#include <ATen/ATen.h>
#include <torch/library.h>

#include <vector>

namespace mtlkernels {

// Lists of equal length; index i holds contiguous tensors of one shape; every
// tensor has one dtype (float32 or float64) and one device.
//
// Sum kernel: returns sum_i sum_j F_ij (p_ij - a_ij)^2 as a 0-dim float64 tensor
// on the device. When `bad` is defined (a 0-dim int32 tensor on the device, zero on
// entry), it is set to a non-zero value if any F_ij is negative or NaN.
using DwaSumKernel = at::Tensor (*)(const std::vector<at::Tensor>& p, const std::vector<at::Tensor>& a,
                                    const std::vector<at::Tensor>& f, at::Tensor& bad);

// Axpy kernel: out_i = (accumulate ? out_i : 0) + lam * s * F_i * (p_i - a_i), where
// s = *scale (a 0-dim tensor on the device, read by the kernel: no host sync) or 1
// when `scale` is undefined. out_i may be any of the inputs' shape, contiguous.
using DwaAxpyKernel = void (*)(std::vector<at::Tensor>& out, const std::vector<at::Tensor>& p,
                               const std::vector<at::Tensor>& a, const std::vector<at::Tensor>& f, double lam,
                               const at::Tensor& scale, bool accumulate);

// Check kernel: sets `bad` (as above) if any F_ij is negative or NaN.
using DwaCheckKernel = void (*)(const std::vector<at::Tensor>& f, at::Tensor& bad);

// ---- entry points (dwa.cpp) -------------------------------------------------
at::Tensor dwa_penalty_entry(DwaSumKernel k, at::TensorList params, at::TensorList anchors,
                             at::TensorList importance, double lam, bool check);
std::vector<at::Tensor> dwa_penalty_backward_entry(DwaAxpyKernel k, const at::Tensor& grad,
                                                   at::TensorList params, at::TensorList anchors,
                                                   at::TensorList importance, double lam);
void dwa_grad_inplace_entry(DwaAxpyKernel k, DwaCheckKernel c, at::TensorList grads, at::TensorList params,
                            at::TensorList anchors, at::TensorList importance, double lam, bool check);

template <DwaSumKernel S, DwaAxpyKernel X, DwaCheckKernel C>
void register_dwa(torch::Library& m) {
  m.impl("dwa_penalty", [](at::TensorList p, at::TensorList a, at::TensorList f, double lam, bool check) {
    return dwa_penalty_entry(S, p, a, f, lam, check);
  });
  m.impl("dwa_penalty_backward",
         [](const at::Tensor& g, at::TensorList p, at::TensorList a, at::TensorList f, double lam) {
           return dwa_penalty_backward_entry(X, g, p, a, f, lam);
         });
  m.impl("dwa_grad_", [](at::TensorList grads, at::TensorList p, at::TensorList a, at::TensorList f, double lam,
                         bool check) { dwa_grad_inplace_entry(X, C, grads, p, a, f, lam, check); });
}

}  // namespace mtlkernels
