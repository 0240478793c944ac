# The torch to build against, described by the building Python itself.
#
# Why not find_package(Torch): TorchConfig.cmake of a CUDA build of torch insists on a
# full CUDA toolkit even when no CUDA code is compiled (a CPU-only build against the
# CUDA wheels fails), and it turns an unset TORCH_CUDA_ARCH_LIST into a list of
# architectures the installed nvcc may reject (compute_50 with nvcc 13). A TORCH_LIBRARY
# extension needs only torch's headers, its libraries and its C++ ABI flag; this file
# takes those from `import torch` and nothing else.
#
# mtlkernels_torch_info()   sets MTLKERNELS_TORCH_VERSION, MTLKERNELS_TORCH_CUDA ("" for
#                           a CPU build of torch), MTLKERNELS_TORCH_DIR,
#                           MTLKERNELS_TORCH_CXX11_ABI and MTLKERNELS_GPU_CAPABILITIES (the
#                           GPUs present, e.g. "9.0", "" without any) and
#                           MTLKERNELS_TORCH_LIBSTDCXX (the libstdc++ shared library the
#                           process loaded with torch, "" where none is seen); fails at once
#                           with the fix when torch cannot be imported.
# mtlkernels_torch_target(<name> <with_cuda>)
#                           an INTERFACE target with torch's headers, libraries and flags.

function(mtlkernels_torch_info)
  execute_process(
    COMMAND "${Python_EXECUTABLE}" -c [=[
import torch
caps = []
if torch.version.cuda:
    try:
        caps = sorted({"%d.%d" % torch.cuda.get_device_capability(i) for i in range(torch.cuda.device_count())})
    except Exception:
        caps = []
import os
libstdcxx = "-"
if os.path.exists("/proc/self/maps"):
    with open("/proc/self/maps") as maps:
        paths = [line.split()[-1] for line in maps if "/libstdc++.so" in line]
    libstdcxx = os.path.realpath(paths[0]) if paths else "-"
print(torch.__version__)
print(torch.version.cuda or "")
print(os.path.dirname(torch.__file__))
print(int(torch._C._GLIBCXX_USE_CXX11_ABI))
print(libstdcxx)
print(",".join(caps))
]=]
    OUTPUT_VARIABLE _out ERROR_VARIABLE _err OUTPUT_STRIP_TRAILING_WHITESPACE
    RESULT_VARIABLE _rc)
  if(NOT _rc EQUAL 0)
    message(FATAL_ERROR
      "mtlkernels: cannot import torch with ${Python_EXECUTABLE}:\n${_err}\n"
      "mtlkernels is compiled against the torch you will run it with. Install torch first, then "
      "build without pip's build isolation: `pip install --no-build-isolation .`")
  endif()
  string(REPLACE "\n" ";" _out "${_out}")
  list(LENGTH _out _n)
  if(_n LESS 5)
    message(FATAL_ERROR "mtlkernels: unexpected answer from torch: ${_out}")
  endif()
  list(GET _out 0 _ver)
  list(GET _out 1 _cuda)
  list(GET _out 2 _dir)
  list(GET _out 3 _abi)
  list(GET _out 4 _libstdcxx)
  if(_libstdcxx STREQUAL "-")
    set(_libstdcxx "")
  endif()
  set(_caps "")
  if(_n GREATER 5)
    list(GET _out 5 _caps)
    string(REPLACE "," ";" _caps "${_caps}")
  endif()
  set(MTLKERNELS_TORCH_VERSION "${_ver}" PARENT_SCOPE)
  set(MTLKERNELS_TORCH_CUDA "${_cuda}" PARENT_SCOPE)
  set(MTLKERNELS_TORCH_DIR "${_dir}" PARENT_SCOPE)
  set(MTLKERNELS_TORCH_CXX11_ABI "${_abi}" PARENT_SCOPE)
  set(MTLKERNELS_GPU_CAPABILITIES "${_caps}" PARENT_SCOPE)
  set(MTLKERNELS_TORCH_LIBSTDCXX "${_libstdcxx}" PARENT_SCOPE)
endfunction()

function(mtlkernels_torch_target name with_cuda)
  set(_lib "${MTLKERNELS_TORCH_DIR}/lib")
  set(_libs c10 torch_cpu torch)
  if(with_cuda)
    list(APPEND _libs c10_cuda torch_cuda)
  endif()
  add_library(${name} INTERFACE)
  target_include_directories(${name} SYSTEM INTERFACE
    "${MTLKERNELS_TORCH_DIR}/include"
    "${MTLKERNELS_TORCH_DIR}/include/torch/csrc/api/include")
  target_compile_definitions(${name} INTERFACE _GLIBCXX_USE_CXX11_ABI=${MTLKERNELS_TORCH_CXX11_ABI})
  foreach(_l IN LISTS _libs)
    find_library(_path_${_l} NAMES ${_l} PATHS "${_lib}" NO_DEFAULT_PATH REQUIRED)
    target_link_libraries(${name} INTERFACE "${_path_${_l}}")
  endforeach()
  # The C++ runtime torch runs with: `-lstdc++`, which the compiler adds, takes the first
  # directory holding libstdc++.so or libstdc++.a, and with a relocated gcc (the GPU
  # machines' /opt/gcc, whose libstdc++.so is a dangling relative link) that is the archive:
  # _C then carries its own copy of the C++ library beside the shared one torch loaded, and
  # the two disagree on the locale's facets: formatting a number into an error message
  # crashed (gcc 13) or dropped the number (gcc 12). A directory of ours, searched first,
  # holds libstdc++.so -> torch's. (Naming the library on the link line is not enough: with
  # -flto the references made after code generation still went to the archive.)
  # test_build.py checks that _C defines no std:: code.
  if(MTLKERNELS_TORCH_LIBSTDCXX AND CMAKE_CXX_COMPILER_ID MATCHES "GNU|Clang")
    set(_rt "${CMAKE_BINARY_DIR}/cxx-runtime")
    file(MAKE_DIRECTORY "${_rt}")
    file(CREATE_LINK "${MTLKERNELS_TORCH_LIBSTDCXX}" "${_rt}/libstdc++.so" SYMBOLIC)
    target_link_directories(${name} INTERFACE "${_rt}")
  endif()
endfunction()
