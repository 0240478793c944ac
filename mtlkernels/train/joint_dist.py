"""The joint trainers (Zhang et al. 2019, joint IRLS, and its baselines) across processes:
which rank trains which network, the process group they talk over, and how a rank that
fails is found and named.

Layout. ``torchrun --nproc_per_node=N`` starts N ranks for n >= N networks: rank r trains
a contiguous block of networks (``n // N``, the first ``n % N`` ranks one more,
:func:`placement`) and reads only their datasets.

Communication. torch.distributed collectives only (gloo on CPU, NCCL on CUDA), over one
process group made for the run with the timeout ``config.dist_timeout_s``
(:class:`JointComm`): the datasets' descriptions once (``all_gather_object``), then per
sweep the parameter exchange of :mod:`mtlkernels.train.joint_exchange` and one
``all_reduce`` of the per-network losses and metrics. Nothing is exchanged inside a
sweep: each rank trains its networks on its own (their datasets may differ in size).

Failures. A rank that dies closes its connections: the others' next collective fails at
once (gloo), or after ``dist_timeout_s`` when a rank hangs or the backend cannot tell
(NCCL's watchdog then ends the process). :meth:`JointComm.guard` turns that error into a
:class:`RankFailureError` that names the rank, read from the rendezvous store that
torch.distributed already runs: every rank bumps a counter there every
:data:`HEARTBEAT_S` seconds (a thread), writes its error there when it stops with one, and
records the stage it has reached. The rank whose counter stopped, that wrote an error, or
that lags behind is the one named.
"""

from __future__ import annotations

import threading
import time
import uuid
from contextlib import contextmanager
from datetime import timedelta

import torch
import torch.distributed as dist
from torch import Tensor

__all__ = ["RankFailureError", "JointComm", "placement", "HEARTBEAT_S"]

#: Seconds between two heartbeats; a rank is declared stopped when its counter does not
#: move for three of them.
HEARTBEAT_S = 0.5


class RankFailureError(RuntimeError):
    """Another rank of a distributed joint run died, hung, or stopped with an error."""

    def __init__(self, message: str, ranks: list[int]):
        super().__init__(message)
        self.ranks = ranks


def placement(n: int, world_size: int) -> list[range]:
    """The networks of each rank: contiguous blocks, sizes n // N or n // N + 1."""
    if world_size > n:
        raise ValueError(f"{world_size} processes for {n} datasets: every rank needs at least one network; "
                         f"launch at most {n} processes (torchrun --nproc_per_node)")
    base, extra = divmod(n, world_size)
    out, start = [], 0
    for r in range(world_size):
        size = base + (r < extra)
        out.append(range(start, start + size))
        start += size
    return out


def _tcp_store(store):
    while isinstance(store, dist.PrefixStore):
        store = store.underlying_store
    return store if isinstance(store, dist.TCPStore) else None


class JointComm:
    """The process group of one joint run and its bookkeeping (a no-op in one process).

    ``bytes_sent`` counts the payload this rank sends to the others, by collective:
    ``all_to_all_single`` what it sends off-rank; ``reduce`` + ``broadcast`` the tensor
    once per non-root rank and N - 1 times on the root; ``all_reduce`` 2 (N - 1) / N times
    the tensor (a ring). The backends' own algorithms may forward more.
    """

    def __init__(self, rank: int, world_size: int, device: torch.device, timeout_s: float):
        self.rank, self.world_size = rank, world_size
        self.enabled = world_size > 1
        self.closed = False
        self.stage = "started"
        self.calls = 0  # collectives entered, recorded with the stage
        self.bytes_sent = 0
        self.group = None
        self._store = None
        self._stop = threading.Event()
        self._thread = None
        if not self.enabled:
            self.device = device
            return
        self.group = dist.new_group(timeout=timedelta(seconds=float(timeout_s)))
        self.device = device if dist.get_backend(self.group) == "nccl" else torch.device("cpu")
        box = [uuid.uuid4().hex if rank == 0 else None]
        dist.broadcast_object_list(box, src=0, group=self.group)
        self._prefix = f"mtlkernels/joint/{box[0]}/"
        base = dist.distributed_c10d._get_default_store()
        self._tcp = _tcp_store(base)
        self._store = dist.PrefixStore(self._prefix, self._tcp if self._tcp is not None else base)
        self.mark("started")
        self._thread = threading.Thread(target=self._beat, name=f"mtlkernels-heartbeat-{rank}", daemon=True)
        self._thread.start()

    # ---- collectives -----------------------------------------------------------------------

    def all_gather_object(self, obj) -> list:
        if not self.enabled:
            return [obj]
        self._enter()
        out = [None] * self.world_size
        dist.all_gather_object(out, obj, group=self.group)
        return out

    def all_reduce_sum(self, t: Tensor) -> Tensor:
        """Sum of ``t`` over the ranks (a new tensor on ``t``'s device)."""
        if not self.enabled:
            return t
        self._enter()
        buf = t.to(self.device, copy=True).contiguous()
        dist.all_reduce(buf, group=self.group)
        self.bytes_sent += 2 * (self.world_size - 1) * buf.numel() * buf.element_size() // self.world_size
        return buf.to(t.device)

    def reduce_broadcast(self, t: Tensor) -> Tensor:
        """Sum of ``t`` over the ranks, computed on rank 0 and sent to every rank, so that
        every rank holds the same bits (decisions taken from it agree)."""
        if not self.enabled:
            return t
        self._enter()
        buf = t.to(self.device, copy=True).contiguous()
        dist.reduce(buf, dst=0, group=self.group)
        dist.broadcast(buf, src=0, group=self.group)
        size = buf.numel() * buf.element_size()
        self.bytes_sent += size * (self.world_size - 1 if self.rank == 0 else 1)
        return buf.to(t.device)

    def all_to_all(self, send: Tensor, send_splits: list[int], recv_splits: list[int]) -> Tensor:
        """``all_to_all_single``: this rank sends ``send_splits[r]`` elements of the flat
        ``send`` to rank r and receives ``recv_splits[r]`` from it (concatenated by rank)."""
        self._enter()
        dev = send.device
        send = send.to(self.device).contiguous().view(-1)
        out = send.new_empty(sum(recv_splits))
        dist.all_to_all_single(out, send, output_split_sizes=list(recv_splits), input_split_sizes=list(send_splits),
                               group=self.group)
        off = sum(s for r, s in enumerate(send_splits) if r != self.rank)
        self.bytes_sent += off * send.element_size()
        return out.to(dev)

    # ---- failures --------------------------------------------------------------------------

    def mark(self, stage: str) -> None:
        """Record the stage this rank has reached (read when another rank times out)."""
        self.stage = stage
        self._record()

    def _enter(self) -> None:
        self.calls += 1
        self._record()

    def _record(self) -> None:
        if self._store is not None:
            try:
                self._store.set(f"at/{self.rank}", f"{self.calls}|{self.stage}")
            except Exception:  # noqa: BLE001 (the store is gone: the next collective says so)
                pass

    def _beat(self) -> None:
        try:
            if self._tcp is not None:  # a client of its own: store clients are not shared across threads
                client = dist.TCPStore(self._tcp.host, self._tcp.port, is_master=False,
                                       timeout=timedelta(seconds=30), wait_for_workers=False)
                store = dist.PrefixStore(self._prefix, client)
            else:
                return
            while not self._stop.is_set():
                store.add(f"hb/{self.rank}", 1)
                self._stop.wait(HEARTBEAT_S)
        except Exception:  # noqa: BLE001 (the store is gone; the main thread's collective fails)
            return

    def diagnose(self) -> tuple[list[int], str] | None:
        """The ranks that failed and why, or None when every other rank looks healthy."""
        others = [r for r in range(self.world_size) if r != self.rank]
        st = self._store
        try:
            def at(r):  # (collectives entered, stage) recorded by rank r
                calls, _, stage = (st.get(f"at/{r}").decode() if st.check([f"at/{r}"]) else "0|?").partition("|")
                return int(calls), stage

            stage = lambda r: at(r)[1]  # noqa: E731
            bad, why = [], []
            for r in others:
                if st.check([f"failed/{r}"]):
                    bad.append(r)
                    why.append(f"rank {r} stopped with an error at {stage(r)}: {st.get(f'failed/{r}').decode()}")
            if self._thread is not None:
                before = [st.add(f"hb/{r}", 0) for r in others]
                time.sleep(3 * HEARTBEAT_S)
                after = [st.add(f"hb/{r}", 0) for r in others]
                for r, a, b in zip(others, before, after):
                    if a == b and r not in bad:
                        bad.append(r)
                        why.append(f"rank {r} died or froze (no heartbeat for {3 * HEARTBEAT_S:g} s; last at "
                                   f"{stage(r)})")
            if not bad:
                mine = (self.calls, self.stage)
                for r in others:
                    if at(r)[0] < mine[0]:
                        bad.append(r)
                        why.append(f"rank {r} is alive but has not reached collective {mine[0]} ({mine[1]}) within "
                                   f"the timeout: it is at collective {at(r)[0]} ({stage(r)})")
        except Exception as e:  # noqa: BLE001
            return [0], (f"rank 0 stopped: the rendezvous store no longer answers ({type(e).__name__}); it is hosted "
                         "by rank 0 (or by the torchrun agent, which then stopped)")
        return (sorted(bad), "; ".join(why)) if bad else None

    @contextmanager
    def guard(self, where: str):
        """Turn a failed or timed-out collective into a :class:`RankFailureError` naming the rank."""
        if not self.enabled:
            yield
            return
        try:
            yield
        except RankFailureError:
            raise
        except RuntimeError as e:
            found = self.diagnose()
            if found is None:
                raise
            ranks, why = found
            first = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
            raise RankFailureError(f"{where} ({self.stage}): {why}. Rank {self.rank} of {self.world_size} stops too (its collective "
                                   f"failed: {first})", ranks) from e

    def close(self, error: BaseException | None = None) -> None:
        """Stop the heartbeat (writing ``error`` for the other ranks to read) and destroy the
        group; later collectives are refused (``closed``)."""
        if not self.enabled or self.closed:
            self.closed = True
            return
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        if error is not None and not isinstance(error, RankFailureError) and self._store is not None:
            try:
                self._store.set(f"failed/{self.rank}", f"{type(error).__name__}: {str(error)[:500]}")
            except Exception:  # noqa: BLE001
                pass
        if self.group is not None and dist.is_initialized():
            try:
                dist.destroy_process_group(self.group)
            except Exception:  # noqa: BLE001 (a broken group after a failure)
                pass
        self.group = None
        self.closed = True
