# Locate a CUDA toolkit that can compile kernels against the torch in use.
#
# Handles three situations seen on this project's machines (see BUILD_NOTES.md):
#  - nvcc on PATH is a wrapper script: the real toolkit is found from `nvcc -v --dryrun`;
#  - the toolkit lacks the library headers torch's CUDA headers include (cublas_v2.h, ...):
#    they are taken from the CUDA torch wheel's nvidia runtime packages;
#  - a full toolkit (a GPU machine): used as it is.
function(mtlkernels_find_cuda out_ok out_why)
  set(${out_ok} OFF PARENT_SCOPE)
  if(CMAKE_CUDA_COMPILER)
    set(_nvcc "${CMAKE_CUDA_COMPILER}")
  else()
    find_program(_nvcc nvcc HINTS "$ENV{CUDA_HOME}/bin" "$ENV{CUDA_PATH}/bin" /usr/local/cuda/bin)
  endif()
  if(NOT _nvcc)
    set(${out_why} "nvcc was not found (set CUDA_HOME or CMAKE_CUDA_COMPILER)" PARENT_SCOPE)
    return()
  endif()
  execute_process(COMMAND "${_nvcc}" -v --dryrun mtlkernels_probe.cu
                  OUTPUT_VARIABLE _out ERROR_VARIABLE _err RESULT_VARIABLE _rc)
  string(REGEX MATCH "_HERE_=([^\r\n]*)" _m "${_out}${_err}")
  if(NOT CMAKE_MATCH_1)
    set(${out_why} "could not run ${_nvcc}" PARENT_SCOPE)
    return()
  endif()
  set(_bin "${CMAKE_MATCH_1}")
  get_filename_component(_root "${_bin}" DIRECTORY)
  set(CMAKE_CUDA_COMPILER "${_bin}/nvcc" CACHE FILEPATH "CUDA compiler" FORCE)
  set(CUDA_TOOLKIT_ROOT_DIR "${_root}" CACHE PATH "CUDA toolkit" FORCE)
  set(CUDAToolkit_ROOT "${_root}" CACHE PATH "CUDA toolkit" FORCE)

  if(NOT EXISTS "${_root}/include/cublas_v2.h")
    # A compiler-only toolkit: borrow the library headers from the torch wheel.
    execute_process(
      COMMAND "${Python_EXECUTABLE}" -c
        "import importlib.util as u, glob, os\nfor name in ('nvidia.cu13', 'nvidia.cu12', 'nvidia'):\n    try:\n        s = u.find_spec(name)\n    except ModuleNotFoundError:\n        s = None\n    if s and s.submodule_search_locations:\n        print(list(s.submodule_search_locations)[0]); break"
      OUTPUT_VARIABLE _nv OUTPUT_STRIP_TRAILING_WHITESPACE)
    if(_nv STREQUAL "" OR NOT EXISTS "${_nv}")
      set(${out_why} "the toolkit at ${_root} has no cublas_v2.h and no nvidia runtime wheel was found" PARENT_SCOPE)
      return()
    endif()
    file(GLOB _incs "${_nv}/include" "${_nv}/*/include")
    set(MTLKERNELS_EXTRA_CUDA_INCLUDE "${_incs}" PARENT_SCOPE)
    include_directories(${_incs})
    set(CMAKE_CUDA_FLAGS "${CMAKE_CUDA_FLAGS}" PARENT_SCOPE)
    message(STATUS "mtlkernels: CUDA library headers from ${_nv}")
  endif()
  message(STATUS "mtlkernels: CUDA toolkit ${_root}")
  set(${out_ok} ON PARENT_SCOPE)
endfunction()
