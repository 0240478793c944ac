"""Attribute MTL (Abdulnabi et al. 2015): W = L S over latent tasks, squared hinge loss, group
lasso on S within attribute groups (eq. 2), on 9 digit attributes in 3 groups of scikit-learn's
8 x 8 digits (10 images per digit; one convolutional trunk per attribute); the single-task
model against the grouped multi-task one ("MG").

    python examples/attribute_mtl.py [--smoke]     # MTLKERNELS_SMOKE=1 works too
"""

import torch

from _smoke import smoke
from mtlkernels.datasets import digits_images
from mtlkernels.experiments.attribute_mtl import ATTRIBUTE_NAMES, GROUP_NAMES, GROUPS, HYPER, digit_attributes
from mtlkernels.nn import AttributeCNN
from mtlkernels.train import AttributeMTLConfig, AttributeMTLTrainer

torch.set_num_threads(1)
data = digits_images(seed=0, per_class=10)
Ytr, Yte = digit_attributes(data.y_train), digit_attributes(data.y_test)  # (n, 9) binary attributes
cfg = AttributeMTLConfig(epochs=2 if smoke() else 20, seed=0, lr=HYPER["lr"], optimizer="sgd", momentum=0.9,
                         batch_size=32, attribute_names=ATTRIBUTE_NAMES, group_names=GROUP_NAMES)
for variant in ("single", "MG"):
    model = lambda variant=variant: AttributeCNN(len(ATTRIBUTE_NAMES), variant, GROUPS, "per_attribute",  # noqa: E731
                                                 HYPER["n_latent"], HYPER["width"], HYPER["hidden"], HYPER["mu"],
                                                 HYPER["gamma"], HYPER["lam"])
    ev = AttributeMTLTrainer(model, cfg).fit((data.X_train, Ytr)).evaluate(data.X_test, Yte)
    print(f"{variant:6s} attribute accuracy {ev['accuracy']:.3f} per group "
          + ", ".join(f"{g} {ev['per_group'][g]:.3f}" for g in GROUP_NAMES))
