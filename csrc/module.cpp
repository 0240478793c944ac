// The _C extension module: importing it registers every op of the `mtlkernels`
// namespace (the TORCH_LIBRARY_FRAGMENT / TORCH_LIBRARY_IMPL blocks in csrc/ops/
// run as static initialisers), and it exposes build_info().
#include <c10/util/Exception.h>
#include <pybind11/pybind11.h>

#include <string>

#ifndef MTLKERNELS_VERSION
#define MTLKERNELS_VERSION "unknown"
#endif

namespace py = pybind11;

namespace {

py::dict build_info() {
  py::dict info;
  info["version"] = MTLKERNELS_VERSION;
  info["torch_version"] = MTLKERNELS_TORCH_VERSION;
#ifdef MTLKERNELS_WITH_CUDA
  info["cuda"] = true;
  info["cuda_version"] = MTLKERNELS_CUDA_VERSION;
  info["cuda_archs"] = MTLKERNELS_CUDA_ARCHS;
#else
  info["cuda"] = false;
  info["cuda_version"] = py::none();
  info["cuda_archs"] = py::none();
#endif
#ifdef MTLKERNELS_OPENMP
  info["openmp"] = true;
#else
  info["openmp"] = false;
#endif
  info["cxx_standard"] = std::to_string(__cplusplus);
  return info;
}

// For tools/diagnose_exceptions.py: a c10::Error raised in this library and caught in it
// (unwinding within our frames only), and one that leaves through pybind11 (our frames
// and pybind11's, no dispatcher), to tell which layer fails when an op's error crashes.
std::string throw_and_catch() {
  try {
    TORCH_CHECK(false, "mtlkernels: diagnostic error");
  } catch (const c10::Error& e) {
    return e.what_without_backtrace();
  }
  return "";
}

void throw_error() { TORCH_CHECK(false, "mtlkernels: diagnostic error"); }

}  // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() = "mtlkernels native ops (registered in torch.ops.mtlkernels on import)";
  m.def("build_info", &build_info,
        "How this extension was built: package and torch versions, CUDA, OpenMP.");
  m.def("_throw_and_catch", &throw_and_catch, "Diagnostics: raise and catch a c10::Error inside _C.");
  m.def("_throw", &throw_error, "Diagnostics: raise a c10::Error out through pybind11.");
}
