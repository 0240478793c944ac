"""Joint IRLS (Zhang et al. 2019) across processes against the single-process trainer, in one run:
time per sweep and bytes sent per sweep for N = 1, 2, 4 processes.

n networks of about 1M parameters (an MLP 64 - H - H - 10 on 8 x 8 digits, H = 1000: 1.08M)
are trained on n digit domains (``digits_domains``, one per network) by
``JointIRLSTrainer`` with the same seeds:

- in one process, without torch.distributed, with the paper's Gauss-Seidel schedule and
  with the Jacobi schedule (the single-process trainer);
- under ``torchrun --nproc_per_node=N`` (Jacobi, n / N networks per rank; gloo on the CPU,
  NCCL with ``--device cuda``, where N is capped by the GPUs present).

Per setting: the median time of a sweep (one epoch of every network; sweeps after the
first, whose extra parameter exchange is a one-off; under torchrun the slowest rank's;
the best of ``--repeats`` runs, the settings taking turns, against a busy machine),
the part spent in the parameter exchange (``ParamExchange``: two all_to_all and the
distances), the bytes sent per sweep by all ranks together and by the busiest rank as
counted by the trainer (``JointComm.bytes_sent``), the formula of
:mod:`mtlkernels.train.joint_exchange` for them, what gathering every parameter on every
rank would send instead, and the largest parameter difference from the single-process
Jacobi run (the same weights within float tolerance).

Usage (after `make install`):
    .venv/bin/python benchmarks/bench_joint_irls_dist.py [--quick] [--device cpu|cuda] [--threads 1] [--procs 1,2,4]
"""

from __future__ import annotations

import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import bench_parser, bench_setup, write_table  # noqa: E402

from mtlkernels.datasets import DOMAINS, digits_domains  # noqa: E402
from mtlkernels.nn import DigitsMLP  # noqa: E402
from mtlkernels.train import JointIRLSConfig, JointIRLSTrainer  # noqa: E402


def options(args) -> dict:
    quick = args.quick
    return {"nets": args.nets, "hidden": 128 if quick else args.hidden, "sweeps": 3 if quick else args.sweeps,
            "samples": 48 if quick else None, "batch_size": 64, "lam": 0.01, "seed": 0}


class TimedIRLS(JointIRLSTrainer):
    """JointIRLSTrainer that records the wall time of each sweep and of its parameter exchange."""

    def setup(self) -> None:
        super().setup()
        self.sweep_times_, self.cpu_times_, self.comm_times_, self._comm = [], [], [], 0.0
        ex = self.exchange
        for name in ("share", "sq_dists", "targets"):
            setattr(ex, name, self._timed(getattr(ex, name)))

    def _timed(self, fn):
        def call(*a, **k):
            t0 = time.perf_counter()
            out = fn(*a, **k)
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            self._comm += time.perf_counter() - t0
            return out
        return call

    def train_epoch(self, epoch: int) -> dict:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        t0, c0, self._comm = time.perf_counter(), time.process_time(), 0.0
        rec = super().train_epoch(epoch)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.sweep_times_.append(time.perf_counter() - t0)
        self.cpu_times_.append(time.process_time() - c0)
        self.comm_times_.append(self._comm)
        return rec


def train(opt: dict, schedule: str, device: str) -> TimedIRLS:
    data = digits_domains(DOMAINS[:opt["nets"]], seed=opt["seed"], train_per_domain=opt["samples"])
    cfg = JointIRLSConfig(epochs=opt["sweeps"], init_epochs=max(1, opt["sweeps"] // 2), batch_size=opt["batch_size"],
                          lr=1e-3, lam=opt["lam"], seed=opt["seed"], schedule=schedule, device=device, tol=0.0)
    return TimedIRLS(lambda: DigitsMLP(hidden=(opt["hidden"], opt["hidden"])), cfg).fit(data)


def params(tr) -> dict:
    return {k: torch.cat([p.detach().reshape(-1) for p in net.parameters()]).cpu()
            for k, net in zip(tr.local_tasks_, tr.models_)}


def worker(args) -> None:
    """One process (a torchrun rank, or the single-process trainer): train, then write its
    timings, bytes and parameters."""
    torch.set_num_threads(args.threads or 1)
    opt = json.loads(args.opts)
    tr = train(opt, args.schedule, args.worker_device)
    rank = int(os.environ.get("RANK", "0"))  # 0 in the plain single process
    out = Path(args.worker)
    torch.save(params(tr), out / f"params_rank{rank}.pt")
    (out / f"rank{rank}.json").write_text(json.dumps({"sweep": tr.sweep_times_, "cpu": tr.cpu_times_,
                                                      "comm": tr.comm_times_, "bytes": tr.sweep_bytes_}))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(N: int | None, opt: dict, device: str, threads: int, tmp: Path, schedule: str = "jacobi") -> dict:
    """Every setting in fresh processes with the same environment: ``torchrun`` with N
    processes, or (N = None) one plain process without torch.distributed."""
    out = tmp / f"n{N}-{schedule}"
    out.mkdir(parents=True)
    run = ([] if N is None else ["-m", "torch.distributed.run", f"--nproc_per_node={N}", "--master_addr=127.0.0.1",
                                 f"--master_port={free_port()}"])
    cmd = [sys.executable, *run, __file__, "--worker", str(out), "--opts", json.dumps(opt), "--schedule", schedule,
           "--worker-device", device, "--threads", str(threads)]
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR")}
    env["OMP_NUM_THREADS"] = str(threads)
    subprocess.run(cmd, check=True, env=env, timeout=1800)
    N = N or 1
    ranks = [json.loads((out / f"rank{r}.json").read_text()) for r in range(N)]
    nets = {}
    for r in range(N):
        nets.update(torch.load(out / f"params_rank{r}.pt", weights_only=True))
    return {"ranks": ranks, "params": nets}


def steady(values: list) -> float:
    return statistics.median(values[1:] if len(values) > 1 else values)


def formula(n: int, P: int, L: int, N: int, b: int = 4) -> tuple[int, int]:
    """(bytes per sweep of all ranks by the documented formula, the all-gather alternative)."""
    if N == 1:
        return 0, 0
    return (2 * (N - 1) * n * P * b // N + 2 * (N - 1) * L * n * n * b + 2 * (N - 1) * 2 * n * 8,
            (N - 1) * n * P * b)


def main() -> None:
    p = bench_parser(__doc__)
    p.add_argument("--nets", type=int, default=4, help="networks (datasets), at most 5")
    p.add_argument("--hidden", type=int, default=1000, help="hidden width H (1000: 1.08M parameters per network)")
    p.add_argument("--sweeps", type=int, default=4)
    p.add_argument("--procs", default=None, help="process counts (default 1,2,4; --quick 1,2)")
    p.add_argument("--repeats", type=int, default=None, help="runs of every setting, the best kept (default 2; --quick 1)")
    p.add_argument("--worker", default=None, help="internal: run as one torchrun rank writing to this folder")
    p.add_argument("--opts", default=None, help="internal")
    p.add_argument("--worker-device", default="cpu", help="internal")
    p.add_argument("--schedule", default="jacobi", help="internal")
    args = p.parse_args()
    if args.worker:
        return worker(args)
    device = bench_setup(args)
    threads = args.threads or 1
    torch.set_num_threads(threads)
    opt = options(args)
    procs = [int(v) for v in (args.procs or ("1,2" if args.quick else "1,2,4")).split(",")]
    skipped = []
    if torch.device(device).type == "cuda":
        skipped = [N for N in procs if N > torch.cuda.device_count()]
        procs = [N for N in procs if N <= torch.cuda.device_count()]
    load0 = os.getloadavg()
    t_start = time.perf_counter()

    repeats = args.repeats or (1 if args.quick else 2)
    settings = [(None, "gauss_seidel"), (None, "jacobi")] + [(N, "jacobi") for N in procs]
    runs = {}
    with tempfile.TemporaryDirectory() as tmp:
        for rep in range(repeats):  # the settings take turns, so that a busy spell does not hit one alone
            for N, schedule in settings:
                res = launch(N, opt, device, threads, Path(tmp) / f"r{rep}", schedule)
                per = lambda key, agg: steady([agg(r[key][s] for r in res["ranks"])  # noqa: E731
                                               for s in range(opt["sweeps"])])
                res["t"] = (per("sweep", max), per("cpu", max), per("cpu", sum), per("comm", max))
                if (N, schedule) not in runs or res["t"][0] < runs[N, schedule]["t"][0]:
                    runs[N, schedule] = res
    ref = runs[None, "jacobi"]["params"]
    n = len(ref)
    probe = DigitsMLP(hidden=(opt["hidden"], opt["hidden"]))
    P, L = sum(p.numel() for p in probe.parameters()), sum(1 for m in probe.modules() if isinstance(m, torch.nn.Linear))
    sizes = [len(d.X_train) for d in digits_domains(DOMAINS[:n], seed=opt["seed"], train_per_domain=opt["samples"])]
    rows = []
    for schedule, label in (("gauss_seidel", "1 process, Gauss-Seidel (no torch.distributed)"),
                            ("jacobi", "1 process, Jacobi (no torch.distributed)")):
        res = runs[None, schedule]
        diff = max(float((res["params"][k] - ref[k]).abs().max()) for k in range(n))
        rows.append([label, 1, n, *res["t"], 0, 0, 0, 0, f"{diff:.1e}"])
    for N in procs:
        res = runs[N, "jacobi"]
        per_rank = [steady(r["bytes"]) for r in res["ranks"]]
        diff = max(float((res["params"][k] - ref[k]).abs().max()) for k in range(n))
        want, gather = formula(n, P, L, N)
        backend = "nccl" if torch.device(device).type == "cuda" else "gloo"
        rows.append([f"torchrun, {N} process(es), Jacobi ({backend})", N, f"{n / N:g}", *res["t"], int(sum(per_rank)),
                     int(max(per_rank)), want, gather, f"{diff:.1e}"])
    load1 = os.getloadavg()
    cpu = torch.device(device).type == "cpu"
    col = 4 if cpu else 3  # the busiest process's CPU time on the CPU (other jobs do not inflate it), else wall
    for r in rows:
        r.insert(7, f"{rows[1][col] / r[col]:.2f}x")
    columns = ["setting", "processes", "networks / process", "wall s / sweep", "CPU s / sweep, busiest process",
               "CPU s / sweep, all processes", "wall s / sweep in the exchange",
               "speed-up vs 1 process Jacobi (" + ("busiest CPU" if cpu else "wall") + ")", "bytes / sweep, all ranks",
               "bytes / sweep, busiest rank", "formula (all ranks)", "all-gather instead",
               "max abs diff of the weights vs 1 process Jacobi"]
    busy = max(load0[0], load1[0])
    shared = (f"The machine ({os.cpu_count()} cores) was shared with other jobs: load average {load0[0]:.1f} at the "
              f"start, {load1[0]:.1f} at the end, so wall times are upper bounds, and more processes than free cores "
              "cannot run at once. " if busy > 0.75 * (os.cpu_count() or 1) else "")
    notes = (f"n = {n} networks of P = {P} parameters ({L} layers, MLP 64-{opt['hidden']}-{opt['hidden']}-10), "
             f"{min(sizes)}-{max(sizes)} training images per domain, batch {opt['batch_size']}, {opt['sweeps']} "
             f"sweeps (the first one excluded from the medians), best of {repeats} run(s) per setting, Adam, "
             f"lam {opt['lam']}, {threads} intra-op thread(s) per process. Bytes are the payload each rank sends to "
             "the others, counted by the trainer; formula 2 (N - 1) / N n P b (two all_to_all of the column blocks) "
             "+ 2 (N - 1) L n^2 b (distances, reduce + broadcast) + the per-network losses (all_reduce), b = 4; "
             "gathering every parameter on every rank would send (N - 1) n P b. Times are medians over sweeps; "
             "wall: the slowest rank's; CPU: process time (the training thread, gloo's and the heartbeat), which "
             "other jobs on a shared machine do not inflate: the busiest process's is the sweep time with one free "
             f"core per process. {shared}"
             + (f"Skipped N = {skipped}: fewer GPUs. " if skipped else "")
             + f"Whole run {time.perf_counter() - t_start:.0f} s.")
    cmd = "python benchmarks/bench_joint_irls_dist.py" + (" --quick" if args.quick else "") + (
        f" --device {device}" if torch.device(device).type == "cuda" else "")
    write_table("joint_irls_dist", device, columns, rows, cmd, notes=notes)


if __name__ == "__main__":
    main()
