"""mtlkernels.lightning.PenaltyCallback inside Lightning's Trainer on CPU: the Adaptive
Sharing layer and the Deep-AMTFL terms in a user's own LightningModule train exactly as
a plain loop that adds the penalty and applies the proximal steps itself."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from mtlkernels.datasets import digits_images
from mtlkernels.nn import AdaptiveSharingLinear, DigitsCNN, apply_proximal_steps, deep_amtfl_model, total_penalty

L = pytest.importorskip("lightning", reason="the optional extra 'lightning' is not installed")
from mtlkernels.lightning import PenaltyCallback  # noqa: E402


def _as_model():
    net = DigitsCNN(width=4, hidden=16)
    net.head = AdaptiveSharingLinear(16, 10, lambda_c=5e-2, lambda_s=5e-2, eps=1e-2)
    return net


def _amtfl_model():
    return deep_amtfl_model("deep_amtfl", width=4, hidden=16, alpha=0.5, gamma=0.1, mu=1e-2, lam=1e-3, delta=0.1)


class UserModule(L.LightningModule):
    """A user's LightningModule: the data term only; no penalty, no prox."""

    def __init__(self, model, kind: str):
        super().__init__()
        self.model, self.kind = model, kind

    def training_step(self, batch, batch_idx):
        x, y = batch
        out = self.model(x)
        return self.model.loss(out, y) if self.kind == "amtfl" else F.cross_entropy(out, y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.05, momentum=0.9)


@pytest.mark.parametrize("kind", ["adaptive_sharing", "amtfl"])
def test_lightning_trainer_with_the_callback_matches_a_plain_loop(kind):
    torch.set_num_threads(1)
    d = digits_images(seed=0, per_class=6)
    loader = DataLoader(TensorDataset(d.X_train, d.y_train), batch_size=20, shuffle=False)
    make = _as_model if kind == "adaptive_sharing" else _amtfl_model
    torch.manual_seed(0)
    model = make()
    if kind == "amtfl":
        model.set_task_sizes(torch.bincount(d.y_train, minlength=10))
    reference = UserModule(make(), kind)
    reference.model.load_state_dict(model.state_dict())

    trainer = L.Trainer(max_epochs=2, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, callbacks=[PenaltyCallback()])
    trainer.fit(UserModule(model, kind), loader)

    opt = reference.configure_optimizers()  # the same steps by hand
    net = reference.model
    net.train()
    for _ in range(2):
        for x, y in loader:
            out = net(x)
            loss = (net.loss(out, y) if kind == "amtfl" else F.cross_entropy(out, y)) + total_penalty(net)
            opt.zero_grad()
            loss.backward()
            opt.step()
            apply_proximal_steps(net, 0.05)
    for (k, a), b in zip(model.state_dict().items(), net.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=k)
    if kind == "adaptive_sharing":
        assert (model.head.S == 0).any()  # the l1 prox acted
    else:
        assert (model.head.weight == 0).any() and int(model.loss_steps) == 2 * len(loader)
