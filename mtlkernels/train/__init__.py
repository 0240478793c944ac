"""Trainers: config dataclasses, seeded loops with a NaN guard, checkpoints with exact
resume, metrics as JSON.

- :class:`SupervisedTrainer`: one network, a loss, ``model.penalty()`` and proximal hooks.
- :class:`AttributeTrainer` (seed 003): the multi-task attribute CNN and its variants.
"""

from ._base import TrainConfig
from .attribute import AttributeConfig, AttributeTrainer
from .supervised import SupervisedTrainer

__all__ = ["TrainConfig", "SupervisedTrainer", "AttributeConfig", "AttributeTrainer"]
