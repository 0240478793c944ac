"""The CUDA-compile check: every op of the mtlkernels namespace has a CUDA kernel.

Runs without a GPU: it only asks the dispatcher which kernels are registered.
Exits non-zero, naming the ops without one, if any is missing or if the build did
not compile CUDA at all.
"""

import json
import sys

import torch

import mtlkernels


def main() -> int:
    info = mtlkernels.build_info()
    print(json.dumps(info))
    if not info["cuda"]:
        print("cuda-check: FAILED, the extension was built without CUDA kernels")
        return 1
    names = sorted(n for n in torch._C._dispatch_get_all_op_names() if n.startswith("mtlkernels::"))
    if not names:
        print("cuda-check: FAILED, no op registered in the mtlkernels namespace")
        return 1
    missing = [n for n in names if not torch._C._dispatch_has_kernel_for_dispatch_key(n, "CUDA")]
    for n in names:
        print(f"  {n:45s} CUDA kernel: {'MISSING' if n in missing else 'yes'}")
    if missing:
        print(f"cuda-check: FAILED, {len(missing)} op(s) without a CUDA kernel: {', '.join(missing)}")
        return 1
    print(f"cuda-check: OK, {len(names)} ops, each with a CUDA kernel (archs {info['cuda_archs']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
