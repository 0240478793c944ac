import ctypes
import json
import os
import subprocess
import sys

import pytest
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


# ---- the build's own logic (issue "Builds that cannot surprise") ---------------------------

ROOT = __import__("pathlib").Path(__file__).resolve().parent.parent


def _load_build_meta():
    import importlib.util

    spec = importlib.util.spec_from_file_location("torch_build_meta", ROOT / "tools" / "torch_build_meta.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_version_and_dependency_name_the_torch_built_against():
    meta = _load_build_meta()
    major, minor = (int(p) for p in torch.__version__.split(".")[:2])
    flavour = "cu" + torch.version.cuda.replace(".", "") if torch.version.cuda else "cpu"
    assert meta.dynamic_metadata("version", {"base": "0.1.0"}) == f"0.1.0+pt{major}{minor}{flavour}"
    assert meta.dynamic_metadata("dependencies", {"requires": ["numpy"]}, {}) == [
        "numpy", f"torch>={major}.{minor},<{major}.{minor + 1}"]
    # the installed package says the same
    assert mtlkernels.__version__.endswith(f"+pt{major}{minor}{flavour}")


def test_build_without_torch_says_to_disable_build_isolation(monkeypatch):
    meta = _load_build_meta()
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` raises ImportError
    try:
        meta.dynamic_metadata("version", {"base": "0.1.0"})
    except RuntimeError as exc:
        assert "--no-build-isolation" in str(exc) and "cannot import torch" in str(exc)
    else:
        raise AssertionError("no error without torch")


def test_source_checkout_without_extension_says_what_to_run(tmp_path):
    """A copy of the source folder with no compiled _C, imported first on sys.path (with the
    editable install's import hook removed, as in a checkout that was never built)."""
    import shutil

    shutil.copytree(ROOT / "mtlkernels", tmp_path / "mtlkernels",
                    ignore=shutil.ignore_patterns("_C*", "__pycache__"))
    (tmp_path / "pyproject.toml").write_text("[project]\nname = 'mtlkernels'\n")
    code = ("import sys\n"
            "sys.meta_path[:] = [f for f in sys.meta_path if not type(f).__module__.startswith('_editable')]\n"
            f"sys.path.insert(0, {str(tmp_path)!r})\n"
            "import mtlkernels\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode != 0
    assert "source checkout" in out.stderr and "make install" in out.stderr, out.stderr[-2000:]


def _cmake():
    import shutil

    exe = shutil.which("cmake", path=str(__import__("pathlib").Path(sys.executable).parent)) or shutil.which("cmake")
    if exe is None:
        pytest.skip("cmake not found")
    return exe


def _cuda_archs(tmp_path, arch_list, caps="", supported="compute_75 compute_80 compute_86 compute_90"):
    """Run cmake/CudaArchitectures.cmake in script mode with a stand-in nvcc."""
    nvcc = tmp_path / "nvcc"
    nvcc.write_text("#!/bin/sh\nfor a in " + supported + "; do echo $a; done\n")
    nvcc.chmod(0o755)
    script = tmp_path / "archs.cmake"
    script.write_text(
        f'include("{ROOT}/cmake/CudaArchitectures.cmake")\n'
        f'set(MTLKERNELS_GPU_CAPABILITIES "{caps}")\n'
        f'mtlkernels_cuda_archs("{nvcc}" flags names why)\n'
        'message("FLAGS=${flags}")\nmessage("NAMES=${names}")\nmessage("WHY=${why}")\n')
    env = dict(__import__("os").environ)
    env.pop("TORCH_CUDA_ARCH_LIST", None)
    if arch_list is not None:
        env["TORCH_CUDA_ARCH_LIST"] = arch_list
    out = subprocess.run([_cmake(), "-P", str(script)], capture_output=True, text=True, env=env)
    text = out.stderr + out.stdout
    res = {}
    for key in ("FLAGS", "NAMES", "WHY"):
        line = next(ln for ln in text.splitlines() if ln.startswith(key + "="))
        res[key] = line[len(key) + 1:]
    return res, text


def test_cuda_architectures_from_the_list_filtered_by_nvcc(tmp_path):
    res, text = _cuda_archs(tmp_path, "5.0;8.0 9.0a,8.6+PTX")
    assert res["NAMES"] == "sm_80,sm_90a,sm_86"
    assert res["FLAGS"].split(";") == ["-gencode=arch=compute_80,code=sm_80", "-gencode=arch=compute_90a,code=sm_90a",
                                       "-gencode=arch=compute_86,code=sm_86", "-gencode=arch=compute_86,code=compute_86"]
    assert "compute_50" in text and "skipped" in text  # said, not silently dropped


def test_cuda_architectures_of_the_gpus_present_then_the_default(tmp_path):
    assert _cuda_archs(tmp_path, None, caps="9.0")[0]["NAMES"] == "sm_90"
    assert _cuda_archs(tmp_path, None)[0]["NAMES"] == "sm_80,sm_90"
    res, _ = _cuda_archs(tmp_path, "5.0")
    assert res["FLAGS"] == "" and "none of the CUDA architectures" in res["WHY"]


def test_errors_raised_in_the_extension_reach_python():
    """The diagnostics tools/diagnose_exceptions.py runs on a GPU machine (where an op's C++
    error once killed the process): an error caught inside _C, and one leaving it."""
    from mtlkernels import _C

    assert "diagnostic error" in _C._throw_and_catch()
    with pytest.raises(RuntimeError, match="diagnostic error"):
        _C._throw()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="ELF symbol lookup with dladdr")
def test_extension_uses_the_shared_cxx_runtime():
    """_C carries no copy of libstdc++ (cmake/TorchFromPython.cmake names torch's): a copy
    linked from libstdc++.a crashed formatting a number into an error message (GPU machine,
    gcc 13) or dropped the number (gcc 12)."""
    from mtlkernels import _C

    class DlInfo(ctypes.Structure):
        _fields_ = [("dli_fname", ctypes.c_char_p), ("dli_fbase", ctypes.c_void_p),
                    ("dli_sname", ctypes.c_char_p), ("dli_saddr", ctypes.c_void_p)]

    lib, libc = ctypes.CDLL(_C.__file__), ctypes.CDLL(None)
    # std::ostream::operator<<(long) and std::locale::classic(): looked up through _C and
    # its dependencies, they must come from a shared libstdc++, not from _C
    for symbol in ("_ZNSo9_M_insertIlEERSoT_", "_ZNSt6locale7classicEv"):
        address = ctypes.cast(getattr(lib, symbol), ctypes.c_void_p)
        info = DlInfo()
        assert libc.dladdr(address, ctypes.byref(info)), symbol
        where = os.path.realpath(info.dli_fname.decode())
        assert where != os.path.realpath(_C.__file__), f"{symbol} is linked into _C"
        assert "libstdc++" in os.path.basename(where), where


def test_numbers_in_cxx_error_messages():
    """The failure above, as a user sees it: the sizes in an op's C++ check message."""
    f64 = dict(dtype=torch.float64)
    Z, W, A = torch.rand(5, 3, **f64), torch.rand(4, 2, **f64), torch.rand(2, 3, **f64)
    with pytest.raises(RuntimeError, match=r"k = Z\.size\(1\) = 3, got W of shape \[4, 2\]"):
        torch.ops.mtlkernels.amtfl_reconstruction(Z, W, A, None, False, False, False, False)
