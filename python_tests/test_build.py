import json
import subprocess
import sys

import torch

import mtlkernels


def test_build_info_fields():
    info = mtlkernels.build_info()
    assert set(info) >= {"version", "torch_version", "cuda", "cuda_version", "cuda_archs", "openmp"}
    assert info["version"] == mtlkernels.__version__
    assert info["torch_version"].split("+")[0] == torch.__version__.split("+")[0]
    assert isinstance(info["cuda"], bool)
    json.dumps(info)  # serialisable, as the README's one-liner prints it


def test_build_info_one_liner():
    out = subprocess.run(
        [sys.executable, "-c", "import mtlkernels, json; print(json.dumps(mtlkernels.build_info()))"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(out.stdout)["version"] == mtlkernels.__version__


def test_every_op_has_a_cpu_kernel():
    names = [n for n in torch._C._dispatch_get_all_op_names() if n.startswith("mtlkernels::")]
    assert "mtlkernels::soft_threshold" in names
    for name in names:
        assert torch._C._dispatch_has_kernel_for_dispatch_key(name, "CPU"), name


def test_cuda_kernels_match_build_info():
    info = mtlkernels.build_info()
    has = torch._C._dispatch_has_kernel_for_dispatch_key("mtlkernels::soft_threshold", "CUDA")
    assert has == info["cuda"]
