"""Joint IRLS (Zhang et al. 2019) and its baselines across processes: 2 and 3 CPU processes
(gloo), spawned here, one or two networks each, must give the parameters of the
single-process Jacobi run (float tolerance); each rank reads only its datasets; the bytes
sent per sweep follow the documented formula; per-rank checkpoints resume exactly; a rank
that dies, hangs or hits a NaN stops the others, within the timeout, with an error
naming it."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.distributed as dist

import _joint_dist_cases as C
from mtlkernels.train.joint_dist import placement
from mtlkernels.train.joint_exchange import column_blocks

pytestmark = pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(),
                                reason="torch.distributed with gloo is not available")

TWO = ["jacobi_n2", "jacobi_n4", "l2reg_n3", "isolated_n3", "shareall_n3", "shareall_ae_n3", "pretrain_n4",
       "uninterrupted_n4",
       "stopped_n4", "resumed_n4", "partial_stop", "partial_resumed", "gauss_seidel"]
THREE = ["jacobi_n3", "l2reg_n3", "jacobi_n2"]


def _spawn(tmp_path_factory, world: int, names: list[str]):
    out = tmp_path_factory.mktemp(f"joint{world}")
    codes = C.launch(C.run, world, (str(out), names), timeout=150)
    assert codes == [0] * world, f"ranks exited with {codes}"
    return out, [torch.load(out / f"results_rank{r}.pt", weights_only=True) for r in range(world)]


@pytest.fixture(scope="module")
def two(tmp_path_factory):
    return _spawn(tmp_path_factory, 2, TWO)


@pytest.fixture(scope="module")
def three(tmp_path_factory):
    return _spawn(tmp_path_factory, 3, THREE)


_SINGLE: dict = {}


def _single(name: str, tmp: Path):
    """The same case in this one process (no process group): the networks' parameters."""
    if name not in _SINGLE:
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            make, args, kwargs = C.cases(str(tmp), 0)[name]
            tr = make().fit(*args, **kwargs)
            start = make()
            start.config.epochs = 0
            start.fit(*args, **kwargs)
        finally:
            torch.set_num_threads(threads)
        _SINGLE[name] = (C._result(tr), C._result(start)["nets"])
    return _SINGLE[name]


def _check_equal_to_one_process(ranks: list[dict], name: str, tmp: Path):
    world = len(ranks)
    single, initial = _single(name, tmp)
    n = len(single["nets"])
    for r, ks in enumerate(placement(n, world)):
        assert sorted(ranks[r][name]["nets"]) == list(ks), f"rank {r} trained {sorted(ranks[r][name]['nets'])}"
    merged = {k: v for res in ranks for k, v in res[name]["nets"].items()}
    for k in range(n):
        torch.testing.assert_close(merged[k], single["nets"][k], rtol=1e-4, atol=1e-5, msg=f"{name}: network {k}")
        assert not torch.equal(merged[k], initial[k]), f"{name}: network {k} did not train"
    for res in ranks:  # every rank holds every network's history
        hist = res[name]["history"]
        assert [h["phase"] for h in hist] == [h["phase"] for h in single["history"]]
        assert [h["loss"] for h in hist] == pytest.approx([h["loss"] for h in single["history"]], rel=1e-4)
        if "weights_" in single:
            assert torch.equal(res[name]["weights_"], ranks[0][name]["weights_"])  # the same bits on every rank
            torch.testing.assert_close(res[name]["weights_"], single["weights_"], rtol=1e-4, atol=1e-5)
            assert res[name]["irls_iters_"] == single["irls_iters_"]


@pytest.mark.parametrize("name", ["jacobi_n2", "jacobi_n4", "l2reg_n3", "isolated_n3", "shareall_n3", "shareall_ae_n3",
                                  "pretrain_n4"])
def test_two_processes_equal_one_process(two, name, tmp_path):
    """One network per rank (n = 2), two per rank (n = 4), uneven (n = 3: 2 + 1)."""
    _check_equal_to_one_process(two[1], name, tmp_path)


def test_union_batches_can_leave_a_rank_without_samples():
    """shareall_ae_n3 covers a step in which rank 1 (datasets 2: union rows 48-71) has no sample."""
    from mtlkernels.train.data import index_batches

    assert any(not ((b >= 48) & (b < 72)).any() for b in index_batches(72, 4, 0, 0))


@pytest.mark.parametrize("name", ["jacobi_n3", "l2reg_n3"])
def test_three_processes_equal_one_process(three, name, tmp_path):
    _check_equal_to_one_process(three[1], name, tmp_path)


def test_argument_errors_across_processes(two, three):
    assert "pass schedule='jacobi'" in two[1][0]["gauss_seidel"]["error"]
    assert "3 processes for 2 datasets" in three[1][0]["jacobi_n2"]["error"]


def test_each_rank_reads_only_its_datasets(two):
    assert [res["jacobi_n4"]["read"] for res in two[1]] == [[0, 1], [2, 3]]


def test_evaluation_gathers_every_task(two):
    evs = [res["jacobi_n2"]["evaluate"] for res in two[1]]
    assert evs[0] == evs[1] and evs[0]["tasks"] == ["original", "rotated"] and len(evs[0]["per_task"]) == 2


def test_bytes_per_sweep_follow_the_formula(two, three):
    """Per sweep after the first: two all_to_alls of the column blocks, the (L, n, n)
    distances (reduce + broadcast) and the per-network losses and penalties (all_reduce)."""
    P, L, b = 64 * 12 + 12 + 12 * 10 + 10, 2, 4
    for ranks, name, n in ((two[1], "jacobi_n2", 2), (two[1], "uninterrupted_n4", 4), (three[1], "jacobi_n3", 3)):
        N = len(ranks)
        rows, cols = [len(p) for p in placement(n, N)], column_blocks(P, N)
        width = [cols[r + 1] - cols[r] for r in range(N)]
        for r, res in enumerate(ranks):
            out = rows[r] * (P - width[r]) * b + (n - rows[r]) * width[r] * b
            dists = L * n * n * b * (N - 1 if r == 0 else 1)
            metrics = 2 * (N - 1) * (2 * n * 8) // N
            assert res[name]["bytes"][1:] == [out + dists + metrics] * (len(res[name]["bytes"]) - 1), (name, r)


def test_resume_after_a_stop_equals_an_uninterrupted_run(two):
    out, ranks = two
    for res in ranks:
        assert res["resumed_n4"]["nets"].keys() == res["uninterrupted_n4"]["nets"].keys()
        for k, v in res["resumed_n4"]["nets"].items():
            assert torch.equal(v, res["uninterrupted_n4"]["nets"][k])
        assert [h["loss"] for h in res["resumed_n4"]["history"]] == [h["loss"] for h in
                                                                      res["uninterrupted_n4"]["history"]]
    for r in range(2):  # one file per rank, and the epoch before it
        assert (out / f"ck_resume.rank{r}-of-2.pt").exists() and (out / f"ck_resume.rank{r}-of-2.prev.pt").exists()
    assert not (out / "ck_resume.pt").exists()
    state = torch.load(out / "ck_resume.rank1-of-2.pt", weights_only=True)
    assert state["epoch"] == 5 and sorted(state["optimizers"]) == ["net2", "net3"]


def test_resume_takes_the_newest_epoch_every_rank_holds(two):
    """Rank 1 lost its epoch-3 checkpoint (rank 0 has 3 and 2): both resume from epoch 2,
    and the result is still the uninterrupted run's."""
    for res in two[1]:
        assert res["partial_resumed"]["resumed_epoch"] == 2 and res["resumed_n4"]["resumed_epoch"] == 3
        for k, v in res["partial_resumed"]["nets"].items():
            assert torch.equal(v, res["uninterrupted_n4"]["nets"][k])
        assert len(res["partial_resumed"]["history"]) == 5


@pytest.mark.parametrize("mode, timeout_s", [("die", 20.0), ("hang", 3.0), ("nan", 20.0)])
def test_a_failed_rank_stops_the_others_with_its_name(tmp_path, mode, timeout_s):
    """Rank 1 dies (no cleanup), hangs, or hits a NaN in its third sweep: rank 0 raises a
    RankFailureError naming rank 1 within dist_timeout_s, and never hangs."""
    codes = C.launch(C.run_failure, 2, (str(tmp_path), mode, timeout_s), timeout=90, wait_for=[0])
    assert codes[0] == 0, f"rank 0 did not finish in time ({codes})"
    when, msg = (tmp_path / "caught_rank0.txt").read_text().split("\n", 1)
    assert msg.startswith("RankFailureError") and "rank 1" in msg.split("\n")[0], msg[:500]
    if mode in ("die", "hang"):
        failed = float((tmp_path / f"{mode}.txt").read_text())
        # the collective's timeout (a hang) and 1.5 s to read the heartbeats, plus a margin for a busy machine
        assert float(when) - failed < (timeout_s if mode == "die" else timeout_s + 1.5 + 5)
        assert ("died or froze" if mode == "die" else "alive but has not reached") in msg
    else:
        assert "FloatingPointError: non-finite loss" in msg
        assert "FloatingPointError" in (tmp_path / "caught_rank1.txt").read_text()


def test_placement():
    assert placement(5, 2) == [range(0, 3), range(3, 5)]
    assert placement(4, 4) == [range(i, i + 1) for i in range(4)]
    with pytest.raises(ValueError, match="3 processes for 2 datasets"):
        placement(2, 3)
    assert column_blocks(10, 3) == [0, 3, 6, 10]
