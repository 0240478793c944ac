# Which GPU architectures to compile the CUDA kernels for.
#
# mtlkernels_cuda_archs(<nvcc> <out_flags> <out_list> <out_why>)
#   The requested list is, in this order of preference:
#     1. TORCH_CUDA_ARCH_LIST from the environment ("8.0;9.0", "9.0a", "8.6+PTX",
#        separated by ';', ',' or spaces), as torch's own extensions read it;
#     2. the GPUs present (MTLKERNELS_GPU_CAPABILITIES, from torch.cuda);
#     3. MTLKERNELS_DEFAULT_CUDA_ARCHS ("8.0;9.0": A100 and H100/H200, with no GPU
#        to ask and no list given).
#   Entries the found nvcc cannot compile (`nvcc --list-gpu-arch`) are dropped with a
#   warning rather than failing late in nvcc (nvcc 13 no longer knows compute_50).
#   out_flags: -gencode flags (SASS for each, PTX too for "+PTX"); out_list: "sm_90,..."
#   for build_info(); out_flags is empty and out_why says why when nothing is left.
set(MTLKERNELS_DEFAULT_CUDA_ARCHS "8.0;9.0" CACHE STRING
    "CUDA architectures when TORCH_CUDA_ARCH_LIST is unset and no GPU is present")

function(mtlkernels_cuda_archs nvcc out_flags out_list out_why)
  if(NOT "$ENV{TORCH_CUDA_ARCH_LIST}" STREQUAL "")
    set(_req "$ENV{TORCH_CUDA_ARCH_LIST}")
    set(_from "TORCH_CUDA_ARCH_LIST")
  elseif(MTLKERNELS_GPU_CAPABILITIES)
    set(_req "${MTLKERNELS_GPU_CAPABILITIES}")
    set(_from "the GPUs present")
  else()
    set(_req "${MTLKERNELS_DEFAULT_CUDA_ARCHS}")
    set(_from "the default (no GPU present, TORCH_CUDA_ARCH_LIST unset)")
  endif()
  string(REGEX REPLACE "[ ,]+" ";" _req "${_req}")

  execute_process(COMMAND "${nvcc}" --list-gpu-arch OUTPUT_VARIABLE _supported ERROR_QUIET
                  RESULT_VARIABLE _rc)
  if(NOT _rc EQUAL 0)
    set(_supported "")
  endif()

  set(_flags "")
  set(_names "")
  foreach(_a IN LISTS _req)
    if(_a STREQUAL "")
      continue()
    endif()
    if(NOT _a MATCHES "^([0-9]+)\\.([0-9]+)([af]?)(\\+PTX)?$")
      message(FATAL_ERROR "mtlkernels: cannot read the CUDA architecture '${_a}' (from ${_from}); "
                          "write it as major.minor, e.g. 9.0, 9.0a or 8.6+PTX")
    endif()
    set(_cc "${CMAKE_MATCH_1}${CMAKE_MATCH_2}${CMAKE_MATCH_3}")
    set(_base "${CMAKE_MATCH_1}${CMAKE_MATCH_2}")
    set(_ptx "${CMAKE_MATCH_4}")
    if(_supported AND NOT _supported MATCHES "compute_${_base}([^0-9]|$)")
      message(WARNING "mtlkernels: ${nvcc} cannot compile for compute_${_base} (from ${_from}); skipped")
      continue()
    endif()
    list(APPEND _flags "-gencode=arch=compute_${_cc},code=sm_${_cc}")
    if(_ptx)
      list(APPEND _flags "-gencode=arch=compute_${_cc},code=compute_${_cc}")
    endif()
    list(APPEND _names "sm_${_cc}")
  endforeach()
  list(REMOVE_DUPLICATES _flags)
  list(REMOVE_DUPLICATES _names)
  list(JOIN _names "," _names)
  set(${out_flags} "${_flags}" PARENT_SCOPE)
  set(${out_list} "${_names}" PARENT_SCOPE)
  if(NOT _flags)
    set(${out_why} "none of the CUDA architectures '${_req}' (from ${_from}) is supported by ${nvcc}" PARENT_SCOPE)
  else()
    set(${out_why} "" PARENT_SCOPE)
  endif()
endfunction()
