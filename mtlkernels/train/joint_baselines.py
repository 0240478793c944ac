"""The baselines of Zhang et al. 2019 (joint IRLS), sec. 5.1, on the joint trainers' base
(:class:`~mtlkernels.train.joint.JointTrainer`): :class:`Isolated`, :class:`Shareall` and
:class:`PretrainFinetune` (L2Reg is in :mod:`mtlkernels.train.joint_irls`).

Under ``torchrun`` Isolated trains each rank's networks alone. Shareall (and the
pretraining of PretrainFinetune) trains one network on the union of every dataset: each
rank holds a copy and reads its own datasets, every rank draws the same batch of the
union (the permutation of ``config.seed``), computes the loss of the batch's samples it
holds, and the gradients are summed over the ranks (one ``all_reduce`` per step), so the
copies take the very steps of one process on the same union batches.
"""

from __future__ import annotations

import torch
from torch import nn

from .config import make_optimizer
from .data import index_batches
from .joint import JointTrainer
from .joint_config import network_seed

__all__ = ["Isolated", "Shareall", "PretrainFinetune"]


class Isolated(JointTrainer):
    """Baseline I of Zhang et al. 2019 sec. 5.1: each network trained on its own dataset alone."""

    method = "isolated"

    def _run_epoch(self, epoch: int) -> dict:
        recs = [self._epoch_on(p, *self._dev_data[p], epoch, None, f"network {k}") for p, k in enumerate(self.local_)]
        g = self._per_network({"loss": [r["loss"] for r in recs]})
        return {"phase": "isolated", "loss": sum(g["loss"]) / self.n, "task_loss": g["loss"]}


class _UnionTrainer(JointTrainer):
    """One network trained on the union of the datasets (data parallel over the ranks)."""

    def setup(self) -> None:
        super().setup()
        sizes = [m["n_train"] for m in self.meta]
        starts = [sum(sizes[:k]) for k in range(self.n + 1)]
        self._union_n = starts[-1]
        self._union_lo, self._union_hi = starts[self.local_.start], starts[self.local_.stop]
        self._union = (torch.cat([x for x, _ in self._dev_data]), torch.cat([y for _, y in self._dev_data]))

    def _union_epoch(self, epoch: int, where: str) -> float:
        """One epoch of the shared network (local position 0) on the union's batches of
        ``config.batch_size``; returns the mean data loss over the union."""
        net, opt = self.nets[0], self.optimizers[f"net{self._net_keys()[0]}"]
        X, Y = self._union
        lo, hi = self._union_lo, self._union_hi
        net.train()
        torch.manual_seed(network_seed(self.config.seed, "union", epoch))
        total = 0.0

        def sum_grads():
            grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in net.parameters()]
            flat = self.comm.all_reduce_sum(torch.cat([g.reshape(-1) for g in grads]))
            for p, g in zip(net.parameters(), torch.split(flat, [g.numel() for g in grads])):
                p.grad = g.view_as(p).to(p.dtype)

        for step, idx in enumerate(index_batches(self._union_n, self.config.batch_size, int(self.config.seed) * 1009,
                                                 epoch)):
            mine = (idx[(idx >= lo) & (idx < hi)] - lo).to(self.device)
            parts: dict = {}

            def closure(mine=mine, size=len(idx)):
                parts["sum"] = self._loss(net(X[mine]), Y[mine], reduction="sum").float()
                return parts["sum"] / size

            self.optimize(closure, opt, f"{where} epoch {epoch} step {step}", prox_module=net,
                          after_backward=sum_grads if self.comm.enabled else None)
            total += float(parts["sum"].detach())
        return float(self.comm.all_reduce_sum(torch.tensor([total], dtype=torch.float64))[0]) / self._union_n


class Shareall(_UnionTrainer):
    """Baseline III of Zhang et al. 2019 sec. 5.1: one network shared by all datasets,
    trained on the union of the training sets (batches drawn from the union: with
    datasets of equal size the loss is (1/n) sum_i f_i, eq. 1 up to the factor 1/n)."""

    method = "shareall"

    def _net_keys(self) -> list[int]:
        return [0]

    def _net_for(self, p: int) -> nn.Module:
        return self.nets[0]

    def _run_epoch(self, epoch: int) -> dict:
        return {"phase": "shareall", "loss": self._union_epoch(epoch, "shared network")}


class PretrainFinetune(_UnionTrainer):
    """Baseline IV of Zhang et al. 2019 sec. 5.1: Shareall for ``pretrain_epochs`` sweeps,
    then each network starts from the shared weights and is fine-tuned on its own dataset
    alone (fresh optimisers) for the rest of the budget. Pretraining uses this rank's first
    network, which starts from network 0's weights on every rank."""

    method = "pretrain_finetune"

    def _pretrain_epochs(self) -> int:
        p = self.config.pretrain_epochs
        return self.config.epochs // 2 if p is None else min(p, self.config.epochs)

    def fingerprint_extra(self) -> dict:
        return {**super().fingerprint_extra(), "pretrain_epochs": self._pretrain_epochs()}

    def build_model(self) -> nn.ModuleList:
        nets = super().build_model()
        if self._net_keys()[0] != 0 and not self.config.same_init:  # the shared network starts as network 0
            nets[0].load_state_dict(self._build_net(0).state_dict())
        return nets

    def setup(self) -> None:
        super().setup()
        self.phase_ = "pretrain"

    def configure_optimizers(self) -> dict:
        opts = super().configure_optimizers()
        if self._pretrain_epochs() == 0:
            self._switch(opts)
        return opts

    def _net_for(self, p: int) -> nn.Module:
        return self.nets[0] if self.phase_ == "pretrain" else self.nets[p]

    def _switch(self, opts: dict) -> None:
        sd = self.nets[0].state_dict()
        for net in self.nets[1:]:
            net.load_state_dict(sd)
        opts.update({f"net{k}": make_optimizer(net.parameters(), self.config)
                     for k, net in zip(self._net_keys(), self.nets)})
        self.phase_ = "finetune"

    def extra_state(self) -> dict:
        return {"phase": self.phase_}

    def load_extra_state(self, state: dict) -> None:
        self.phase_ = state["phase"]

    def _run_epoch(self, epoch: int) -> dict:
        if self.phase_ == "pretrain":
            loss = self._union_epoch(epoch, "pretraining")
            if epoch + 1 >= self._pretrain_epochs():
                self._switch(self.optimizers)
            return {"phase": "pretrain", "loss": loss}
        recs = [self._epoch_on(p, *self._dev_data[p], epoch, None, f"fine-tuning network {k}")
                for p, k in enumerate(self.local_)]
        g = self._per_network({"loss": [r["loss"] for r in recs]})
        return {"phase": "finetune", "loss": sum(g["loss"]) / self.n, "task_loss": g["loss"]}
