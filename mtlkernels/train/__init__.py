"""Trainers of the deep methods: one :class:`Trainer` base and a small subclass per method.

Every trainer is built as ``SomeTrainer(model, config)`` and trained with
``fit(train, val=None)``: ``model`` is an ``nn.Module`` or a factory returning one
(built after seeding, so that two runs with one seed are identical), ``config`` a
:class:`TrainConfig` dataclass (or the method's subclass of it), ``train``/``val`` a
``DataLoader`` or ``(X, y)`` tensors. The base owns seeding, devices, the optimiser,
penalties and proximal steps, the NaN guard, logging, checkpoints with a config
fingerprint, mixed precision and ``torchrun`` data parallelism (see
:mod:`mtlkernels.train.trainer`).

- any single network (Adaptive Sharing layer, baselines): trainer :class:`SupervisedTrainer`; config :class:`TrainConfig`
- Abdulnabi et al. 2015 (``attribute_mtl``): trainer :class:`AttributeMTLTrainer`; config :class:`AttributeMTLConfig`
- Lee et al. 2018 (``amtfl``: Deep-AMTFL, CNN, MT-CNN, Deep-AMTL): trainer :class:`DeepAMTFLTrainer`; config :class:`DeepAMTFLConfig`
- Chen et al. 2018 (``cetl``): trainer :class:`CETLTrainer`; baselines :class:`TargetOnlyTrainer`, :class:`FineTuneTrainer`, :class:`SoftTargetTrainer`; config :class:`CETLConfig`
- Zhang et al. 2019 (``joint_irls``): trainer :class:`JointIRLSTrainer`; baselines :class:`L2Reg`, :class:`Isolated`, :class:`Shareall`, :class:`PretrainFinetune`; config :class:`JointIRLSConfig`

The joint trainers run one network per rank (or k networks per rank) under ``torchrun``
(:mod:`mtlkernels.train.joint_dist`, :mod:`mtlkernels.train.joint_exchange`); a rank that
fails stops the others with a :class:`RankFailureError` naming it.
"""

from .amtfl import DeepAMTFLConfig, DeepAMTFLTrainer
from .attribute_mtl import AttributeMTLConfig, AttributeMTLTrainer
from .cetl import CETLTrainer
from .cetl_baselines import (FineTuneConfig, FineTuneTrainer, SoftTargetConfig, SoftTargetTrainer, TargetOnlyTrainer,
                             train_source)
from .cetl_config import CETLConfig
from .checkpoint import CheckpointError
from .config import TrainConfig
from .joint import JointTrainer
from .joint_baselines import Isolated, PretrainFinetune, Shareall
from .joint_config import JointIRLSConfig
from .joint_dist import RankFailureError
from .joint_irls import IRLSState, JointIRLSTrainer, L2Reg
from .supervised import SupervisedTrainer
from .trainer import Trainer

__all__ = [
    "Trainer",
    "TrainConfig",
    "CheckpointError",
    "SupervisedTrainer",
    "AttributeMTLConfig",
    "AttributeMTLTrainer",
    "DeepAMTFLConfig",
    "DeepAMTFLTrainer",
    "CETLConfig",
    "CETLTrainer",
    "TargetOnlyTrainer",
    "FineTuneConfig",
    "FineTuneTrainer",
    "SoftTargetConfig",
    "SoftTargetTrainer",
    "train_source",
    "JointIRLSConfig",
    "JointTrainer",
    "JointIRLSTrainer",
    "IRLSState",
    "L2Reg",
    "Isolated",
    "Shareall",
    "PretrainFinetune",
    "RankFailureError",
]
