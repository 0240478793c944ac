"""Trainers: config dataclasses, seeded loops with a NaN guard, checkpoints with exact
resume, metrics as JSON.

- :class:`SupervisedTrainer`: one network, a loss, ``model.penalty()`` and proximal hooks.
- :class:`CETLTrainer` (seed 002): coupled end-to-end transfer learning and its baselines
  :class:`TargetOnlyTrainer`, :class:`FineTuneTrainer`, :class:`SoftTargetTrainer`.
"""

from ._base import TrainConfig
from .cetl import CETLConfig, CETLTrainer, FineTuneTrainer, SoftTargetTrainer, TargetOnlyTrainer, train_source
from .supervised import SupervisedTrainer

__all__ = ["TrainConfig", "SupervisedTrainer", "CETLConfig", "CETLTrainer", "TargetOnlyTrainer", "FineTuneTrainer",
           "SoftTargetTrainer", "train_source"]
