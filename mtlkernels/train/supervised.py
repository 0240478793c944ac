"""A supervised trainer for one network with a penalty and proximal hooks.

It is the loop under the single-network methods and their baselines: the Adaptive
Sharing layer (seed 000 sec. 3.2), the attribute CNN (seed 003), Deep-AMTFL and its
baselines (seed 004 eq. 7), and the CETL baselines. Conventions on the model:

- ``model.penalty()`` (optional) returns a scalar tensor added to the loss (the
  differentiable regularisers: smoothed nuclear norm, reconstruction terms, ...);
- any submodule with ``proximal_step(lr)`` is called after every optimiser step
  (the non-smooth regularisers: l1 on S, group lasso, ... through the fused ops).
  This is the hook after ``optimizer.step()`` that works with any torch optimiser.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..nn.hooks import total_penalty
from ._base import (Checkpointer, TrainConfig, batches, check_finite, check_images, check_labels, log, make_optimizer,
                    progress, seed_everything)


def proximal_modules(model: nn.Module):
    """Every submodule with a ``proximal_step(lr)`` hook."""
    return [m for m in model.modules() if callable(getattr(m, "proximal_step", None))]


class SupervisedTrainer:
    """Train ``model`` on (X, y) minimising loss_fn(model(X), y) + model.penalty().

    ``fit`` supports checkpoints (``config.checkpoint_path``) with exact resume: call
    ``fit`` again with the same config after an interruption and it continues from the
    last completed epoch.
    """

    def __init__(self, model: nn.Module, config: TrainConfig, loss_fn: Callable[[Tensor, Tensor], Tensor] | None = None,
                 metric: Callable[[Tensor, Tensor], float] | None = None, name: str = "model"):
        config.validate()
        self.model = model
        self.config = config
        self.loss_fn = loss_fn or F.cross_entropy
        self.metric = metric or accuracy
        self.name = name
        self.history_: list[dict] = []

    def _penalty(self) -> Tensor | float:
        return total_penalty(self.model)

    def fit(self, X: Tensor, y: Tensor, X_val: Tensor | None = None, y_val: Tensor | None = None):
        cfg = self.config
        check_images(X, f"{self.name}: X")
        if len(X) != len(y):
            raise ValueError(f"{self.name}: X has {len(X)} samples but y has {len(y)}")
        if (X_val is None) != (y_val is None):
            raise ValueError(f"{self.name}: give both X_val and y_val, or neither")
        if self.loss_fn is F.cross_entropy:
            n_classes = getattr(self.model, "n_classes", None)
            if n_classes is None:  # one eval-mode forward pass (no batch-norm update, no RNG use)
                was_training = self.model.training
                self.model.eval()
                with torch.no_grad():
                    n_classes = self.model.to(self.config.device)(X[:1].to(self.config.device)).shape[1]
                self.model.train(was_training)
            check_labels(y, n_classes, f"{self.name}: y")
        device = torch.device(cfg.device)
        seed_everything(cfg.seed)
        self.model.to(device)
        X, y = X.to(device), y.to(device)
        opt = make_optimizer(self.model.parameters(), cfg)
        ckpt = Checkpointer(cfg.checkpoint_path)
        start = 0
        state = ckpt.load()
        if state is not None:
            self.model.load_state_dict(state["model"])
            opt.load_state_dict(state["optimizer"])
            self.history_ = list(state["history"])
            start = int(state["epoch"])
            Checkpointer.set_rng_state(state["rng"])
            log.info("%s: resumed from %s at epoch %d", self.name, cfg.checkpoint_path, start)
        prox = proximal_modules(self.model)
        for epoch in progress(range(start, cfg.epochs), cfg.progress, self.name, total=cfg.epochs - start):
            self.model.train()
            total, count = 0.0, 0
            for step, idx in enumerate(batches(len(X), cfg.batch_size, cfg.seed, epoch, device)):
                out = self.model(X[idx])
                loss = self.loss_fn(out, y[idx]) + self._penalty()
                check_finite(loss, f"{self.name} epoch {epoch} step {step}")
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                for m in prox:
                    m.proximal_step(opt.param_groups[0]["lr"])
                total += float(loss.detach()) * len(idx)
                count += len(idx)
            record = {"epoch": epoch + 1, "train_loss": total / max(count, 1)}
            if X_val is not None:
                record["val_metric"] = self.score(X_val, y_val)
            self.history_.append(record)
            log.info("%s: %s", self.name, record)
            ckpt.save({"model": self.model.state_dict(), "optimizer": opt.state_dict(), "epoch": epoch + 1,
                       "history": self.history_, "rng": Checkpointer.rng_state(), "config": asdict(cfg)})
        return self

    @torch.no_grad()
    def predict(self, X: Tensor) -> Tensor:
        self.model.eval()
        device = torch.device(self.config.device)
        outs = [self.model(X[i : i + 1024].to(device)) for i in range(0, len(X), 1024)]
        return torch.cat(outs).cpu()

    def score(self, X: Tensor, y: Tensor) -> float:
        return self.metric(self.predict(X), y.cpu())


def accuracy(out: Tensor, y: Tensor) -> float:
    return float((out.argmax(1) == y).double().mean())
