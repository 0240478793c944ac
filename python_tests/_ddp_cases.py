"""Trainers run both in 2 spawned processes (gloo) and in one process by test_distributed.py.

``cases(batch_size, world_size, rank, out)`` returns name -> (trainer, fit args, fit kwargs):
the same data, models and settings in every process; ``batch_size`` is per process, so
one process with batch 2b sees the same global batches as two with batch b.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

from mtlkernels.datasets import digits_images
from mtlkernels.experiments.attribute_mtl import GROUPS, digit_attributes
from mtlkernels.nn import AdaptiveSharingLinear, AttributeCNN, CETLNetworks, DigitsCNN, deep_amtfl_model
from mtlkernels.train import (AttributeMTLConfig, AttributeMTLTrainer, CETLConfig, CETLTrainer, DeepAMTFLConfig,
                              DeepAMTFLTrainer, SupervisedTrainer, TrainConfig)


def _as_model():
    net = DigitsCNN(width=4, hidden=16)
    net.head = AdaptiveSharingLinear(16, 10, lambda_c=1e-2, lambda_s=5e-2, eps=1e-2)
    return net


def cases(batch_size: int, rank: int, out: str) -> dict:
    d = digits_images(seed=0, per_class=8)  # 80 training images: 5 global batches of 16
    train = (d.X_train, d.y_train)
    paths = lambda name: dict(checkpoint_path=f"{out}/ck_{name}_rank{rank}.pt",  # noqa: E731
                              metrics_path=f"{out}/m_{name}_rank{rank}.json")
    common = dict(epochs=2, batch_size=batch_size, optimizer="sgd", momentum=0.9, seed=0)
    torch.manual_seed(0)
    source = DigitsCNN(5, width=4, hidden=16)  # an untrained S is enough to exercise the stages
    tgt = torch.nonzero(d.y_train >= 5).flatten()[:64]
    return {
        "adaptive_sharing": (SupervisedTrainer(_as_model, TrainConfig(lr=0.05, **common, **paths("as"))),
                             (train,), {}),
        "attribute_mtl": (AttributeMTLTrainer(lambda: AttributeCNN(9, "MG", GROUPS, "shared", 4, 4, 16, mu=0.3),
                                              AttributeMTLConfig(lr=0.05, **common, **paths("attr"))),
                          ((d.X_train, digit_attributes(d.y_train)),), {}),
        "deep_amtfl": (DeepAMTFLTrainer(lambda: deep_amtfl_model("deep_amtfl", width=4, hidden=16, alpha=0.5,
                                                                 gamma=0.1, mu=1e-2, delta=0.1),
                                        DeepAMTFLConfig(lr=0.05, warmup_epochs=1, **common, **paths("amtfl"))),
                       (train,), {}),
        "cetl": (CETLTrainer(lambda: CETLNetworks(source, DigitsCNN(5, width=4, hidden=16)),
                             CETLConfig(lr=0.02, fisher_samples=8, stage_epochs=(1, 1, 1), **common,
                                        **paths("cetl"))),
                 ((d.X_train[tgt[:32]], d.y_train[tgt[:32]] - 5),), {"unlabeled": d.X_train[tgt[32:]]}),
    }


def run(rank: int, world_size: int, port: int, out: str) -> None:
    """The body of one spawned process: every case with batch 8, weights saved per rank."""
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size)
    try:
        weights = {}
        for name, (trainer, args, kwargs) in cases(8, rank, out).items():
            trainer.fit(*args, **kwargs)
            weights[name] = {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}
        torch.save(weights, f"{out}/weights_rank{rank}.pt")
    finally:
        dist.destroy_process_group()
