// CPU kernels of the nuclear-norm family.
//
// The symmetric eigensolver of the Gram route is LAPACK's (syevd through
// at::linalg_eigh / eigvalsh). ATen loops over a batch serially, one small LAPACK
// call after another; here the batch is split over the intra-op threads
// (at::parallel_for), each running LAPACK sequentially on its slice. With fewer
// matrices than threads the whole batch goes to one call, so that LAPACK threads
// inside each (large) matrix instead.
//
// The CPU has no fused small-matrix route: for every k the Gram route (a batched
// GEMM, this eigensolver, one more GEMM) is cheaper than LAPACK's SVD, which stays
// the exact route for the matrices the accuracy rule rejects (see nuclear.cpp).
#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdint>
#include <limits>

#include "ops/nuclear.h"

namespace mtlkernels {
namespace {

std::tuple<at::Tensor, at::Tensor> sym_eig_cpu(const at::Tensor& G, bool want_vectors) {
  const int64_t b = G.size(0), k = G.size(1);
  at::Tensor w = at::empty({b, k}, G.options());
  // Batched column-major, the layout LAPACK writes: the out= calls below fill their
  // slices in place, without a copy.
  at::Tensor V = want_vectors ? at::empty_strided({b, k, k}, {k * k, 1, k}, G.options()) : at::Tensor();
  if (b == 0 || k == 0) return {w, V};
  auto run = [&](int64_t b0, int64_t b1) {
    const at::Tensor g = G.narrow(0, b0, b1 - b0);
    at::Tensor ws = w.narrow(0, b0, b1 - b0);
    if (want_vectors) {
      at::Tensor vs = V.narrow(0, b0, b1 - b0);
      at::linalg_eigh_out(ws, vs, g);
    } else {
      at::linalg_eigvalsh_out(ws, g);
    }
  };
  const int64_t threads = at::get_num_threads();
  if (threads <= 1 || b < 2 * threads) {
    run(0, b);
  } else {
    // Slices of a few matrices each: LAPACK's per-call overhead is amortised and the
    // threads stay balanced.
    at::parallel_for(0, b, std::max<int64_t>(1, b / (8 * threads)), run);
  }
  return {w, V};
}

bool no_small_route_cpu(const at::Tensor&, const SpectralArgs&, at::Tensor&) { return false; }

int64_t max_gram_k_cpu() { return std::numeric_limits<int64_t>::max(); }

}  // namespace

TORCH_LIBRARY_IMPL(mtlkernels, CPU, m) {
  register_nuclear<sym_eig_cpu, no_small_route_cpu, max_gram_k_cpu>(m);
}

}  // namespace mtlkernels
