"""Evaluation of the joint trainers (Zhang et al. 2019, joint IRLS, sec. 5): per-task
accuracy or reconstruction error of each dataset's network, gathered over the ranks under
torchrun (:class:`JointEvaluation`, a mixin of :class:`~mtlkernels.train.joint.JointTrainer`)."""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor

from .data import check_labels
from .joint_data import as_task_data, recon_error

__all__ = ["JointEvaluation"]


class JointEvaluation:
    """``evaluate``, ``predict`` and the per-sweep validation scores of a joint trainer."""

    def _eval_sets(self, data) -> list[tuple[Tensor, Tensor]]:
        if isinstance(data, str):
            missing = [d.name for d in self.data if data not in d.splits]
            if missing:
                raise ValueError(f"{self.name}: no {data!r} split for datasets {missing}; pass one (X, y) per dataset")
            return [d.splits[data] for d in self.data]
        if isinstance(data, Tensor) or not hasattr(data, "__getitem__") or not hasattr(data, "__len__") \
                or len(data) != self.n:
            raise ValueError(f"{self.name}: evaluation needs one dataset per network ({self.n})")
        out = []
        for p, k in enumerate(self.local_):
            dd = as_task_data(data[k], k, self.config.task)
            if tuple(dd.X.shape[1:]) != tuple(self.data[p].X.shape[1:]):
                raise ValueError(f"{self.name}: evaluation dataset {k} has inputs of shape {tuple(dd.X.shape[1:])}, "
                                 f"the training data {tuple(self.data[p].X.shape[1:])}")
            if self.config.task == "classification" and hasattr(self, "n_classes"):
                check_labels(dd.Y, self.n_classes, f"{self.name}: evaluation dataset {k}")
            out.append((dd.X, dd.Y))
        return out

    @torch.no_grad()
    def predict(self, X: Tensor, task: int) -> Tensor:
        """Outputs of dataset ``task``'s network on X (scores, or reconstructions)."""
        self._check_fitted()
        if task not in self.local_:
            owner = next((r for r, ks in enumerate(self.placement) if task in ks), None)
            raise ValueError(f"{self.name}: task {task} is not one of this rank's datasets {list(self.local_)}"
                             + (f" (it is trained on rank {owner})" if owner is not None else f" (n = {self.n})"))
        net = self._net_for(task - self.local_.start)
        was = net.training
        net.eval()
        outs = [net(X[a:a + 1024].to(self.device)) for a in range(0, len(X), 1024)]
        net.train(was)
        return torch.cat(outs).float().cpu()

    def _scores(self, sets) -> dict:
        per = []
        for k, (X, Y) in zip(self.local_, sets):
            out = self.predict(X, k)
            if self.config.task == "classification":
                per.append(float((out.argmax(1) == Y.cpu()).double().mean()))
            else:
                per.append(float(recon_error(out.double(), Y.cpu().double())))
        names, per = self._gather_tasks(per)
        return {"tasks": names, "per_task": per, "mean": sum(per) / len(per)}

    def _gather_tasks(self, values: list[float]) -> tuple[list[str], list[float]]:
        """This rank's per-task values -> every task's (names, values). After ``fit`` under
        torchrun, through the default process group while it lives, else this rank's tasks only."""
        comm, local_names = self.comm, [d.name for d in self.data]
        if comm is None or not comm.enabled:
            return local_names, values
        names = [m["name"] for m in self.meta]
        if not comm.closed:
            return names, self._per_network({"v": values})["v"]
        if dist.is_initialized() and dist.get_world_size() == comm.world_size:
            t = torch.zeros(self.n, dtype=torch.float64)
            t[self.local_.start:self.local_.stop] = torch.tensor(values, dtype=torch.float64)
            t = t.to(comm.device)
            dist.all_reduce(t)
            return names, t.cpu().tolist()
        return local_names, values

    def evaluate(self, data="test") -> dict:
        """Per-task metrics: accuracy (classification) or reconstruction error
        (1/|I|) sum ||I - G(I)||_F^2 (auto-encoders, lower is better). Under torchrun every
        rank must call it (the ranks' results are gathered)."""
        res = self._scores(self._eval_sets(data))
        return {"method": self.method, "metric": "accuracy" if self.config.task == "classification" else "recon_error",
                **res}
