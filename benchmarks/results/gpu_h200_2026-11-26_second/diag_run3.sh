#!/bin/bash
export PYTHONUNBUFFERED=1
exec > >(tee $OUT/diag2.log) 2>&1
t0=$(date +%s)
el() { echo "---- elapsed $(( $(date +%s) - t0 )) s"; }
MTLKERNELS_CUDA=ON TORCH_CUDA_ARCH_LIST=9.0 CMAKE_BUILD_PARALLEL_LEVEL=16 python3 -m pip install --no-build-isolation --no-deps -q -e . -C build-dir=build/diag2 > $OUT/build.log 2>&1 || { grep -n -i "error" $OUT/build.log | head -30; exit 1; }
el
cd python_tests
python3 -c "import mtlkernels; print(mtlkernels.build_info())"
CASE='import torch, mtlkernels
with torch._C._AutoDispatchBelowAutograd():
    try:
        torch.ops.mtlkernels.amtfl_reconstruction(torch.rand(5, dtype=torch.float64), torch.rand(5, 3, dtype=torch.float64), torch.rand(3, 5, dtype=torch.float64), None, False, False, False, False)
    except RuntimeError as e: print("OK RuntimeError", str(e)[:100])'
python3 -c "$CASE"; echo "below_autograd rc=$?"
timeout 60 python3 -m pytest -q -p no:cacheprovider -m cuda test_op_safety.py 2>&1 | tail -8; el
timeout 70 python3 -m pytest -q -p no:cacheprovider -m cuda test_nuclear.py -k "outside_shared or side_stream or host_syncs or workspace_in_chunks" test_shrinkage.py::test_host_syncs_per_call 2>&1 | tail -15; el
cd ..
timeout 40 python3 diag/diag2.py; el
cd diag && g++ -O0 -shared -fPIC $(python3 -m pybind11 --includes) pbdummy.cpp -o pbdummy$(python3 -c "import sysconfig;print(sysconfig.get_config_var('EXT_SUFFIX'))") && python3 -c "import pybind11; print('pybind11', pybind11.__version__)"
TOP='import torch
@torch.library.custom_op("diag_only::mm", mutates_args=())
def mm(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.mm(a, b)
try:
    torch.ops.diag_only.mm(torch.ones(2, 3), torch.ones(2, 3))
except RuntimeError as e: print("OK RuntimeError", str(e)[:80])'
python3 -c "$TOP"; echo "torch only rc=$?"
python3 -c "import pbdummy
$TOP"; echo "after a pybind11 module rc=$?"
el
