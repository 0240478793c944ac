"""Trainers of the deep methods: config dataclasses, checkpoints with exact resume, metrics."""

from .joint_irls import (  # noqa: F401
    DigitsAutoEncoder,
    DigitsMLP,
    Isolated,
    JointIRLSConfig,
    JointIRLSTrainer,
    L2Reg,
    PretrainFinetune,
    Shareall,
)
