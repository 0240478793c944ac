"""Deep-AMTFL (Lee et al. 2018, eq. 7): one-vs-all digit classifiers whose features are
reconstructed from the reliable tasks' parameters (asymmetric transfer), against the plain
multi-task CNN, on class-imbalanced 8 x 8 digits (fewer training images for higher digits).

    python examples/deep_amtfl.py [--smoke]     # MTLKERNELS_SMOKE=1 works too
"""

import torch

from _smoke import smoke
from mtlkernels.datasets import digits_images
from mtlkernels.nn import deep_amtfl_model
from mtlkernels.train import DeepAMTFLConfig, DeepAMTFLTrainer

torch.set_num_threads(1)
data = digits_images(seed=0, imbalanced=True)
epochs = 2 if smoke() else 30
cfg = DeepAMTFLConfig(seed=0, optimizer="sgd", lr=0.05, momentum=0.9, batch_size=32, epochs=epochs,
                      warmup_epochs=min(epochs, 5))
for method in ("mt_cnn", "deep_amtfl"):
    tr = DeepAMTFLTrainer(lambda m=method: deep_amtfl_model(m, lam=1e-3, mu=1e-3, delta=0.1), cfg)
    ev = tr.fit((data.X_train, data.y_train)).evaluate(data.X_test, data.y_test)
    print(f"{method:10s} test accuracy {ev['accuracy']:.3f}")
