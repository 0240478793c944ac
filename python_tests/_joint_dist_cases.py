"""The joint trainers run in spawned gloo processes and in one process by test_joint_irls_dist.py.

``cases(out, rank)`` returns name -> (trainer factory, fit args, fit kwargs): the same data,
networks and settings in every process. ``run`` is the body of one spawned rank (every
case, the weights of its networks saved per rank); ``run_failure`` the body of a run in
which one rank dies, hangs or hits a NaN loss.
"""

from __future__ import annotations

import os
import socket
import time
import traceback

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from mtlkernels.datasets import digits_domains
from mtlkernels.nn import DigitsAutoEncoder, DigitsMLP
from mtlkernels.train import (Isolated, JointIRLSConfig, JointIRLSTrainer, L2Reg, PretrainFinetune, RankFailureError,
                              Shareall)

DOMAINS = ("original", "rotated", "inverted", "noisy")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _context():
    """Processes forked from a server that has imported torch, mtlkernels and the data
    (seconds per launch instead of an import each), never from the test process itself."""
    if "forkserver" not in mp.get_all_start_methods():
        return mp.get_context("spawn")
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(["torch", "torch._dynamo", "torch.distributed", "mtlkernels", "mtlkernels.train", "sklearn.datasets",
                                "_joint_dist_cases"])
    return ctx


def launch(target, world: int, args: tuple, timeout: float, wait_for=None) -> list:
    """Start ``world`` spawned processes ``target(rank, world, port, *args)``; wait at most
    ``timeout`` seconds for the ranks ``wait_for`` (default: all), then kill what is left.
    Returns the exit codes (None: killed)."""
    ctx = _context()
    port = free_port()
    procs = [ctx.Process(target=target, args=(r, world, port, *args)) for r in range(world)]
    for p in procs:
        p.start()
    deadline = time.monotonic() + timeout
    for r in range(world) if wait_for is None else wait_for:
        procs[r].join(max(0.0, deadline - time.monotonic()))
    codes = []
    for p in procs:
        if p.is_alive():
            p.kill()
            p.join(5)
            codes.append(None)
        else:
            codes.append(p.exitcode)
    return codes


class Lazy:
    """A sequence of datasets that loads dataset k only when indexed, and remembers which."""

    def __init__(self, sets):
        self.sets, self.read = sets, []

    def __len__(self):
        return len(self.sets)

    def __getitem__(self, k):
        self.read.append(k)
        return self.sets[k]


def tiny():
    return DigitsMLP(hidden=(12,))


def cfg(**kw) -> JointIRLSConfig:
    base = dict(epochs=4, batch_size=16, lr=1e-2, seed=0, lam=0.05, init_epochs=2, tol=0.0, schedule="jacobi")
    base.update(kw)
    return JointIRLSConfig(**base)


def cases(out: str, rank: int) -> dict:
    d = digits_domains(DOMAINS, seed=0, train_per_domain=24)
    two, three, four = d[:2], d[:3], list(d)
    ck = f"{out}/ck_{{}}.pt"
    return {
        "jacobi_n2": (lambda: JointIRLSTrainer(tiny, cfg()), (two, "val"), {}),
        "jacobi_n3": (lambda: JointIRLSTrainer(tiny, cfg(epochs=3, init_epochs=1)), (three,), {}),
        "jacobi_n4": (lambda: JointIRLSTrainer(tiny, cfg(same_init=False)), (Lazy(four),), {}),
        "l2reg_n3": (lambda: L2Reg(tiny, cfg(epochs=3)), (three,), {}),
        "isolated_n3": (lambda: Isolated(tiny, cfg(epochs=2)), (three,), {}),
        "shareall_n3": (lambda: Shareall(tiny, cfg(epochs=2, batch_size=10)), (three,), {}),
        "shareall_ae_n3": (lambda: Shareall(lambda: DigitsAutoEncoder(code=4, hidden=8),
                                            cfg(epochs=1, batch_size=4, task="autoencoder")),
                           ([x.X_train for x in three],), {}),
        "pretrain_n4": (lambda: PretrainFinetune(tiny, cfg(epochs=4, pretrain_epochs=2, same_init=False)), (four,),
                        {}),
        "uninterrupted_n4": (lambda: JointIRLSTrainer(tiny, cfg(epochs=5, epochs_per_iter=2)), (four,), {}),
        "stopped_n4": (lambda: JointIRLSTrainer(tiny, cfg(epochs=3, epochs_per_iter=2,
                                                          checkpoint_path=ck.format("resume"))), (four,), {}),
        "resumed_n4": (lambda: JointIRLSTrainer(tiny, cfg(epochs=5, epochs_per_iter=2,
                                                          checkpoint_path=ck.format("resume"))), (four,), {}),
        "partial_stop": (lambda: JointIRLSTrainer(tiny, cfg(epochs=3, epochs_per_iter=2,
                                                            checkpoint_path=ck.format("partial"))), (four,), {}),
        "partial_resumed": (lambda: _lose_last_save(out, rank) or JointIRLSTrainer(
            tiny, cfg(epochs=5, epochs_per_iter=2, checkpoint_path=ck.format("partial"))), (four,), {}),
        "gauss_seidel": (lambda: JointIRLSTrainer(tiny, cfg(schedule="gauss_seidel")), (two,), {}),
    }


def _lose_last_save(out: str, rank: int) -> None:
    """Rank 1 never wrote its epoch-3 checkpoint (killed while saving): it holds epoch 2 only."""
    if rank == 1:
        os.replace(f"{out}/ck_partial.rank1-of-2.prev.pt", f"{out}/ck_partial.rank1-of-2.pt")


def _result(tr) -> dict:
    res = {"nets": {k: torch.cat([p.detach().reshape(-1) for p in net.parameters()]).clone()
                    for k, net in zip(tr.local_tasks_, tr.models_)},
           "history": tr.history_, "bytes": list(tr.sweep_bytes_), "resumed_epoch": tr.resumed_epoch_}
    for attr in ("weights_", "sigma_", "irls_iters_"):
        if hasattr(tr, attr):
            res[attr] = getattr(tr, attr)
    return res


def run(rank: int, world: int, port: int, out: str, names: list) -> None:
    """One rank: every case of ``names``; results (or the error) saved per rank."""
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    results = {}
    try:
        for name in names:
            make, args, kwargs = cases(out, rank)[name]
            try:
                tr = make().fit(*args, **kwargs)
            except (ValueError, RankFailureError) as e:
                results[name] = {"error": f"{type(e).__name__}: {e}"}
                continue
            results[name] = _result(tr)
            if isinstance(args[0], Lazy):
                results[name]["read"] = sorted(set(args[0].read))
            if name == "jacobi_n2":
                results[name]["evaluate"] = tr.evaluate("test")  # after fit: through the default group
        torch.save(results, f"{out}/results_rank{rank}.pt")
    finally:
        dist.destroy_process_group()


class _Fault(DigitsMLP):
    """Misbehaves on one rank at its n-th forward pass: dies, hangs or returns NaN."""

    mode = None
    at = 0
    calls = 0

    def forward(self, x):
        cls = type(self)
        cls.calls += 1
        if cls.mode in ("die", "hang") and cls.calls == cls.at:
            with open(f"{os.environ['MTLK_TEST_OUT']}/{cls.mode}.txt", "w") as f:
                f.write(repr(time.time()))
            if cls.mode == "die":
                os._exit(3)  # no cleanup, like a SIGKILL
            if cls.mode == "hang":
                time.sleep(3600)
        out = super().forward(x)
        return out * float("nan") if cls.mode == "nan" and cls.calls >= cls.at else out


def run_failure(rank: int, world: int, port: int, out: str, mode: str, timeout_s: float) -> None:
    """Rank 1 fails (``mode``) in its third sweep; every rank writes what it caught."""
    torch.set_num_threads(1)
    os.environ["MTLK_TEST_OUT"] = out
    if rank == 1:
        _Fault.mode, _Fault.at = mode, 1 + 2 * 2 + 1  # the shape check, 2 sweeps of 2 batches, then sweep 3
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    d = digits_domains(DOMAINS, seed=0, train_per_domain=24)[:world]
    tr = JointIRLSTrainer(lambda: _Fault(hidden=(12,)), cfg(epochs=40, dist_timeout_s=timeout_s))
    try:
        tr.fit(d)
        msg = "finished"
    except BaseException as e:  # noqa: BLE001
        msg = f"{type(e).__name__}: {e}\n" + "".join(traceback.format_exception(e))[-2000:]
    with open(f"{out}/caught_rank{rank}.txt", "w") as f:
        f.write(f"{time.time()!r}\n{msg}")
    os._exit(0)  # leave without waiting on the broken group
