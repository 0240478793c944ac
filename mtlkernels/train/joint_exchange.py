"""What the ranks of a distributed joint-IRLS run exchange (Zhang et al. 2019, joint IRLS):
the per-layer squared distances behind the eq. 7 weights, the sigma rule (sec. 4.2.1) and
f_cons (eq. 3), and the eq. 9 consensus targets, all computed by the joint-IRLS ops of
:mod:`mtlkernels.ops` (``pairwise_sq_dists``, ``irls_consensus``).

Both are column-wise: the distance of layer l is a sum over its columns, and the eq. 9
target of a column mixes that column of every network. So the exchange shards the
columns of the (n, P) parameter matrix (one row per network) instead of gathering it:

1. ``all_to_all_single``: rank r receives columns [o_r, o_{r+1}) (about P / N of them) of
   every network from the rank that trains it;
2. ``pairwise_sq_dists`` on that (n, P / N) block gives partial per-layer distances (a
   layer cut by a block boundary is split into its two parts); their sum over the ranks
   (``reduce`` to rank 0, then ``broadcast``, so that every rank holds the same bits and
   takes the same weighting and stop decisions) is the (L, n, n) matrix D;
3. ``irls_consensus`` on the block gives the eq. 9 targets of every network on those
   columns, and a second ``all_to_all_single`` returns to each rank its networks' targets.

Bytes sent per sweep, with n networks of P parameters of b bytes, N ranks and L layers,
over all ranks together: 2 (N - 1) / N * n P b (the two all-to-alls) + 2 (N - 1) L n^2 b
(the distances) + the per-network metrics (a few n numbers); per rank, 1 / N of that.
Gathering every network's parameters on every rank instead (``all_gather``, then D and the
targets locally) sends (N - 1) n P b in all: the same for N = 2, N / 2 times more for
N > 2. Sending per-pair distances alone is not enough, as eq. 9 needs the parameters.

In one process (N = 1) nothing is sent: the block is the whole matrix.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .. import ops
from .joint_dist import JointComm

__all__ = ["ParamExchange", "column_blocks"]


def column_blocks(P: int, world_size: int) -> list[int]:
    """Column boundaries of the N blocks: [0, o_1, ..., P], sizes P // N or P // N + 1."""
    return [P * r // world_size for r in range(world_size + 1)]


class ParamExchange:
    """The (n, P) parameter matrix of a joint run, sharded by columns over the ranks.

    Args:
        comm: the run's :class:`~mtlkernels.train.joint_dist.JointComm`.
        rows: networks per rank (from :func:`~mtlkernels.train.joint_dist.placement`).
        offsets: the L + 1 layer boundaries of one network's flattened parameters.

    ``share(local)`` sends this rank's networks (an (n_local, P) matrix), after which
    ``sq_dists()`` and ``targets(c)`` are valid until the next ``share``.
    """

    def __init__(self, comm: JointComm, rows: list[int], offsets: list[int]):
        self.comm = comm
        self.rows = list(rows)
        self.n = sum(self.rows)
        self.offsets = [int(o) for o in offsets]
        self.L = len(self.offsets) - 1
        self.cols = column_blocks(self.offsets[-1], comm.world_size)
        a, b = self.cols[comm.rank], self.cols[comm.rank + 1]
        # the layers that meet this rank's columns [a, b), and their boundaries inside it
        self.layer_lo = next((l for l in range(self.L) if self.offsets[l + 1] > a), self.L)
        self.layer_hi = max((l + 1 for l in range(self.L) if self.offsets[l] < b), default=self.layer_lo)
        inner = [o - a for o in self.offsets[self.layer_lo + 1:self.layer_hi]]
        self.block_offsets = [0, *inner, b - a]
        self.block: Tensor | None = None
        self._D: Tensor | None = None

    @property
    def width(self) -> int:
        return self.cols[self.comm.rank + 1] - self.cols[self.comm.rank]

    def share(self, local: Tensor) -> None:
        """Send this rank's networks' parameters (n_local, P) and keep this rank's column
        block of every network (n, P / N)."""
        comm = self.comm
        self._D = None
        if not comm.enabled:
            self.block = local
            return
        me, n_loc = comm.rank, local.shape[0]
        if n_loc != self.rows[me]:
            raise ValueError(f"share: rank {me} trains {self.rows[me]} networks, got {n_loc} rows")
        send = torch.cat([local[:, self.cols[r]:self.cols[r + 1]].reshape(-1) for r in range(comm.world_size)])
        sizes_out = [n_loc * (self.cols[r + 1] - self.cols[r]) for r in range(comm.world_size)]
        sizes_in = [k * self.width for k in self.rows]
        self.block = comm.all_to_all(send, sizes_out, sizes_in).view(self.n, self.width)

    def _check(self) -> Tensor:
        if self.block is None:
            raise RuntimeError("ParamExchange: call share() first")
        return self.block

    def sq_dists(self) -> Tensor:
        """D[l, i, j] = ||theta_i^l - theta_j^l||^2 of all n networks (eq. 3), the same on every rank."""
        if self._D is not None:
            return self._D
        block = self._check()
        if not self.comm.enabled:
            self._D = ops.pairwise_sq_dists(block, self.offsets)
            return self._D
        D = block.new_zeros(self.L, self.n, self.n)
        if self.width > 0:
            D[self.layer_lo:self.layer_hi] = ops.pairwise_sq_dists(block, self.block_offsets)
        self._D = self.comm.reduce_broadcast(D)
        return self._D

    def targets(self, c: Tensor) -> Tensor:
        """The eq. 9 targets of this rank's networks, (n_local, P), from the per-layer
        coefficients ``c`` (L, n, n) of eq. 6."""
        block = self._check()
        c = c.to(block.dtype)
        comm = self.comm
        if not comm.enabled:
            return ops.irls_consensus(c, block, self.offsets)
        me, world = comm.rank, comm.world_size
        if self.width > 0:
            t = ops.irls_consensus(c[self.layer_lo:self.layer_hi].contiguous(), block, self.block_offsets)
        else:
            t = block
        sizes_out = [k * self.width for k in self.rows]
        widths = [self.cols[r + 1] - self.cols[r] for r in range(world)]
        sizes_in = [self.rows[me] * w for w in widths]
        got = comm.all_to_all(t.reshape(-1), sizes_out, sizes_in)
        parts = torch.split(got, sizes_in)
        return torch.cat([p.view(self.rows[me], w) for p, w in zip(parts, widths)], dim=1)
