// AMTFL family: the feature-reconstruction term of (Deep-)AMTFL (Lee et al. 2018,
// eqs. 6 and 7),
//
//   loss = || relu(Z W A + 1 b^T) - Z ||_F^2,
//
// with Z (N, k) the features, W (k, T) the task weights (so Z W are the task
// outputs), A (T, k) the feedback weights and b (k) an optional bias.
//
// Forward and backward are fused: when gradients are requested, the op computes
// them in the same sweep over row chunks of Z that computes the loss, so no
// N x T or N x k intermediate is ever kept whole; only dZ (N x k, an output) is.
// The GEMMs are ATen's (BLAS / cuBLAS) on chunk-sized buffers; the elementwise
// part (bias, relu, residual, mask, squared-norm and bias-gradient reductions) is
// one pass over each chunk by the device's residual kernel.
//
// The chunk loop lives in amtfl.cpp (device-independent); each device provides the
// residual kernel and its chunk-size rule and registers the entry point with
// register_amtfl<...>() in its TORCH_LIBRARY_IMPL block.
#pragma once

#include <ATen/ATen.h>
#include <torch/library.h>

#include <tuple>

namespace mtlkernels {

// One chunk of B rows, all contiguous:
//   P (B, k): on entry Z_b W A (without the bias). If want_g, on exit the
//             gradient G = 2 R * 1[relu(P + b) > 0] with R = relu(P + b) - Z_b.
//   Z (B, k): the features of the chunk.
//   bias (k): or undefined.
//   dZ (B, k): undefined, or receives -2 R (the direct term of dloss/dZ).
//   loss_acc: 0-dim float64 on the device; += sum R^2.
//   db_acc (k): float64 on the device, or undefined; += column sums of G.
using AmtflResidualKernel = void (*)(at::Tensor& P, const at::Tensor& Z, const at::Tensor& bias, bool want_g,
                                     at::Tensor& dZ, at::Tensor& loss_acc, at::Tensor& db_acc);

// Rows per chunk for an (N, k) x (k, T) problem on this device.
using AmtflChunkRows = int64_t (*)(int64_t N, int64_t k, int64_t T);

// Returns (loss, dZ, dW, dA, dbias): loss is 0-dim (dtype of Z); a gradient that
// was not requested is an empty (0,) tensor. Gradients are those of `loss` itself
// (an upstream gradient of 1).
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> amtfl_reconstruction_entry(
    AmtflResidualKernel kernel, AmtflChunkRows chunk_rows, const at::Tensor& Z, const at::Tensor& W,
    const at::Tensor& A, const std::optional<at::Tensor>& bias, bool grad_Z, bool grad_W, bool grad_A,
    bool grad_bias);

template <AmtflResidualKernel K, AmtflChunkRows C>
void register_amtfl(torch::Library& m) {
  m.impl("amtfl_reconstruction", [](const at::Tensor& Z, const at::Tensor& W, const at::Tensor& A,
                                    const std::optional<at::Tensor>& bias, bool gZ, bool gW, bool gA, bool gb) {
    return amtfl_reconstruction_entry(K, C, Z, W, A, bias, gZ, gW, gA, gb);
  });
}

}  // namespace mtlkernels
