"""The Trainer base (mtlkernels.train.trainer): DataLoader and tensor input, seeding with a
model factory, the README example run twice, resume that refuses another run's
checkpoint, corrupt checkpoints, atomic writes, mixed precision on CPU, optimiser specs."""

from __future__ import annotations

import functools
import json
import logging
import os
import re
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from mtlkernels.datasets import digits_images
from mtlkernels.nn import AdaptiveSharingLinear, DigitsCNN, deep_amtfl_model
from mtlkernels.train import CheckpointError, DeepAMTFLConfig, DeepAMTFLTrainer, SupervisedTrainer, TrainConfig
from mtlkernels.train import checkpoint as ckpt_mod

README = Path(__file__).resolve().parent.parent / "README.md"


ONE_THREAD = True  # the whole module on one intra-op thread (conftest.py)


@pytest.fixture(scope="module")
def digits():
    return digits_images(seed=0, per_class=8)


def make_model(lambda_c=1e-2, lambda_s=1e-2, width=4, hidden=16):
    net = DigitsCNN(width=width, hidden=hidden)
    net.head = AdaptiveSharingLinear(hidden, 10, lambda_c=lambda_c, lambda_s=lambda_s, eps=1e-2)
    return net


def cfg(**kw):
    base = dict(epochs=3, batch_size=16, lr=5e-3, seed=0)
    base.update(kw)
    return TrainConfig(**base)


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


# ---- data ------------------------------------------------------------------------------------------


def test_dataloader_input_works(digits):
    d = digits
    train = DataLoader(TensorDataset(d.X_train, d.y_train), batch_size=16, shuffle=True,
                       generator=torch.Generator().manual_seed(0))
    val = DataLoader(TensorDataset(d.X_val, d.y_val), batch_size=64)
    tr = SupervisedTrainer(make_model, cfg(epochs=8)).fit(train, val)
    assert len(tr.history_) == 8 and all("val_metric" in h for h in tr.history_)
    assert tr.history_[-1]["train_loss"] < tr.history_[0]["train_loss"]
    assert tr.score(val) == pytest.approx(tr.score(d.X_val, d.y_val))
    assert tr.predict(val).shape == (len(d.X_val), 10)
    assert (tr.model.head.S == 0).any()  # the proximal hook ran after the optimiser steps


def test_tensor_input_is_seeded_and_a_factory_makes_runs_identical(digits):
    d = digits
    a = SupervisedTrainer(make_model, cfg()).fit((d.X_train, d.y_train))
    b = SupervisedTrainer(make_model, cfg()).fit((d.X_train, d.y_train))
    c = SupervisedTrainer(make_model, cfg(seed=1)).fit((d.X_train, d.y_train))
    assert same_weights(a.model, b.model) and not same_weights(a.model, c.model)
    assert a.history_ == b.history_


def test_readme_example_run_twice_gives_identical_weights(tmp_path, monkeypatch):
    """The README's deep example, executed as written (in two fresh folders)."""
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    code = next(b for b in blocks if "SupervisedTrainer" in b)
    models = []
    for run in ("a", "b"):
        folder = tmp_path / run
        folder.mkdir()
        monkeypatch.chdir(folder)
        ns: dict = {}
        exec(compile(code, f"README.md ({run})", "exec"), ns)  # noqa: S102
        models.append(ns["trainer"].model)
        assert any(folder.iterdir())  # its checkpoint was written
    assert same_weights(*models)


@pytest.mark.parametrize("bad, match", [
    ((torch.rand(4, 1, 8, 8),), "tuple \\(X, y\\)"),
    ("tensors", "DataLoader or a tuple"),
])
def test_bad_train_argument(digits, bad, match):
    with pytest.raises(TypeError, match=match):
        SupervisedTrainer(make_model, cfg()).fit(bad)


@pytest.mark.parametrize("kw, match", [
    (dict(precision="fp8"), "precision must be one of"), (dict(optimizer="lbfgs"), "optimizer must be one of"),
    (dict(optimizer=torch.nn.Linear), "optimizer must be"), (dict(device="gpu0"), "device"),
    (dict(lr=0.0), "lr must be"), (dict(batch_size=0), "batch_size"), (dict(epochs=-1), "epochs"),
])
def test_bad_config_names_the_field(kw, match):
    with pytest.raises(ValueError, match=match):
        SupervisedTrainer(make_model, cfg(**kw))


def test_optimizer_as_class_or_partial(digits):
    d = digits
    for opt in (torch.optim.RMSprop, functools.partial(torch.optim.SGD, momentum=0.5, nesterov=True)):
        tr = SupervisedTrainer(make_model, cfg(epochs=1, optimizer=opt)).fit((d.X_train, d.y_train))
        assert isinstance(tr.optimizers["opt"], opt if isinstance(opt, type) else opt.func)
    fp = cfg(optimizer=functools.partial(torch.optim.SGD, momentum=0.5)).fingerprint()
    assert fp["optimizer"] == "torch.optim.sgd.SGD(momentum=0.5)"


# ---- resume ------------------------------------------------------------------------------------------


def test_larger_epochs_continue_and_resume_is_logged(digits, tmp_path, caplog):
    d = digits
    path = str(tmp_path / "ck.pt")
    full = SupervisedTrainer(make_model, cfg(epochs=4)).fit((d.X_train, d.y_train))
    SupervisedTrainer(make_model, cfg(epochs=2, checkpoint_path=path)).fit((d.X_train, d.y_train))
    with caplog.at_level(logging.WARNING, logger="mtlkernels.train"):
        resumed = SupervisedTrainer(make_model, cfg(epochs=4, checkpoint_path=path)).fit((d.X_train, d.y_train))
    assert "resumed at epoch 2 of 4" in caplog.text
    assert same_weights(full.model, resumed.model) and resumed.history_ == full.history_
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="mtlkernels.train"):
        again = SupervisedTrainer(make_model, cfg(epochs=4, checkpoint_path=path)).fit((d.X_train, d.y_train))
    assert "nothing left to train" in caplog.text and same_weights(again.model, full.model)
    with pytest.raises(CheckpointError, match="holds epoch 4, more than epochs=3"):
        SupervisedTrainer(make_model, cfg(epochs=3, checkpoint_path=path)).fit((d.X_train, d.y_train))


@pytest.mark.parametrize("change, fields", [
    (dict(lr=1e-2), ["config.lr: 0.005 in the checkpoint, 0.01 now"]),
    (dict(optimizer="sgd"), ["config.optimizer: 'adam' in the checkpoint, 'sgd' now"]),
    (dict(batch_size=8, seed=3), ["config.batch_size", "config.seed"]),
    (dict(precision="bf16-mixed"), ["config.precision"]),
])
def test_changed_config_resume_raises_and_names_the_fields(digits, tmp_path, change, fields):
    d = digits
    path = str(tmp_path / "ck.pt")
    SupervisedTrainer(make_model, cfg(epochs=1, checkpoint_path=path)).fit((d.X_train, d.y_train))
    with pytest.raises(CheckpointError) as err:
        SupervisedTrainer(make_model, cfg(epochs=2, checkpoint_path=path, **change)).fit((d.X_train, d.y_train))
    msg = str(err.value)
    assert all(f in msg for f in fields), msg
    assert f"delete {path} or pass resume=False" in msg
    # resume=False starts over and overwrites the checkpoint
    tr = SupervisedTrainer(make_model, cfg(epochs=2, checkpoint_path=path, resume=False, **change))
    tr.fit((d.X_train, d.y_train))
    assert len(tr.history_) == 2
    assert ckpt_mod.load(path)["config_fingerprint"] == tr.config.fingerprint()


def test_changed_model_resume_raises(digits, tmp_path):
    d = digits
    path = str(tmp_path / "ck.pt")
    SupervisedTrainer(make_model, cfg(epochs=1, checkpoint_path=path)).fit((d.X_train, d.y_train))
    with pytest.raises(CheckpointError, match=r"model tensor head.C: \[\[10, 16\], 'float32'\] in the checkpoint"):
        SupervisedTrainer(lambda: make_model(width=4, hidden=8), cfg(epochs=2, checkpoint_path=path)).fit(
            (d.X_train, d.y_train))
    with pytest.raises(CheckpointError, match="hyper-parameters"):
        SupervisedTrainer(lambda: make_model(lambda_c=0.5), cfg(epochs=2, checkpoint_path=path)).fit(
            (d.X_train, d.y_train))
    with pytest.raises(CheckpointError, match="trainer: 'supervised' in the checkpoint, 'deep_amtfl' now"):
        DeepAMTFLTrainer(lambda: deep_amtfl_model("cnn", width=4, hidden=16),
                         DeepAMTFLConfig(epochs=2, batch_size=16, lr=5e-3, checkpoint_path=path)).fit(
            (d.X_train, d.y_train))


@pytest.mark.parametrize("content", [b"", b"\x00garbage" * 50, "truncated"])
def test_unreadable_checkpoint_names_the_file(digits, tmp_path, content):
    d = digits
    path = tmp_path / "ck.pt"
    if content == "truncated":
        SupervisedTrainer(make_model, cfg(epochs=1, checkpoint_path=str(path))).fit((d.X_train, d.y_train))
        content = path.read_bytes()[: path.stat().st_size // 2]
    path.write_bytes(content)
    with pytest.raises(CheckpointError) as err:
        SupervisedTrainer(make_model, cfg(epochs=2, checkpoint_path=str(path))).fit((d.X_train, d.y_train))
    msg = str(err.value)
    assert str(path) in msg and ("corrupt" in msg or "truncated" in msg) and "weights_only=False" not in msg


def test_checkpoint_of_foreign_objects_is_refused(tmp_path):
    path = tmp_path / "ck.pt"
    torch.save({"format": ckpt_mod.FORMAT, "x": functools.partial(print)}, path)
    with pytest.raises(CheckpointError, match="objects other than tensors"):
        ckpt_mod.load(path)
    torch.save({"x": 1}, path)
    with pytest.raises(CheckpointError, match="not an mtlkernels checkpoint"):
        ckpt_mod.load(path)


def test_atomic_write_keeps_the_old_checkpoint_on_failure(tmp_path, monkeypatch):
    path = tmp_path / "ck.pt"
    ckpt_mod.save_atomic({"format": ckpt_mod.FORMAT, "epoch": 1}, path)
    real_save = torch.save

    def failing_save(obj, f, *a, **kw):
        real_save(obj, f, *a, **kw)
        f.truncate(10)
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", failing_save)
    with pytest.raises(OSError, match="disk full"):
        ckpt_mod.save_atomic({"format": ckpt_mod.FORMAT, "epoch": 2}, path)
    monkeypatch.setattr(torch, "save", real_save)
    assert ckpt_mod.load(path)["epoch"] == 1
    assert os.listdir(tmp_path) == ["ck.pt"]  # no temporary file left behind


# ---- mixed precision -------------------------------------------------------------------------------------


@pytest.mark.parametrize("precision, dtype", [("bf16-mixed", torch.bfloat16), ("16-mixed", torch.float16)])
def test_mixed_precision_training_runs_on_cpu(digits, tmp_path, precision, dtype):
    d = digits
    seen: dict = {}

    def record(module, inputs, output):
        if module.training:  # training steps, not the label check's probe
            seen.setdefault("conv", output.dtype)

    def factory():
        net = make_model()
        net.body[0].register_forward_hook(record)
        head_penalty = net.head.penalty

        def penalty():
            p = head_penalty()
            seen.setdefault("penalty", p.dtype)
            return p

        net.head.penalty = penalty
        return net

    path = str(tmp_path / "ck.pt")
    tr = SupervisedTrainer(factory, cfg(epochs=6, precision=precision, checkpoint_path=path))
    tr.fit((d.X_train, d.y_train), (d.X_val, d.y_val))
    assert seen == {"conv": dtype, "penalty": torch.float32}  # autocast forward, float32 penalty
    assert all(p.dtype == torch.float32 for p in tr.model.parameters())
    assert tr.history_[-1]["train_loss"] < tr.history_[0]["train_loss"]
    assert (tr.model.head.S == 0).any()  # proximal steps ran (in float32)
    state = ckpt_mod.load(path)
    assert bool(state["scaler"]) == (precision == "16-mixed")  # the GradScaler is checkpointed


def test_bf16_deep_amtfl_penalty_on_float32_features(digits):
    d = digits
    make = lambda: deep_amtfl_model("deep_amtfl", width=4, hidden=16, gamma=0.1)  # noqa: E731
    tr = DeepAMTFLTrainer(make, DeepAMTFLConfig(epochs=3, batch_size=16, optimizer="sgd", lr=0.05,
                                                precision="bf16-mixed")).fit((d.X_train, d.y_train))
    assert all(torch.isfinite(torch.tensor(h["train_loss"])) for h in tr.history_)
    assert tr.model.A.dtype == torch.float32


def test_metrics_json(digits, tmp_path):
    d = digits
    path = tmp_path / "m" / "metrics.json"
    SupervisedTrainer(make_model, cfg(epochs=2, metrics_path=str(path), optimizer=torch.optim.Adam)).fit(
        (d.X_train, d.y_train))
    saved = json.loads(path.read_text())
    assert saved["method"] == "supervised" and len(saved["history"]) == 2
    assert saved["config"]["optimizer"] == "torch.optim.adam.Adam"


def test_nan_guard_names_the_step(digits):
    d = digits
    X = d.X_train.clone()

    def exploding():
        net = make_model()
        net.head.C.data.fill_(float("inf"))
        return net

    with pytest.raises(FloatingPointError, match="non-finite loss .* at supervised epoch 1 step 0"):
        SupervisedTrainer(exploding, cfg()).fit((X, d.y_train))
