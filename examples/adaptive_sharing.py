"""Adaptive Sharing (Shen et al. 2015): a small CNN whose last layer is W = C + S, with the
nuclear norm on C and l1 on S (eq. 3; the smoothed nuclear norm of eqs. 11-13 in training),
against the same network with a plain last layer, on scikit-learn's 8 x 8 digits.

    python examples/adaptive_sharing.py [--smoke]     # MTLKERNELS_SMOKE=1 works too
"""

import torch

from _smoke import smoke
from mtlkernels.datasets import digits_images
from mtlkernels.nn import AdaptiveSharingLinear, DigitsCNN
from mtlkernels.train import SupervisedTrainer, TrainConfig

torch.set_num_threads(1)  # tiny networks: one thread is fastest
data = digits_images(seed=0, per_class=10)  # 10 training images per class
cfg = TrainConfig(epochs=3 if smoke() else 30, batch_size=32, lr=0.02, optimizer="sgd", momentum=0.9,
                  weight_decay=0.004, seed=0)


def adaptive_sharing_cnn():  # built by the trainer after seeding
    net = DigitsCNN()
    net.head = AdaptiveSharingLinear(net.hidden, 10, lambda_c=1e-3, lambda_s=5e-3, eps=1e-2)
    return net


for name, factory in (("plain last layer", DigitsCNN), ("Adaptive Sharing C + S", adaptive_sharing_cnn)):
    tr = SupervisedTrainer(factory, cfg).fit((data.X_train, data.y_train))
    print(f"{name:24s} test accuracy {tr.score(data.X_test, data.y_test):.3f}")
stats = tr.model.head.stats()
print(f"AS layer: effective rank of C {stats['effective_rank_C']:.2f}, zeros in S {stats['zero_fraction_S']:.3f}")
