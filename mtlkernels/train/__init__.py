"""Trainers: config dataclasses, seeded loops with a NaN guard, checkpoints with exact
resume, metrics as JSON.

- :class:`SupervisedTrainer`: one network, a loss, penalties and proximal hooks (the
  loop under the Adaptive Sharing layer, the attribute CNN, Deep-AMTFL and baselines).
- :class:`AttributeTrainer` (seed 003): the multi-task attribute CNN and its variants.
- :class:`JointIRLSTrainer` (seed 001) and the baselines :class:`Isolated`,
  :class:`L2Reg`, :class:`Shareall`, :class:`PretrainFinetune`.
- :class:`DeepAMTFLTrainer` (seed 004 eq. 7) for Deep-AMTFL and its baselines.
- :class:`CETLTrainer` (seed 002): coupled end-to-end transfer learning and its baselines
  :class:`TargetOnlyTrainer`, :class:`FineTuneTrainer`, :class:`SoftTargetTrainer`.
"""

from ._base import TrainConfig
from .amtfl import DeepAMTFLConfig, DeepAMTFLTrainer
from .attribute import AttributeConfig, AttributeTrainer
from .cetl import CETLConfig, CETLTrainer, FineTuneTrainer, SoftTargetTrainer, TargetOnlyTrainer, train_source
from .joint_irls import (DigitsAutoEncoder, DigitsMLP, Isolated, JointIRLSConfig, JointIRLSTrainer, L2Reg,
                         PretrainFinetune, Shareall)
from .supervised import SupervisedTrainer

__all__ = [
    "TrainConfig",
    "SupervisedTrainer",
    "AttributeConfig",
    "AttributeTrainer",
    "JointIRLSConfig",
    "JointIRLSTrainer",
    "Isolated",
    "L2Reg",
    "Shareall",
    "PretrainFinetune",
    "DigitsAutoEncoder",
    "DigitsMLP",
    "DeepAMTFLConfig",
    "DeepAMTFLTrainer",
    "CETLConfig",
    "CETLTrainer",
    "TargetOnlyTrainer",
    "FineTuneTrainer",
    "SoftTargetTrainer",
    "train_source",
]
