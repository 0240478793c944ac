"""The experiments `make demo` and `mtlkernels run METHOD` know, by name.

Each entry names a module and a function with the signature
``run(seeds, quick, out_dir, log) -> {"title", "columns", "rows", "notes", "plots", "raw"}``.
"""

from __future__ import annotations

import importlib

EXPERIMENTS = {
    "linear-synthetic": ("mtlkernels.experiments.linear", "run_synthetic",
                         "Lee, Yang and Hwang (2018) sec. 4.1: STL, Go-MTL, AMTL, AMTFL"),
    "linear-digits": ("mtlkernels.experiments.linear", "run_digits", "seeds 000/003: STL, AdaptiveSharing, LatentTaskMTL"),
    "adaptive-sharing": ("mtlkernels.experiments.adaptive_sharing", "run", "seed 000 sec. 3.2: AS layer vs plain last layer"),
    "attribute-cnn": ("mtlkernels.experiments.attribute_cnn", "run", "seed 003: single-task vs M vs MG"),
    "deep-amtfl": ("mtlkernels.experiments.deep_amtfl", "run", "seed 004 eq. 7: Deep-AMTFL vs CNN, MT-CNN, Deep-AMTL"),
    "joint-irls": ("mtlkernels.experiments.joint_irls", "run", "seed 001: joint IRLS vs Isolated, L2Reg, Shareall, Pretrain-Finetune"),
    "cetl": ("mtlkernels.experiments.cetl", "run", "seed 002: CETL vs T2 alone and fine-tuning"),
}


def get(name: str):
    if name not in EXPERIMENTS:
        raise ValueError(f"unknown method {name!r}; choose from {', '.join(EXPERIMENTS)}")
    mod, fn, _ = EXPERIMENTS[name]
    return getattr(importlib.import_module(mod), fn)
