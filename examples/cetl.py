"""CETL (Chen et al. 2018): coupled end-to-end transfer from a source network trained on digits
0-4 to a target network for digits 5-9 with 5 labelled images per class, with the Generalized
Fisher Information and the DWA loss (Algorithm 1); against the target network alone.

    python examples/cetl.py [--smoke]     # MTLKERNELS_SMOKE=1 works too
"""

import torch

from _smoke import smoke
from mtlkernels.datasets import digits_images
from mtlkernels.nn import CETLNetworks, DigitsCNN
from mtlkernels.train import CETLConfig, CETLTrainer, TargetOnlyTrainer, TrainConfig, train_source

torch.set_num_threads(1)
d = digits_images(seed=0)
src, tgt = d.y_train < 5, d.y_train >= 5
g = torch.Generator().manual_seed(0)
idx = torch.cat([torch.nonzero(d.y_train == c).flatten()[torch.randperm(int((d.y_train == c).sum()), generator=g)][:5]
                 for c in range(5, 10)])  # 5 labelled target images per class
unlabeled = d.X_train[tgt]
test = d.y_test >= 5
lab, test = (d.X_train[idx], d.y_train[idx] - 5), (d.X_test[test], d.y_test[test] - 5)

S = train_source(DigitsCNN(5), TrainConfig(epochs=1 if smoke() else 12, batch_size=64, seed=0),
                 (d.X_train[src], d.y_train[src]))
alone = TargetOnlyTrainer(DigitsCNN(5), TrainConfig(epochs=2 if smoke() else 40, batch_size=16, seed=0)).fit(lab)
cfg = CETLConfig(epochs=1 if smoke() else 4, stage_epochs=(1, 1, 2) if smoke() else (2, 2, 10), batch_size=16,
                 seed=0, fisher_samples=16 if smoke() else 32)
cetl = CETLTrainer(CETLNetworks(S, DigitsCNN(5)), cfg).fit(lab, unlabeled=unlabeled)
print(f"T2 alone test accuracy {alone.score(test):.3f}")
print(f"CETL     test accuracy {cetl.score(test):.3f}")
