"""Joint IRLS (Zhang et al. 2019): one small network per digit domain (original, rotated,
inverted, noisy, shifted), coupled by a robust consistency between adjacent layers whose IRLS
weights learn which domains to share with; against isolated networks.

    python examples/joint_irls.py [--smoke]     # MTLKERNELS_SMOKE=1 works too
"""

import warnings

import torch
from sklearn.exceptions import ConvergenceWarning

from _smoke import smoke
from mtlkernels.datasets import DOMAINS, digits_domains
from mtlkernels.nn import DigitsMLP
from mtlkernels.train import Isolated, JointIRLSConfig, JointIRLSTrainer

torch.set_num_threads(1)
domains = DOMAINS[:3] if smoke() else DOMAINS
splits = digits_domains(domains, seed=0, train_per_domain=60)
for name, trainer in (("Isolated", Isolated), ("Joint (IRLS)", JointIRLSTrainer)):
    cfg = JointIRLSConfig(task="classification", epochs=2 if smoke() else 40, batch_size=32, lr=3e-3, seed=0,
                          lam=10.0, max_irls_iters=2 if smoke() else 8)
    with warnings.catch_warnings():  # a short budget may stop IRLS before delta <= tol
        warnings.simplefilter("ignore", ConvergenceWarning)
        tr = trainer(lambda: DigitsMLP(hidden=(64, 32), in_features=64), cfg).fit(splits, "val", names=list(domains))
    ev = tr.evaluate("test")
    print(f"{name:13s} mean test accuracy {ev['mean']:.3f} per domain "
          + " ".join(f"{a:.3f}" for a in ev["per_task"]))
