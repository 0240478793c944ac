"""`make gpu-check`: build, test, sanitise and time every CUDA kernel on a GPU machine.

Usage (from the checkout's root, with a Python that has torch, the build tools and pytest;
no package index needed):

    python tools/gpu_check.py [--out DIR] [--full] [--no-build]

Stages, each with its own time limit so that the whole run fits in about 8 minutes on
one H100 / H200 with 16 cores:
1. build: `pip install --no-build-isolation -e .` with MTLKERNELS_CUDA=ON, for the
   architecture of the GPU present only (TORCH_CUDA_ARCH_LIST from
   torch.cuda.get_device_capability), on all cores. A failed build stops here, with the
   compiler's errors; every later stage runs even when an earlier one failed.
2. exceptions: tools/diagnose_exceptions.py (a C++ error on each dispatch path must reach
   Python as a RuntimeError; on the H200 one path crashed the process).
   tests: `pytest -m cuda`, one process per test file (a crash in one file cannot hide
   the others), four at a time, JUnit XML per file.
3. sanitizer: `compute-sanitizer --tool memcheck` and `--tool racecheck` over
   tools/cuda_smoke.py (every op's CUDA kernel on small odd sizes).
4. profile: tools/profile_ops.py (the calls whose GPU time is not understood yet).
5. benchmarks: benchmarks/run_all.py --device cuda --quick (--full: the full sizes too).
Then one summary (printed, and summary.md / summary.json in DIR); the exit status is 1
when anything failed, 2 when no GPU is present (checked first, in a few seconds).
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TESTS = ROOT / "python_tests"
WHOLE_FILES = {"test_build.py"}
WORKERS = 6  # test files at once (4 took 116 s on the H200, 2026-11-27)
STAGES = ("exceptions", "tests", "sanitizer", "profile", "bench")
# seconds each stage usually takes, kept for it while earlier ones run (H200, 2026-11-28:
# build 72, exceptions 19, tests about 100 (6 workers), memcheck about 80 before its two
# costliest cases were cut to one exact SVD each, racecheck 56, profile 11, the quick
# benchmarks 166). With tests 70 / sanitizer 145 that run left memcheck 56 s and cut it.
# Second run that day: build 78, exceptions 18, memcheck 63 and racecheck 60 (measured
# before), profile 11, the quick benchmarks 185 (8 of them 175 s before bench_solvers).
NEED = {"exceptions": 20, "tests": 100, "sanitizer": 125, "profile": 12, "bench": 185}


def log(msg: str) -> None:
    print(f"[gpu-check {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def run(cmd, log_path: Path, timeout: float, cwd=ROOT, env=None) -> tuple[int, float, str]:
    """Run cmd with stdout+stderr into log_path; returns (exit code, seconds, output). 124 on timeout."""
    t0 = time.perf_counter()
    with open(log_path, "w") as f:
        # A process group of its own, killed whole on a timeout: compute-sanitizer runs the
        # program as its child, which a plain timeout leaves running on the GPU. Suspected
        # (not proven) cause of the 2.4 ms per pairwise_sq_dists call in the quick table of
        # 2026-11-26, after two sanitizer timeouts; 0.08-0.13 ms on a fresh machine.
        p = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=f, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            rc = p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
            rc = 124
            f.write(f"\n[gpu-check] timed out after {timeout:.0f} s\n")
    return rc, time.perf_counter() - t0, log_path.read_text(errors="replace")


def preflight() -> tuple[str, list[str], list[str]]:
    try:
        import torch
    except ImportError as exc:
        print(f"gpu-check: no CUDA device is present to this Python ({sys.executable} cannot import torch: "
              f"{exc}); run it on a GPU machine with its own torch.", flush=True)
        sys.exit(2)

    if not torch.cuda.is_available():
        print("gpu-check: no CUDA device is present (torch.cuda.is_available() is False, torch "
              f"{torch.__version__}); run it on a machine with a GPU.", flush=True)
        sys.exit(2)
    caps = sorted({"%d.%d" % torch.cuda.get_device_capability(i) for i in range(torch.cuda.device_count())})
    names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return torch.__version__, caps, names


def stage_build(out: Path, caps: list[str], timeout: float) -> dict:
    env = dict(os.environ, MTLKERNELS_CUDA="ON", TORCH_CUDA_ARCH_LIST=";".join(caps),
               CMAKE_BUILD_PARALLEL_LEVEL=str(os.cpu_count() or 4))
    cmd = [sys.executable, "-m", "pip", "install", "--no-build-isolation", "--no-deps", "-v", "-e", ".",
           "-C", "build-dir=build/gpu-check"]
    log(f"build: TORCH_CUDA_ARCH_LIST={env['TORCH_CUDA_ARCH_LIST']}, {env['CMAKE_BUILD_PARALLEL_LEVEL']} jobs")
    rc, secs, text = run(cmd, out / "build.log", timeout=timeout, env=env)
    res = {"ok": rc == 0, "seconds": round(secs, 1), "archs": caps}
    if rc != 0:
        errs = [ln for ln in text.splitlines() if re.search(r"error|Error|FAILED|fatal", ln)]
        res["errors"] = errs[-40:] or text.splitlines()[-40:]
        return res
    probe = subprocess.run([sys.executable, "-c", "import json, mtlkernels; print(json.dumps(mtlkernels.build_info()))"],
                           cwd=TESTS, capture_output=True, text=True)
    if probe.returncode != 0:
        res.update(ok=False, errors=probe.stderr.splitlines()[-20:])
        return res
    res["build_info"] = json.loads(probe.stdout.strip().splitlines()[-1])
    if not res["build_info"]["cuda"]:
        res.update(ok=False, errors=["the build has no CUDA kernels"])
    return res


def junit_counts(path: Path) -> dict | None:
    if not path.exists():
        return None
    root = ET.parse(path).getroot()
    suites = [root] if root.tag == "testsuite" else list(root)
    c = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0, "failed_tests": []}
    for s in suites:
        for k in ("tests", "failures", "errors", "skipped"):
            c[k] += int(s.get(k, 0))
        for case in s.iter("testcase"):
            if case.find("failure") is not None or case.find("error") is not None:
                c["failed_tests"].append(f"{case.get('classname', '')}::{case.get('name')}")
    c["passed"] = c["tests"] - c["failures"] - c["errors"] - c["skipped"]
    return c


def stage_exceptions(out: Path, timeout: float) -> dict:
    """tools/diagnose_exceptions.py: does a C++ error on each dispatch path reach Python?"""
    rc, secs, text = run([sys.executable, str(ROOT / "tools" / "diagnose_exceptions.py")], out / "exceptions.log",
                         timeout=timeout, cwd=TESTS)
    return {"ok": rc == 0, "seconds": round(secs, 1), "cases": [ln for ln in text.splitlines() if ln.strip()]}


def stage_tests(out: Path, timeout: float, only: list[str] | None = None) -> dict:
    (out / "tests").mkdir(exist_ok=True)
    files = sorted(p.name for p in TESTS.glob("test_*.py") if not only or p.stem in only)

    def one(name: str) -> tuple[str, dict]:
        stem = name[:-3]
        xml = out / "tests" / f"{stem}.xml"
        # test_build.py whole: how the extension was built and linked is checked without CUDA
        marker = [] if name in WHOLE_FILES else ["-m", "cuda"]
        cmd = [sys.executable, "-m", "pytest", name, *marker, "-q", "-p", "no:cacheprovider", "-rfE",
               f"--junitxml={xml}"]
        rc, secs, text = run(cmd, out / "tests" / f"{stem}.log", timeout=timeout, cwd=TESTS, env=env)
        c = junit_counts(xml) if rc != 124 else None
        if rc == 5:  # no test selected: the file has no CUDA test
            return stem, {"tests": 0, "seconds": round(secs, 1)}
        if c is None:  # crashed or timed out before writing its report
            return stem, {"crashed": True, "exit": rc, "seconds": round(secs, 1), "tail": text.splitlines()[-25:]}
        c["seconds"] = round(secs, 1)
        c["exit"] = rc
        return stem, c

    # each process its share of the cores: 6 processes of torch's default 16 threads each ran a
    # CPU fit that takes 5.5 s alone for more than 80 s (H200, 2026-11-28, second run)
    env = os.environ | {"OMP_NUM_THREADS": str(max(1, (os.cpu_count() or WORKERS) // WORKERS))}
    with cf.ThreadPoolExecutor(max_workers=WORKERS) as pool:
        results = dict(pool.map(one, files))
    bad = any(r.get("crashed") or r.get("failures") or r.get("errors") for r in results.values())
    passed = sum(r.get("passed", 0) for r in results.values())
    return {"ok": not bad and passed > 0, "passed": passed, "files": results}


def sanitizer_binary() -> str | None:
    found = shutil.which("compute-sanitizer")
    if found:
        return found
    for base in (os.environ.get("CUDA_HOME", ""), "/usr/local/cuda"):
        cand = Path(base) / "bin" / "compute-sanitizer"
        if base and cand.exists():
            return str(cand)
    return None


def stage_sanitizer(out: Path, timeouts: dict) -> dict:
    """memcheck, then racecheck, of tools/cuda_smoke.py; timeouts: tool -> () -> seconds."""
    exe = sanitizer_binary()
    if exe is None:
        return {"ok": True, "skipped": "compute-sanitizer was not found (PATH, $CUDA_HOME/bin, /usr/local/cuda/bin)"}
    # No caching allocator: memcheck then sees every tensor's own bounds.
    env = dict(os.environ, PYTORCH_NO_CUDA_MEMORY_CACHING="1")
    res = {"ok": True}
    for tool in ("memcheck", "racecheck"):
        # racecheck is slow on shared memory: the light set (cheap nuclear shapes)
        light = ["--light"] if tool == "racecheck" else []
        cmd = [exe, "--tool", tool, "--error-exitcode", "99", sys.executable, str(ROOT / "tools" / "cuda_smoke.py"),
               *light]
        rc, secs, text = run(cmd, out / f"sanitizer_{tool}.log", timeout=timeouts[tool](), env=env)
        m = re.search(r"(?:ERROR|RACECHECK) SUMMARY: (\d+) (?:error|hazard)", text)
        n = int(m.group(1)) if m else None
        entry = {"exit": rc, "seconds": round(secs, 1), "errors": n}
        if n is None and rc != 0:
            if re.search(r"not supported|Unable to|Could not|failed to (?:attach|initialize)", text, re.I):
                entry["note"] = "the sanitizer could not attach to the device: " + text.strip().splitlines()[-1][:200]
            else:
                entry["note"] = "no summary line; see the log"
                res["ok"] = False
        elif (n or 0) > 0 or rc not in (0,):
            res["ok"] = False
        res[tool] = entry
    return res


def stage_profile(out: Path, timeout: float) -> dict:
    """tools/profile_ops.py: where the time of the calls not yet understood goes (informative)."""
    rc, secs, _ = run([sys.executable, str(ROOT / "tools" / "profile_ops.py")], out / "profile.log",
                      timeout=timeout, cwd=TESTS)
    return {"ok": True, "exit": rc, "seconds": round(secs, 1), "log": "profile.log"}


def stage_bench(out: Path, full: bool, timeout: float) -> dict:
    res = {}
    runs = [("quick", ["--quick"])] + ([("full", [])] if full else [])
    for name, extra in runs:
        cmd = [sys.executable, str(ROOT / "benchmarks" / "run_all.py"), "--device", "cuda", "--out", str(out), *extra]
        rc, secs, text = run(cmd, out / f"bench_{name}.log", timeout=timeout if name == "quick" else 3000, cwd=TESTS)
        res[name] = {"exit": rc, "seconds": round(secs, 1),
                     "failed": re.findall(r"==== (bench_\w+\.py): FAILED", text)}
    res["ok"] = all(r["exit"] == 0 for r in res.values() if isinstance(r, dict))
    return res


def summary(out: Path, info: dict) -> str:
    lines = [f"# gpu-check on {', '.join(info['devices'])}", "",
             f"- torch {info['torch']}, date {time.strftime('%Y-%m-%d')}, total {info['seconds']:.0f} s",
             f"- command: `make gpu-check GPU_OUT={out}`", ""]
    b = info["build"]
    lines.append(f"## build: {'ok' if b['ok'] else 'FAILED'} in {b['seconds']} s (archs {', '.join(b['archs'])})")
    lines += [f"    {e}" for e in b.get("errors", [])]
    if "exceptions" in info:
        e = info["exceptions"]
        lines += ["", f"## C++ errors reach Python on every dispatch path: {'ok' if e['ok'] else 'NO'}", ""]
        lines += [f"    {c}" for c in e["cases"]]
    if "tests" in info:
        t = info["tests"]
        lines += ["", f"## CUDA tests (pytest -m cuda; test_build.py whole): {'ok' if t['ok'] else 'FAILED'}", "",
                  "| test file | passed | failed | errors | skipped | s |", "|---|---|---|---|---|---|"]
        for stem, r in sorted(t["files"].items()):
            if r.get("crashed"):
                lines.append(f"| {stem} | CRASHED (exit {r['exit']}) | | | | {r['seconds']} |")
            elif r.get("tests"):
                lines.append(f"| {stem} | {r['passed']} | {r['failures']} | {r['errors']} | {r['skipped']} | {r['seconds']} |")
        for stem, r in sorted(t["files"].items()):
            for name in r.get("failed_tests", []):
                lines.append(f"- FAILED {stem}: {name}")
            if r.get("crashed"):
                lines += [f"- {stem} crashed; last lines:"] + [f"    {x}" for x in r["tail"]]
    if "sanitizer" in info:
        s = info["sanitizer"]
        lines += ["", f"## compute-sanitizer: {'ok' if s['ok'] else 'FAILED'}"]
        if "skipped" in s:
            lines.append(f"- skipped: {s['skipped']}")
        for tool in ("memcheck", "racecheck"):
            if tool in s:
                e = s[tool]
                lines.append(f"- {tool}: {e['errors']} errors, exit {e['exit']}, {e['seconds']} s"
                             + (f" ({e['note']})" if "note" in e else ""))
    if "profile" in info:
        p = info["profile"]
        lines += ["", f"## profile (tools/profile_ops.py): exit {p['exit']}, {p['seconds']} s, tables in {p['log']}"]
    if "bench" in info:
        bn = info["bench"]
        lines += ["", f"## benchmarks: {'ok' if bn['ok'] else 'FAILED'}"]
        for name, r in bn.items():
            if isinstance(r, dict):
                lines.append(f"- {name}: exit {r['exit']}, {r['seconds']} s" + (f", failed: {r['failed']}" if r["failed"] else ""))
        for md in sorted(out.glob("*.md")):
            if md.name != "summary.md":
                lines += ["", md.read_text().strip()]
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"), help="folder for logs, reports, tables")
    ap.add_argument("--full", action="store_true", default=os.environ.get("GPU_CHECK_FULL") == "1",
                    help="also the full-size benchmarks (GPU_CHECK_FULL=1)")
    ap.add_argument("--no-build", action="store_true", help="use the build already installed")
    ap.add_argument("--stages", default=",".join(STAGES),
                    help="comma-separated stages after the build, for a rerun of some (default: all)")
    ap.add_argument("--files", default="",
                    help="comma-separated test files (stems, e.g. test_op_safety) for the tests stage")
    # 510 s, in a 540 s device call: 460 left racecheck 60 s (it needs more) and the quick
    # benchmarks 99 s (5 of 8 scripts) on 2026-11-27; 510 left racecheck 100 s (it needs
    # about 110: 84 s for its one Gram case) and the benchmarks 159 s (7 of 9 scripts) later
    # that day; the whole check needed about 620 s. With racecheck's Gram case at k = 34 it
    # needs about 470 s (racecheck 61 s, 2026-11-27 night). On 2026-11-28 the stages' usual
    # times (NEED) and the build came to about 515 s: 520 leaves 20 s of the call for tar.
    ap.add_argument("--budget", type=float, default=520,
                    help="seconds for the whole run (default 520); each stage's limit is cut to fit")
    args = ap.parse_args()
    stages = [s for s in args.stages.split(",") if s]
    if unknown := set(stages) - set(STAGES):
        ap.error(f"--stages: unknown {sorted(unknown)}; choose from {', '.join(STAGES)}")
    only_files = [f for f in args.files.split(",") if f] or None
    t0 = time.perf_counter()
    torch_version, caps, names = preflight()
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    info = {"torch": torch_version, "devices": names}
    log(f"{', '.join(names)}; torch {torch_version}; results in {out}")
    deadline = t0 + args.budget

    def limit(cap: float, after: str, extra: float = 0) -> float:
        """cap seconds, or less so that the selected stages after `after` keep their usual
        time (and `extra` seconds more)."""
        later = STAGES[STAGES.index(after) + 1:]
        reserve = extra + sum(NEED[s] for s in later if s in stages)
        return max(20.0, min(cap, deadline - time.perf_counter() - reserve))

    info["build"] = ({"ok": True, "seconds": 0, "archs": caps, "skipped": True} if args.no_build
                     else stage_build(out, caps, 300))  # everything needs it: later stages shrink
    log(f"build: {'ok' if info['build']['ok'] else 'FAILED'} ({info['build']['seconds']} s)")
    if info["build"]["ok"]:
        # racecheck runs after memcheck: memcheck leaves it 65 s
        sanitizer_limits = {"memcheck": lambda: limit(100, "sanitizer", 65), "racecheck": lambda: limit(100, "sanitizer")}
        for stage, fn in (("exceptions", lambda: stage_exceptions(out, limit(90, "exceptions"))),
                          ("tests", lambda: stage_tests(out, limit(150, "tests"), only_files)),
                          ("sanitizer", lambda: stage_sanitizer(out, sanitizer_limits)),
                          ("profile", lambda: stage_profile(out, limit(45, "profile"))),
                          ("bench", lambda: stage_bench(out, args.full, limit(220, "bench")))):
            if stage not in stages:
                continue
            log(f"{stage} ...")
            info[stage] = fn()
            log(f"{stage}: {'ok' if info[stage]['ok'] else 'FAILED'}")
    info["seconds"] = time.perf_counter() - t0
    text = summary(out, info)
    (out / "summary.md").write_text(text)
    (out / "summary.json").write_text(json.dumps(info, indent=1, default=str))
    print(text)
    ok = all(info[k]["ok"] for k in ("build", "exceptions", "tests", "sanitizer", "bench") if k in info)
    print(f"gpu-check: {'OK' if ok else 'FAILED'} in {info['seconds']:.0f} s")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
