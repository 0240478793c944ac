// CPU kernels of the CETL DWA penalty: a whole list of tensors in one parallel
// sweep over (tensor, chunk) work items. Sums accumulate in float64 in eight
// independent lanes (vectorisable) and are combined in work-item order, so the
// result does not depend on the thread schedule.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <atomic>
#include <vector>

#include "ops/dwa.h"

namespace mtlkernels {
namespace {

constexpr int64_t kChunk = 1 << 15;
constexpr int kLanes = 8;

struct Work {
  size_t t;
  int64_t b, e;
};

std::vector<Work> work_items(const std::vector<at::Tensor>& ts) {
  std::vector<Work> w;
  for (size_t t = 0; t < ts.size(); ++t) {
    const int64_t n = ts[t].numel();
    for (int64_t b = 0; b < n; b += kChunk) w.push_back({t, b, std::min(n, b + kChunk)});
  }
  return w;
}

template <typename T, bool Sum, bool Check>
double sum_range(const T* p, const T* a, const T* f, int64_t b, int64_t e, bool& bad) {
  double lane[kLanes] = {0};
  int nb[kLanes] = {0};
  auto one = [&](int64_t i, int j) {
    const T fv = f[i];
    if constexpr (Check) nb[j] |= !(fv >= T(0));
    if constexpr (Sum) {
      const T d = p[i] - a[i];
      lane[j] += static_cast<double>(fv * d) * d;
    }
  };
  int64_t i = b;
  for (; i + kLanes <= e; i += kLanes) {
    for (int j = 0; j < kLanes; ++j) one(i + j, j);
  }
  for (; i < e; ++i) one(i, 0);
  double s = 0;
  for (int j = 0; j < kLanes; ++j) {
    s += lane[j];
    bad = bad || nb[j];
  }
  return s;
}

template <typename T, bool Sum, bool Check>
double sum_list(const std::vector<at::Tensor>& p, const std::vector<at::Tensor>& a,
                const std::vector<at::Tensor>& f, bool& any_bad) {
  const auto items = work_items(f);
  std::atomic<bool> bad_flag{false};
  const double total = at::parallel_reduce(
      int64_t(0), static_cast<int64_t>(items.size()), int64_t(1), 0.0,
      [&](int64_t b, int64_t e, double acc) {
        bool bad = false;
        for (int64_t w = b; w < e; ++w) {
          const Work& it = items[w];
          const T* pp = Sum ? p[it.t].data_ptr<T>() : nullptr;
          const T* ap = Sum ? a[it.t].data_ptr<T>() : nullptr;
          acc += sum_range<T, Sum, Check>(pp, ap, f[it.t].data_ptr<T>(), it.b, it.e, bad);
        }
        if (bad) bad_flag.store(true, std::memory_order_relaxed);
        return acc;
      },
      [](double x, double y) { return x + y; });
  any_bad = bad_flag.load();
  return total;
}

at::Tensor dwa_sum_cpu(const std::vector<at::Tensor>& p, const std::vector<at::Tensor>& a,
                       const std::vector<at::Tensor>& f, at::Tensor& bad) {
  double total = 0;
  bool any_bad = false;
  AT_DISPATCH_FLOATING_TYPES(p[0].scalar_type(), "dwa_sum_cpu", [&] {
    total = bad.defined() ? sum_list<scalar_t, true, true>(p, a, f, any_bad)
                          : sum_list<scalar_t, true, false>(p, a, f, any_bad);
  });
  if (bad.defined() && any_bad) bad.fill_(1);
  return at::scalar_tensor(total, p[0].options().dtype(at::kDouble));
}

void dwa_check_cpu(const std::vector<at::Tensor>& f, at::Tensor& bad) {
  bool any_bad = false;
  AT_DISPATCH_FLOATING_TYPES(f[0].scalar_type(), "dwa_check_cpu",
                             [&] { sum_list<scalar_t, false, true>(f, f, f, any_bad); });
  if (any_bad) bad.fill_(1);
}

template <typename T, bool Acc>
void axpy_range(T* out, const T* p, const T* a, const T* f, int64_t b, int64_t e, T s) {
  for (int64_t i = b; i < e; ++i) {
    const T v = s * f[i] * (p[i] - a[i]);
    if constexpr (Acc) out[i] += v;
    else out[i] = v;
  }
}

void dwa_axpy_cpu(std::vector<at::Tensor>& out, const std::vector<at::Tensor>& p, const std::vector<at::Tensor>& a,
                  const std::vector<at::Tensor>& f, double lam, const at::Tensor& scale, bool accumulate) {
  const auto items = work_items(f);
  // T(lam * s) in double, as the CUDA kernel computes it (this file is compiled without
  // contraction into fused multiply-adds, see CMakeLists.txt, so the bits agree).
  AT_DISPATCH_FLOATING_TYPES(p[0].scalar_type(), "dwa_axpy_cpu", [&] {
    const double s = scale.defined() ? static_cast<double>(scale.item<scalar_t>()) : 1.0;
    const scalar_t sc = static_cast<scalar_t>(scale.defined() ? lam * s : lam);
    at::parallel_for(0, static_cast<int64_t>(items.size()), 1, [&](int64_t b, int64_t e) {
      for (int64_t w = b; w < e; ++w) {
        const Work& it = items[w];
        scalar_t* op = out[it.t].data_ptr<scalar_t>();
        const scalar_t* pp = p[it.t].data_ptr<scalar_t>();
        const scalar_t* ap = a[it.t].data_ptr<scalar_t>();
        const scalar_t* fp = f[it.t].data_ptr<scalar_t>();
        if (accumulate) axpy_range<scalar_t, true>(op, pp, ap, fp, it.b, it.e, sc);
        else axpy_range<scalar_t, false>(op, pp, ap, fp, it.b, it.e, sc);
      }
    });
  });
}

}  // namespace

TORCH_LIBRARY_IMPL(mtlkernels, CPU, m) { register_dwa<dwa_sum_cpu, dwa_axpy_cpu, dwa_check_cpu>(m); }

}  // namespace mtlkernels
