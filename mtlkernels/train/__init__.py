"""Trainers of the deep methods: config dataclasses, checkpoints with exact resume, metrics."""

from .amtfl import DeepAMTFLConfig, DeepAMTFLTrainer  # noqa: F401  seed 004
