"""Adaptive Sharing layer (Shen et al. 2015, sec. 3.2): shapes, the smoothed nuclear norm penalty
and its gradient through the op (eqs. 11-13), the l1 prox on S, the optimiser hook,
training through SupervisedTrainer with checkpoint resume, NaN and bad input."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mtlkernels import ops
from mtlkernels import reference as ref
from mtlkernels.nn import AdaptiveSharingLinear, DigitsCNN, WithPenalty, add_proximal_hook, total_penalty
from mtlkernels.train import SupervisedTrainer, TrainConfig


ONE_THREAD = True  # the whole module on one intra-op thread (conftest.py)


def tiny_digits(n=80, seed=0):
    from mtlkernels.datasets import digits_images

    d = digits_images(seed=seed, per_class=n // 10)
    return d


def test_shapes_and_forward_equals_linear_on_c_plus_s():
    layer = AdaptiveSharingLinear(6, 4)
    with torch.no_grad():
        layer.S.normal_()
    x = torch.randn(5, 6)
    assert layer(x).shape == (5, 4)
    assert layer(torch.randn(2, 3, 6)).shape == (2, 3, 4)
    torch.testing.assert_close(layer(x), x @ (layer.C + layer.S).T + layer.bias)
    torch.testing.assert_close(layer.weight, layer.C + layer.S)
    assert layer.similarity().shape == (4, 4)
    assert torch.count_nonzero(AdaptiveSharingLinear(6, 4).S) == 0  # S starts at zero
    nobias = AdaptiveSharingLinear(6, 4, bias=False)
    assert nobias.bias is None and nobias(x).shape == (5, 4)


def test_from_linear_reproduces_the_plain_layer():
    lin = nn.Linear(7, 3)
    layer = AdaptiveSharingLinear.from_linear(lin, lambda_c=0.1)
    x = torch.randn(4, 7)
    torch.testing.assert_close(layer(x), lin(x))
    assert layer.lambda_c == 0.1


def test_penalty_is_the_smoothed_nuclear_norm_of_c():
    layer = AdaptiveSharingLinear(9, 5, lambda_c=0.3, eps=0.05, dtype=torch.float64)
    with torch.no_grad():
        layer.S.normal_()  # S does not enter the penalty
    expected = ref.smoothed_nuclear_norm(layer.C.detach(), 0.3, 0.05)
    torch.testing.assert_close(layer.penalty().detach(), expected)
    assert float(AdaptiveSharingLinear(9, 5, lambda_c=0.0).penalty()) == 0.0
    # exact (unsmoothed) regulariser value of eq. 3
    want = 0.3 * torch.linalg.svdvals(layer.C.detach()).sum() + layer.lambda_s * layer.S.detach().abs().sum()
    assert abs(layer.regularizer() - float(want)) < 1e-9


def test_gradient_of_the_regularised_loss_matches_eq_13():
    """grad_C = <dL/dC>_batch + (C - svt(C, eps lambda_c)) / eps; grad_S = <dL/dS>_batch."""
    torch.manual_seed(1)
    lam, eps = 0.2, 0.1
    layer = AdaptiveSharingLinear(6, 4, lambda_c=lam, eps=eps, dtype=torch.float64)
    x = torch.randn(10, 6, dtype=torch.float64)
    y = torch.randint(0, 4, (10,))
    loss = F.cross_entropy(layer(x), y) + layer.penalty()
    gC, gS = torch.autograd.grad(loss, [layer.C, layer.S])
    W = (layer.C + layer.S).detach().requires_grad_(True)
    (g_data,) = torch.autograd.grad(F.cross_entropy(x @ W.T + layer.bias.detach(), y), [W])
    C = layer.C.detach()
    g_pen = (C - ref.svt(C, eps * lam)) / eps
    torch.testing.assert_close(gC, g_data + g_pen, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(gS, g_data, rtol=1e-10, atol=1e-12)


def test_gradcheck_through_the_layer_and_its_penalty():
    torch.manual_seed(2)
    layer = AdaptiveSharingLinear(4, 3, lambda_c=0.5, eps=0.2, dtype=torch.float64)
    x = torch.randn(5, 4, dtype=torch.float64)

    class Objective(nn.Module):
        def __init__(self):
            super().__init__()
            self.layer = layer

        def forward(self, x):
            return self.layer(x).square().mean() + self.layer.penalty()

    obj = Objective()

    def f(C, S):
        return torch.func.functional_call(obj, {"layer.C": C, "layer.S": S}, (x,))

    C = layer.C.detach().clone().requires_grad_(True)
    S = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(f, (C, S))


def test_proximal_step_soft_thresholds_s_only():
    layer = AdaptiveSharingLinear(8, 5, lambda_s=0.5)
    with torch.no_grad():
        layer.S.normal_()
    S0, C0 = layer.S.detach().clone(), layer.C.detach().clone()
    layer.proximal_step(0.4)
    torch.testing.assert_close(layer.S.detach(), ref.soft_threshold(S0, 0.2))
    assert torch.equal(layer.C.detach(), C0)
    assert (layer.S == 0).any()
    # lambda_s = 0: no-op
    z = AdaptiveSharingLinear(8, 5, lambda_s=0.0)
    with torch.no_grad():
        z.S.fill_(1e-9)
    z.proximal_step(1.0)
    assert torch.all(z.S == 1e-9)


def test_proximal_hook_works_with_any_optimizer():
    torch.manual_seed(3)
    layer = AdaptiveSharingLinear(6, 4, lambda_c=0.0, lambda_s=0.3)
    with torch.no_grad():
        layer.S.normal_()
    x, y = torch.randn(16, 6), torch.randint(0, 4, (16,))
    for opt_cls in (torch.optim.SGD, torch.optim.Adam, torch.optim.RMSprop):
        opt = opt_cls(layer.parameters(), lr=0.1)
        handle = add_proximal_hook(opt, layer)
        F.cross_entropy(layer(x), y).backward()
        before = layer.S.detach().clone()
        # what the optimiser alone would give, then the prox
        shadow = AdaptiveSharingLinear(6, 4, lambda_c=0.0, lambda_s=0.3)
        shadow.load_state_dict(layer.state_dict())
        shadow_opt = opt_cls(shadow.parameters(), lr=0.1)
        shadow_opt.load_state_dict(opt.state_dict())
        for p, q in zip(layer.parameters(), shadow.parameters()):
            q.grad = p.grad.clone()
        shadow_opt.step()
        opt.step()
        torch.testing.assert_close(layer.S.detach(), ref.soft_threshold(shadow.S.detach(), 0.1 * 0.3))
        assert not torch.equal(layer.S.detach(), before)
        handle.remove()
        opt.zero_grad()


def test_total_penalty_collects_submodules_without_double_counting():
    net = DigitsCNN()
    net.head = AdaptiveSharingLinear(net.hidden, 10, lambda_c=0.1)
    wrapped = WithPenalty(net)
    torch.testing.assert_close(wrapped.penalty(), net.head.penalty())
    torch.testing.assert_close(total_penalty(net), net.head.penalty())

    class Both(nn.Module):  # defines penalty itself: its own rule wins
        def __init__(self):
            super().__init__()
            self.a = AdaptiveSharingLinear(3, 3, lambda_c=0.1)

        def penalty(self):
            return 2 * self.a.penalty()

    b = Both()
    torch.testing.assert_close(total_penalty(nn.Sequential(b)), 2 * b.a.penalty())
    assert total_penalty(nn.Linear(2, 2)) == 0.0


@pytest.mark.parametrize("kwargs, err", [
    ({"lambda_c": -1.0}, ValueError), ({"lambda_s": float("nan")}, ValueError), ({"eps": 0.0}, ValueError),
    ({"lambda_c": "big"}, TypeError), ({"in_features": 0}, ValueError), ({"out_features": 2.5}, ValueError),
])
def test_bad_hyper_parameters(kwargs, err):
    args = {"in_features": 4, "out_features": 3, **kwargs}
    with pytest.raises(err):
        AdaptiveSharingLinear(**args)


def test_bad_input_width():
    with pytest.raises(ValueError, match="expects 4 input features"):
        AdaptiveSharingLinear(4, 3)(torch.randn(2, 5))


def _as_model(seed=0, lambda_c=1e-2, lambda_s=1e-2):
    torch.manual_seed(seed)
    net = DigitsCNN(width=4, hidden=16)
    net.head = AdaptiveSharingLinear(16, 10, lambda_c=lambda_c, lambda_s=lambda_s, eps=1e-2)
    return WithPenalty(net)


def test_tiny_end_to_end_fit():
    d = tiny_digits(100)
    model = _as_model(lambda_s=0.05)
    tr = SupervisedTrainer(model, TrainConfig(epochs=15, batch_size=32, lr=5e-3, seed=0))
    tr.fit((d.X_train, d.y_train), (d.X_val, d.y_val))
    assert tr.history_[-1]["train_loss"] < tr.history_[0]["train_loss"]
    assert tr.score(d.X_test, d.y_test) > 0.5  # chance is 0.1
    assert (model.net.head.S == 0).any()  # the l1 prox gives exact zeros


def test_checkpoint_exact_resume(tmp_path):
    d = tiny_digits(40)
    ck = str(tmp_path / "as.pt")
    full = SupervisedTrainer(_as_model(), TrainConfig(epochs=4, batch_size=16, lr=5e-3, seed=3))
    full.fit((d.X_train, d.y_train))
    first = SupervisedTrainer(_as_model(), TrainConfig(epochs=2, batch_size=16, lr=5e-3, seed=3, checkpoint_path=ck))
    first.fit((d.X_train, d.y_train))
    resumed = SupervisedTrainer(_as_model(seed=99), TrainConfig(epochs=4, batch_size=16, lr=5e-3, seed=3,
                                                                checkpoint_path=ck))
    resumed.fit((d.X_train, d.y_train))
    a, b = full.model.state_dict(), resumed.model.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert [h["epoch"] for h in resumed.history_] == [1, 2, 3, 4]


def test_nan_loss_stops_with_a_message():
    d = tiny_digits(20)
    model = _as_model()
    with torch.no_grad():
        model.net.head.C[0, 0] = float("nan")
    with pytest.raises(FloatingPointError, match="non-finite loss"):
        SupervisedTrainer(model, TrainConfig(epochs=1, batch_size=16)).fit((d.X_train, d.y_train))


def test_penalty_pulls_c_towards_low_rank():
    """Gradient descent on Omega_eps alone shrinks the small singular values of C to 0."""
    torch.manual_seed(4)
    layer = AdaptiveSharingLinear(12, 6, lambda_c=1.0, eps=0.1, dtype=torch.float64)
    opt = torch.optim.SGD([layer.C], lr=0.05)
    s0 = torch.linalg.svdvals(layer.C.detach())
    for _ in range(200):
        opt.zero_grad()
        layer.penalty().backward()
        opt.step()
    s1 = torch.linalg.svdvals(layer.C.detach())
    assert float(s1.max()) < float(s0.max())
    assert ops.nuclear_norm(layer.C.detach()) < ops.nuclear_norm(s0.diag())


def test_l1_weight_decay_under_momentum_is_the_prox_at_lr_lambda_over_one_minus_momentum():
    """Reading of Shen et al. 2015 sec. 4.2 ("S ... regularized with l1 weight decay 0.0005"
    under SGD with momentum 0.9): in steady state the subgradient lambda sign(S) through
    momentum beta moves S by lr lambda / (1 - beta) per step, so the experiment applies the
    prox with lambda_s = lambda / (1 - beta). Checked on a scalar with no data gradient."""
    from mtlkernels.experiments.adaptive_sharing import LAMBDA_S, MOMENTUM

    lam, lr, beta = 5e-4, 0.02, MOMENTUM
    assert LAMBDA_S == pytest.approx(lam / (1 - beta))
    s, v = torch.tensor(1.0), torch.tensor(0.0)
    opt_steps = []
    for _ in range(200):  # torch.optim.SGD's momentum: v <- beta v + g; s <- s - lr v
        v = beta * v + lam * torch.sign(s)
        new = s - lr * v
        opt_steps.append(float(s - new))
        s = new
    layer = AdaptiveSharingLinear(3, 2, lambda_c=0.0, lambda_s=LAMBDA_S)
    with torch.no_grad():
        layer.S.fill_(1.0)
    before = layer.S.detach().clone()
    layer.proximal_step(lr)
    prox_step = float((before - layer.S.detach())[0, 0])
    assert opt_steps[-1] == pytest.approx(prox_step, rel=1e-3)
