"""The experiments `make demo` and `mtlkernels run METHOD` know, by name.

Each entry names a module and a function with the signature
``run(seeds, quick, out_dir, log) -> {"title", "columns", "rows", "notes", "plots", "raw"}``.
The deep experiments are named by their paper's short name, as the modules in
``linear/``, ``nn/``, ``train/`` and ``experiments/`` are (``adaptive_sharing``,
``joint_irls``, ``cetl``, ``attribute_mtl``, ``amtfl``; full references in
``docs/papers.md``).
"""

from __future__ import annotations

import importlib

EXPERIMENTS = {
    "linear-synthetic": ("mtlkernels.experiments.linear", "run_synthetic",
                         "Lee et al. 2018 (AMTFL) sec. 4.1: STL, Go-MTL, AMTL, AMTFL on the synthetic tasks"),
    "linear-digits": ("mtlkernels.experiments.linear", "run_digits",
                      "Shen et al. 2015 (Adaptive Sharing), Abdulnabi et al. 2015 (attribute MTL): STL, "
                      "AdaptiveSharing, LatentTaskMTL on digits"),
    "adaptive-sharing": ("mtlkernels.experiments.adaptive_sharing", "run",
                         "Shen et al. 2015 (Adaptive Sharing) sec. 3.2: AS layer vs plain last layer"),
    "attribute-mtl": ("mtlkernels.experiments.attribute_mtl", "run",
                      "Abdulnabi et al. 2015 (attribute MTL): single-task vs M vs MG"),
    "amtfl": ("mtlkernels.experiments.amtfl", "run",
              "Lee et al. 2018 (Deep-AMTFL) eq. 7: Deep-AMTFL vs CNN, MT-CNN, Deep-AMTL"),
    "joint-irls": ("mtlkernels.experiments.joint_irls", "run",
                   "Zhang et al. 2019 (joint IRLS): joint IRLS vs Isolated, L2Reg, Shareall, Pretrain-Finetune"),
    "cetl": ("mtlkernels.experiments.cetl", "run", "Chen et al. 2018 (CETL): CETL vs T2 alone and fine-tuning"),
}

#: Earlier names, still accepted by ``mtlkernels run``.
ALIASES = {"attribute-cnn": "attribute-mtl", "deep-amtfl": "amtfl"}


def get(name: str):
    name = ALIASES.get(name, name)
    if name not in EXPERIMENTS:
        raise ValueError(f"unknown method {name!r}; choose from {', '.join(EXPERIMENTS)}")
    mod, fn, _ = EXPERIMENTS[name]
    return getattr(importlib.import_module(mod), fn)
