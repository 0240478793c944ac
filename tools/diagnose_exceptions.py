"""Which paths of a C++ error through the dispatcher crash the process?

On the H200 machine (torch 2.11.0+cu130, Python 3.12.3, gcc 13.3) an argument error
raised by an mtlkernels op's C++ entry killed the process with SIGSEGV (test_amtfl
test_bad_shapes, test_dwa test_device_mismatch, test_irls too-many-networks), each time
on the path torch.library's autograd takes without grad (forward_no_grad -> redispatch),
while the same kind of error on the grad path (Function.apply -> forward -> redispatch)
became a RuntimeError as it should. A second H200 session (benchmarks/results/
gpu_h200_2026-11-26_second) saw below_autograd crash too, unchanged with the module
unstripped, with TORCH_SHOW_CPP_STACKTRACES 0 or 1, and with a non-pybind11 module. It
does not reproduce without a GPU (torch 2.11.0+cu130 with the CUDA build of `make
cuda-check`, gcc 12: every case ok, 2026-11-26). Each case below runs in its own process
and reports "ok" (a RuntimeError reached Python) or the signal that killed it (with the
debugger's backtrace of the first crash), so that one run on a GPU machine tells which
layer is at fault:

- below_autograd: our C++ entry's error with the Autograd key skipped (our entry -> the
  dispatcher -> torch's binding);
- no_grad / grad: through mtlkernels' register_autograd without / with requires_grad;
- torch_only_no_grad: a torch.library custom op with register_autograd, in pure Python,
  whose implementation makes aten raise (no mtlkernels code at all): a torch bug if it crashes;
- aten: an aten error (torch.mm shape mismatch), the baseline;
- in_module / out_of_module: a c10::Error raised and caught inside our library, and one
  leaving it through pybind11 (no dispatcher);
- value_check_no_grad / value_check_grad: an error only our C++ entry raises (a negative
  threshold tensor) through the public op, below autograd and through torch.library's
  autograd with grad;
- sizes_in_message: a shape error whose message must carry the sizes.

Cause, found 2026-11-27 from the backtrace of the third H200 run (benchmarks/results/
gpu_h200_2026-11-27): the crash was in std::ostream::operator<<(long) *inside _C*, while
the C++ check formatted a number into its message. The machine's compiler is a relocated
gcc 13 (/opt/gcc) whose libstdc++.so is a dangling relative link, so `-lstdc++` took
libstdc++.a and _C carried its own copy of the C++ library beside the shared one torch
loaded; the two disagree on the locale's facets. Messages without numbers (in_module,
out_of_module) passed. Reproduced here with a relocated copy of gcc 12: no crash, but the
number vanished from the message. Fixed by linking the libstdc++ torch loaded by its path
(cmake/TorchFromPython.cmake); the first line of this script's output says where
std::ostream's code comes from.

Usage: python tools/diagnose_exceptions.py   (prints one line per case; exit 1 unless all are ok)
"""

from __future__ import annotations

import concurrent.futures as cf
import re
import shutil
import subprocess
import sys

CASES = {
    "aten": "import torch\ntorch.mm(torch.ones(2, 3), torch.ones(2, 3))",
    # our library alone: an error raised and caught inside _C (prints it, then raises in
    # Python), and one leaving _C through pybind11, without the dispatcher
    "in_module": "import mtlkernels._C as C\nraise RuntimeError(C._throw_and_catch())",
    "out_of_module": "import mtlkernels._C as C\nC._throw()",
    "below_autograd": (
        "import torch, mtlkernels\n"
        "with torch._C._AutoDispatchBelowAutograd():\n"
        "    torch.ops.mtlkernels.amtfl_reconstruction(torch.rand(5, dtype=torch.float64), torch.rand(5, 3, dtype=torch.float64),"
        " torch.rand(3, 5, dtype=torch.float64), None, False, False, False, False)"
    ),
    "no_grad": (
        "import torch, mtlkernels\n"
        "mtlkernels.ops.amtfl_reconstruction_loss(torch.rand(5, dtype=torch.float64), torch.rand(5, 3, dtype=torch.float64),"
        " torch.rand(3, 5, dtype=torch.float64))"
    ),
    "grad": (
        "import torch, mtlkernels\n"
        "mtlkernels.ops.amtfl_reconstruction_loss(torch.rand(5, dtype=torch.float64, requires_grad=True),"
        " torch.rand(5, 3, dtype=torch.float64), torch.rand(3, 5, dtype=torch.float64))"
    ),
    # a value only C++ checks (a negative threshold tensor), through the public op with and
    # without grad: the error is raised by our C++ entry on both of torch's paths
    "value_check_no_grad": (
        "import torch, mtlkernels\n"
        "mtlkernels.ops.soft_threshold(torch.rand(4, dtype=torch.float64), torch.tensor(-1.0, dtype=torch.float64))"
    ),
    "value_check_grad": (
        "import torch, mtlkernels\n"
        "mtlkernels.ops.soft_threshold(torch.rand(4, dtype=torch.float64, requires_grad=True),"
        " torch.tensor(-1.0, dtype=torch.float64))"
    ),
    "sizes_in_message": (
        "import torch, mtlkernels\n"
        "f = dict(dtype=torch.float64)\n"
        "torch.ops.mtlkernels.amtfl_reconstruction(torch.rand(5, 3, **f), torch.rand(4, 2, **f), torch.rand(2, 3, **f),"
        " None, False, False, False, False)"
    ),
    "torch_only_no_grad": (
        "import torch\n"
        "@torch.library.custom_op('diag_only::mm', mutates_args=())\n"
        "def mm(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:\n"
        "    return torch.mm(a, b)\n"
        "mm.register_autograd(lambda ctx, g: (g, g), setup_context=lambda ctx, inputs, output: None)\n"
        "torch.ops.diag_only.mm(torch.ones(2, 3), torch.ones(2, 3))"
    ),
}


# what an error message must contain (a C++ library linked twice drops the numbers)
EXPECT = {"sizes_in_message": "k = Z.size(1) = 3, got W of shape [4, 2]"}

# Which file defines std::ostream::operator<<(long), looked up through _C and its dependencies.
CXX_RUNTIME = """
import ctypes, os, torch
from mtlkernels import _C
class Info(ctypes.Structure):
    _fields_ = [("fname", ctypes.c_char_p), ("fbase", ctypes.c_void_p), ("sname", ctypes.c_char_p), ("saddr", ctypes.c_void_p)]
info = Info()
ctypes.CDLL(None).dladdr(ctypes.cast(ctypes.CDLL(_C.__file__)._ZNSo9_M_insertIlEERSoT_, ctypes.c_void_p), ctypes.byref(info))
where = os.path.realpath(info.fname.decode())
print(("LINKED INTO _C: " if where == os.path.realpath(_C.__file__) else "shared: ") + where)
"""


def run_case(code: str, cwd: str | None = None, expect: str | None = None) -> str:
    p = subprocess.run([sys.executable, "-X", "faulthandler", "-c", code], capture_output=True, text=True, cwd=cwd,
                       timeout=120)
    if p.returncode < 0:
        return f"CRASHED (signal {-p.returncode})"
    if expect is not None and expect not in p.stderr:
        return f"WRONG MESSAGE, without {expect!r}: {p.stderr.strip().splitlines()[-1][:200] if p.stderr.strip() else ''}"
    if "RuntimeError" in p.stderr:
        return "ok (RuntimeError)"
    return f"unexpected (exit {p.returncode}): {p.stderr.strip().splitlines()[-1] if p.stderr.strip() else ''}"


def backtrace(code: str) -> list[str]:
    """The native stack at the crash, from cuda-gdb (which debugs CPU-only programs too;
    the GPU machines have no plain gdb), or nothing when no debugger is found."""
    gdb = shutil.which("cuda-gdb") or shutil.which("gdb")
    if gdb is None:
        return []
    cmd = [gdb, "-q", "-batch", "-ex", "set pagination off", "-ex", "run", "-ex", "bt 40", "-ex", "x/2i $pc",
           "--args", sys.executable, "-c", code]
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    except subprocess.TimeoutExpired:
        return ["(the debugger timed out)"]
    keep = re.compile(r"^(#\d|=> |Thread .* received signal|Program received signal)")
    return [ln for ln in p.stdout.splitlines() if keep.match(ln)]


def main() -> int:
    p = subprocess.run([sys.executable, "-c", CXX_RUNTIME], capture_output=True, text=True, timeout=120)
    runtime = p.stdout.strip() or f"unknown: {p.stderr.strip().splitlines()[-1] if p.stderr.strip() else p.returncode}"
    print(f"{'libstdc++':20s} {runtime}", flush=True)
    bad, crashed = not runtime.startswith("shared"), 0
    # each case in its own process, six at a time (each one is mostly `import torch`)
    with cf.ThreadPoolExecutor(max_workers=6) as pool:
        results = pool.map(lambda item: run_case(item[1], expect=EXPECT.get(item[0])), CASES.items())
        for (name, code), res in zip(CASES.items(), results):
            print(f"{name:20s} {res}", flush=True)
            bad |= not res.startswith("ok")
            if res.startswith("CRASHED"):
                crashed += 1
                for ln in backtrace(code) if crashed == 1 else []:  # the first crash's stack
                    print(f"    {ln}", flush=True)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
