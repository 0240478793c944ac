"""Data-parallel training on torch.distributed: 2 CPU processes (gloo), spawned here, train
the Adaptive Sharing layer, the attribute CNN, Deep-AMTFL and CETL for a few steps; their
weights must equal a single-process run on the same global batches (float tolerance),
be identical on both ranks (proximal steps included), and only rank 0 writes
checkpoints and metrics."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import _ddp_cases

pytestmark = pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(),
                                reason="torch.distributed with gloo is not available")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp")
    mp.spawn(_ddp_cases.run, args=(2, _free_port(), str(out)), nprocs=2, join=True)
    ranks = [torch.load(out / f"weights_rank{r}.pt", weights_only=True) for r in range(2)]
    single_out = tmp_path_factory.mktemp("single")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        single = {}
        for name, (trainer, args, kwargs) in _ddp_cases.cases(16, 0, str(single_out)).items():
            single[name] = trainer.fit(*args, **kwargs).model.state_dict()
    finally:
        torch.set_num_threads(threads)
    return out, ranks, single


@pytest.mark.parametrize("name", ["adaptive_sharing", "attribute_mtl", "deep_amtfl", "cetl"])
def test_two_processes_equal_one_process_on_the_same_global_batches(runs, name):
    _, ranks, single = runs
    r0, r1, one = ranks[0][name], ranks[1][name], single[name]
    assert r0.keys() == one.keys()
    for k in r0:
        assert torch.equal(r0[k], r1[k]), f"{name}: {k} differs between the ranks"
        torch.testing.assert_close(r0[k], one[k], rtol=1e-4, atol=1e-5, msg=f"{name}: {k}")
    moved = [k for k in r0 if r0[k].is_floating_point() and not torch.equal(r0[k], _initial(name)[k])]
    assert moved  # training did happen


def test_proximal_steps_ran_identically(runs):
    _, ranks, _ = runs
    S0, S1 = ranks[0]["adaptive_sharing"]["head.S"], ranks[1]["adaptive_sharing"]["head.S"]
    assert (S0 == 0).any() and torch.equal(S0 == 0, S1 == 0)
    avg0, avg1 = ranks[0]["deep_amtfl"]["task_loss_avg"], ranks[1]["deep_amtfl"]["task_loss_avg"]
    assert torch.equal(avg0, avg1) and bool((avg0 > 0).all())  # the running task losses were synchronised


def test_only_rank_0_writes_checkpoints_and_metrics(runs):
    out, _, _ = runs
    for tag in ("as", "attr", "amtfl", "cetl"):
        assert (Path(out) / f"ck_{tag}_rank0.pt").exists() and (Path(out) / f"m_{tag}_rank0.json").exists()
        assert not (Path(out) / f"ck_{tag}_rank1.pt").exists() and not (Path(out) / f"m_{tag}_rank1.json").exists()


_INITIAL: dict = {}


def _initial(name: str) -> dict:
    if name not in _INITIAL:
        trainer = _ddp_cases.cases(16, 0, "/nonexistent")[name][0]
        torch.manual_seed(0)
        _INITIAL[name] = trainer.build_model().state_dict()
    return _INITIAL[name]
