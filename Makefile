# mtlkernels: every command from a fresh clone.
#   make test        build (CPU torch 2.13.0 in .venv) and run the test suite
#   make demo        the main job: the methods on bundled offline data, a results table
#   make bench       microbenchmarks on the device at hand, tables under benchmarks/results/
#   make cuda-check  build with CUDA (torch 2.14.1+cu130 in .venv-cuda) and check every op has a CUDA kernel
# With an existing Python that already has torch and the build tools (a GPU machine,
# no package index): `make test VENV=`, `make bench VENV=`, `make cuda-check CUDA_VENV=`.

VENV ?= .venv
CUDA_VENV ?= .venv-cuda
TORCH_CPU ?= torch==2.13.0
TORCH_CUDA ?= torch==2.14.1
TORCH_CUDA_ARCH_LIST ?= 8.0;9.0
TOOLS = numpy scikit-build-core pybind11 ninja cmake
EXTRAS = pytest hypothesis scikit-learn tqdm matplotlib cvxpy
PYTEST_ARGS ?=

PY = $(if $(VENV),$(abspath $(VENV))/bin/python,python3)
CUDA_PY = $(if $(CUDA_VENV),$(abspath $(CUDA_VENV))/bin/python,python3)
# Run installed code from outside the checkout, so that `import mtlkernels` finds the
# built package rather than the source folder (which has no compiled _C).
OUTSIDE = cd python_tests &&
# Build folder per environment, so CPU and CUDA builds never share a CMake cache.
BUILD_NAME ?= $(if $(VENV),$(notdir $(VENV)),system)
INSTALL = -m pip install --no-build-isolation --no-deps -q

.PHONY: all deps install test demo bench cuda-check clean
all: test

ifneq ($(VENV),)
$(VENV)/.deps: pyproject.toml
	python3 -m venv $(VENV)
	$(VENV)/bin/python -m pip install -q --upgrade pip
	$(VENV)/bin/python -m pip install -q $(TORCH_CPU) $(TOOLS) $(EXTRAS)
	touch $@
deps: $(VENV)/.deps
else
deps:
	@$(PY) -c "import torch, scikit_build_core, pybind11" || \
	  (echo "VENV= needs torch, scikit-build-core, pybind11, cmake and ninja in $(PY)"; exit 1)
endif

install: deps
	$(PY) $(INSTALL) -C build-dir=build/$(BUILD_NAME) .

test: install
	$(OUTSIDE) $(PY) -m pytest . $(PYTEST_ARGS)

demo: install
	$(OUTSIDE) $(PY) -m mtlkernels demo --out $(CURDIR)/results $(DEMO_ARGS)

bench: install
	$(OUTSIDE) $(PY) ../benchmarks/run_all.py $(BENCH_ARGS)

ifneq ($(CUDA_VENV),)
$(CUDA_VENV)/.deps: pyproject.toml
	python3 -m venv $(CUDA_VENV)
	$(CUDA_VENV)/bin/python -m pip install -q --upgrade pip
	$(CUDA_VENV)/bin/python -m pip install -q $(TORCH_CUDA) $(TOOLS)
	touch $@
cuda-deps: $(CUDA_VENV)/.deps
else
cuda-deps:
endif

cuda-check: cuda-deps
	MTLKERNELS_CUDA=ON TORCH_CUDA_ARCH_LIST="$(TORCH_CUDA_ARCH_LIST)" \
	  $(CUDA_PY) $(INSTALL) -C build-dir=build/cuda-$(if $(CUDA_VENV),$(notdir $(CUDA_VENV)),system) .
	$(OUTSIDE) $(CUDA_PY) ../tools/check_cuda_build.py

clean:
	rm -rf build
