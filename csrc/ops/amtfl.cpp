// AMTFL family: schema and the device-independent, chunked fused forward+backward.
// Kernels: csrc/ops/cpu/amtfl_kernel.cpp, csrc/ops/cuda/amtfl_kernel.cu.
// Python bridge: mtlkernels/ops/amtfl.py. Reference: mtlkernels/reference/amtfl.py.
#include "ops/amtfl.h"

#include <algorithm>

#include "common/checks.h"

namespace mtlkernels {

TORCH_LIBRARY_FRAGMENT(mtlkernels, m) {
  m.def("amtfl_reconstruction(Tensor Z, Tensor W, Tensor A, Tensor? bias, bool grad_Z, bool grad_W, "
        "bool grad_A, bool grad_bias) -> (Tensor, Tensor, Tensor, Tensor, Tensor)");
}

namespace {

constexpr const char* kOp = "amtfl_reconstruction";

void check_matrix(const at::Tensor& t, const char* name, const char* shape) {
  check_floating(kOp, t, name);
  TORCH_CHECK(t.dim() == 2, kOp, ": ", name, " must be a matrix of shape ", shape, ", got shape ", t.sizes());
}

}  // namespace

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> amtfl_reconstruction_entry(
    AmtflResidualKernel kernel, AmtflChunkRows chunk_rows, const at::Tensor& Z, const at::Tensor& W,
    const at::Tensor& A, const std::optional<at::Tensor>& bias_opt, bool grad_Z, bool grad_W, bool grad_A,
    bool grad_bias) {
  check_matrix(Z, "Z", "(N, k)");
  check_matrix(W, "W", "(k, T)");
  check_matrix(A, "A", "(T, k)");
  for (const auto& [t, name] : {std::pair{&W, "W"}, std::pair{&A, "A"}}) {
    check_same_device(kOp, Z, "Z", *t, name);
    check_same_dtype(kOp, Z, "Z", *t, name);
  }
  const int64_t N = Z.size(0), k = Z.size(1), T = W.size(1);
  TORCH_CHECK(W.size(0) == k, kOp, ": W must have shape (k, T) with k = Z.size(1) = ", k, ", got W of shape ",
              W.sizes());
  TORCH_CHECK(A.size(0) == T && A.size(1) == k, kOp, ": A must have shape (T, k) = (", T, ", ", k,
              ") to map the task outputs Z W back to the features, got A of shape ", A.sizes());
  at::Tensor bias;
  if (bias_opt.has_value() && bias_opt->defined()) {
    bias = *bias_opt;
    check_floating(kOp, bias, "bias");
    check_same_device(kOp, Z, "Z", bias, "bias");
    check_same_dtype(kOp, Z, "Z", bias, "bias");
    TORCH_CHECK(bias.dim() == 1 && bias.size(0) == k, kOp, ": bias must have shape (k,) = (", k,
                ",), got shape ", bias.sizes());
    bias = bias.contiguous();
  }
  TORCH_CHECK(!grad_bias || bias.defined(), kOp, ": grad_bias requested without a bias");

  const auto opts = Z.options();
  const auto dopts = opts.dtype(at::kDouble);
  const at::Tensor Zc = Z.contiguous(), Wc = W.contiguous(), Ac = A.contiguous();
  at::Tensor loss_acc = at::zeros({}, dopts);
  at::Tensor dZ = grad_Z ? at::empty({N, k}, opts) : at::empty({0}, opts);
  at::Tensor dW = grad_W ? at::zeros({k, T}, opts) : at::empty({0}, opts);
  at::Tensor dA = grad_A ? at::zeros({T, k}, opts) : at::empty({0}, opts);
  at::Tensor db_acc = grad_bias ? at::zeros({k}, dopts) : at::Tensor();
  const bool want_g = grad_Z || grad_W || grad_A || grad_bias;
  const bool want_dH = grad_Z || grad_W;

  if (N > 0) {
    const int64_t B = std::clamp<int64_t>(chunk_rows(N, k, T), 1, N);
    at::Tensor Hbuf = at::empty({B, T}, opts);  // H = Z_b W, later dH = G A^T
    at::Tensor Pbuf = at::empty({B, k}, opts);  // P = H A, later G
    const at::Tensor At = Ac.t(), Wt = Wc.t();
    for (int64_t r0 = 0; r0 < N; r0 += B) {
      const int64_t b = std::min(B, N - r0);
      const at::Tensor Zb = Zc.narrow(0, r0, b);
      at::Tensor Hb = Hbuf.narrow(0, 0, b);
      at::Tensor Pb = Pbuf.narrow(0, 0, b);
      at::mm_out(Hb, Zb, Wc);
      at::mm_out(Pb, Hb, Ac);
      at::Tensor dZb = grad_Z ? dZ.narrow(0, r0, b) : at::Tensor();
      kernel(Pb, Zb, bias, want_g, dZb, loss_acc, db_acc);
      if (grad_A) dA.addmm_(Hb.t(), Pb);  // dA += H^T G
      if (want_dH) {
        at::mm_out(Hb, Pb, At);                  // dH = G A^T (H is no longer needed)
        if (grad_W) dW.addmm_(Zb.t(), Hb);       // dW += Z^T dH
        if (grad_Z) dZb.addmm_(Hb, Wt);          // dZ = dH W^T - 2 R
      }
    }
  }
  at::Tensor loss = loss_acc.to(Z.scalar_type());
  at::Tensor db = grad_bias ? db_acc.to(Z.scalar_type()) : at::empty({0}, opts);
  return {loss, dZ, dW, dA, db};
}

}  // namespace mtlkernels
