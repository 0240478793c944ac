"""Multi-task attribute CNN (Abdulnabi et al. 2015, attribute MTL): the squared hinge loss, per-attribute trunks,
the latent-task head W = L S with its proximal steps (group lasso on S within groups,
l1 + Frobenius on L), the SVD initialisation, and AttributeMTLTrainer (fit, metrics JSON,
checkpoint resume, NaN, bad input)."""

import json

import pytest
import torch
from torch import nn

from mtlkernels import reference as ref
from mtlkernels.experiments.attribute_mtl import DIGIT_ATTRIBUTES, GROUPS, digit_attributes
from mtlkernels.nn import AttributeCNN, DigitsCNN, LatentTaskHead, PerAttributeConvTrunks, squared_hinge_loss
from mtlkernels.nn.attribute_mtl import SingleTaskHead, attribute_accuracy
from mtlkernels.train import AttributeMTLConfig, AttributeMTLTrainer, TrainConfig


ONE_THREAD = True  # the whole module on one intra-op thread (conftest.py)


@pytest.fixture(scope="module")
def data():
    from mtlkernels.datasets import digits_images

    d = digits_images(seed=0, per_class=6)
    return d, digit_attributes(d.y_train), digit_attributes(d.y_val)


# ---- loss ---------------------------------------------------------------------------


def test_squared_hinge_loss_value_and_missing_labels():
    f = torch.tensor([[2.0, 0.5, -0.3], [-1.5, 0.0, 0.8]])
    t = torch.tensor([[1, 1, 0], [0, 1, -1]])
    # y = [[1, 1, -1], [-1, 1, missing]]: margins max(0, 1 - y f)
    m = torch.tensor([[0.0, 0.5, 0.7], [0.0, 1.0, 0.0]])
    torch.testing.assert_close(squared_hinge_loss(f, t), 0.5 * (m**2).sum() / 2)
    assert attribute_accuracy(f, t) == pytest.approx(4 / 5)  # (0 > 0) is False != 1: one error of 5 known
    with pytest.raises(ValueError, match="differ"):
        squared_hinge_loss(f, t[:, :2])


def test_squared_hinge_loss_gradcheck():
    f = torch.randn(6, 4, dtype=torch.float64, requires_grad=True)
    t = torch.randint(0, 2, (6, 4))
    assert torch.autograd.gradcheck(lambda f: squared_hinge_loss(f, t), (f,))


# ---- trunks -------------------------------------------------------------------------


def test_per_attribute_trunks_are_independent_digits_cnn_bodies():
    torch.manual_seed(0)
    trunks = PerAttributeConvTrunks(3, width=4, hidden=8)
    x = torch.rand(5, 1, 8, 8)
    out = trunks(x)
    assert out.shape == (5, 3, 8)
    # trunk m equals a DigitsCNN body with trunk m's weights
    for m in range(3):
        cnn = DigitsCNN(width=4, hidden=8)
        w = 4
        with torch.no_grad():
            cnn.body[0].weight.copy_(trunks.conv1.weight[m * w:(m + 1) * w])
            cnn.body[0].bias.copy_(trunks.conv1.bias[m * w:(m + 1) * w])
            cnn.body[2].weight.copy_(trunks.conv2.weight[m * 2 * w:(m + 1) * 2 * w])
            cnn.body[2].bias.copy_(trunks.conv2.bias[m * 2 * w:(m + 1) * 2 * w])
            cnn.body[6].weight.copy_(trunks.fc_weight[m].T)
            cnn.body[6].bias.copy_(trunks.fc_bias[m])
        torch.testing.assert_close(out[:, m], cnn.features(x), rtol=1e-5, atol=1e-6)
    # no parameter is shared: trunk 0's output has no gradient on trunk 1's weights
    out[:, 0].sum().backward()
    assert trunks.conv1.weight.grad[4:].abs().sum() == 0
    assert trunks.fc_weight.grad[1:].abs().sum() == 0
    with pytest.raises(ValueError, match="expects"):
        trunks(torch.rand(2, 1, 7, 7))


# ---- latent-task head -------------------------------------------------------------------


def test_latent_head_scores_shared_and_per_attribute_features():
    head = LatentTaskHead(5, 4, 3, groups=[0, 0, 1, 1])
    X = torch.randn(6, 5)
    torch.testing.assert_close(head(X), X @ head.L @ head.S + head.bias)
    Xm = torch.randn(6, 4, 5)
    want = torch.stack([Xm[:, m] @ (head.L @ head.S[:, m]) for m in range(4)], 1) + head.bias
    torch.testing.assert_close(head(Xm), want)
    assert head.weight.shape == (5, 4)
    with pytest.raises(ValueError):
        head(torch.randn(6, 3, 5))  # 3 attributes, the head has 4


def test_latent_head_gradcheck_through_w_equals_ls():
    torch.manual_seed(1)
    head = LatentTaskHead(4, 3, 2).double()
    X = torch.randn(5, 4, dtype=torch.float64)
    T = torch.randint(0, 2, (5, 3))

    def f(L, S):
        return squared_hinge_loss(torch.func.functional_call(head, {"L": L, "S": S}, (X,)), T)

    L = head.L.detach().clone().requires_grad_(True)
    S = head.S.detach().clone().requires_grad_(True)
    assert torch.autograd.gradcheck(f, (L, S))


def _group_penalty(S, labels, G):
    return torch.zeros(S.shape[0], G, dtype=S.dtype).index_add_(1, labels, S * S).sqrt().sum()


def test_proximal_step_is_the_prox_of_the_penalties_of_eq_2():
    torch.manual_seed(2)
    groups = [0, 0, 1, 2, 2]
    head = LatentTaskHead(6, 5, 4, groups=groups, mu=0.7, gamma=0.3, lam=0.2).double()
    L0, S0 = head.L.detach().clone(), head.S.detach().clone()
    lr = 0.5
    head.proximal_step(lr)
    labels = torch.tensor(groups)
    torch.testing.assert_close(head.S.detach(), ref.group_soft_threshold(S0, lr * 0.7, 1, labels))
    torch.testing.assert_close(head.L.detach(), ref.elastic_net_prox(L0, lr * 0.3, 2 * lr * 0.2))
    # the reading: S+ minimises 1/2 ||Z - S0||^2 + lr mu sum_k sum_g ||z_k^g||_2, and
    # L+ minimises 1/2 ||Z - L0||^2 + lr (gamma ||Z||_1 + lam ||Z||_F^2)
    fS = lambda Z: 0.5 * ((Z - S0) ** 2).sum() + lr * 0.7 * _group_penalty(Z, labels, 3)  # noqa: E731
    fL = lambda Z: 0.5 * ((Z - L0) ** 2).sum() + lr * (0.3 * Z.abs().sum() + 0.2 * (Z**2).sum())  # noqa: E731
    for _ in range(50):
        assert fS(head.S.detach()) <= fS(head.S.detach() + 1e-3 * torch.randn_like(S0)) + 1e-12
        assert fL(head.L.detach()) <= fL(head.L.detach() + 1e-3 * torch.randn_like(L0)) + 1e-12


def test_all_sharing_groups_all_attributes_in_one_group():
    """groups=None: the l2,1 norm over the rows of S (Table IV's "l21 all-sharing")."""
    torch.manual_seed(3)
    head = LatentTaskHead(6, 5, 4, groups=None, mu=0.5, gamma=0.0, lam=0.0).double()
    S0 = head.S.detach().clone()
    head.proximal_step(1.0)
    torch.testing.assert_close(head.S.detach(), ref.group_soft_threshold(S0, 0.5, 1))
    assert head.n_groups == 1 and head.group_norms().shape == (4, 1)
    model = AttributeCNN(5, "all_sharing", trunk="shared", n_latent=4, width=2, hidden=6)
    assert model.head.groups is None


def test_m_variant_is_l1_on_s_the_papers_ref_62():
    """M-CNN has no group information: each attribute its own group, so the prox on S is
    the elementwise soft threshold (l1), not the l2,1 of all-sharing."""
    torch.manual_seed(5)
    model = AttributeCNN(5, "M", trunk="shared", n_latent=4, width=2, hidden=6, mu=0.4, gamma=0.0, lam=0.0).double()
    S0 = model.head.S.detach().clone()
    model.head.proximal_step(0.5)
    torch.testing.assert_close(model.head.S.detach(), ref.soft_threshold(S0, 0.2))
    assert model.head.n_groups == 5


def test_group_lasso_zeroes_whole_group_blocks():
    head = LatentTaskHead(3, 4, 2, groups=[0, 0, 1, 1], mu=1.0, gamma=0.0, lam=0.0)
    with torch.no_grad():
        head.S.copy_(torch.tensor([[0.1, 0.1, 3.0, 1.0], [2.0, 0.5, 0.05, 0.05]]))
    head.proximal_step(0.5)
    S = head.S.detach()
    assert torch.all(S[0, :2] == 0) and torch.all(S[0, 2:] != 0)
    assert torch.all(S[1, 2:] == 0) and torch.all(S[1, :2] != 0)


def test_svd_initialisation_from_single_task_weights():
    torch.manual_seed(4)
    W0 = torch.randn(7, 4)
    full = LatentTaskHead(7, 4, 5)
    full.init_from_weights(W0)
    torch.testing.assert_close(full.weight, W0, rtol=1e-5, atol=1e-5)
    low = LatentTaskHead(7, 4, 2)
    low.init_from_weights(W0)
    U, s, Vh = torch.linalg.svd(W0, full_matrices=False)
    torch.testing.assert_close(low.weight, U[:, :2] * s[:2] @ Vh[:2], rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError):
        low.init_from_weights(torch.randn(3, 4))


@pytest.mark.parametrize("kwargs", [{"mu": -1.0}, {"gamma": float("inf")}, {"n_latent": 0},
                                    {"groups": [0, 1]}, {"groups": [0.5, 1, 1, 0]}, {"groups": [-1, 0, 0, 0]}])
def test_latent_head_bad_arguments(kwargs):
    args = {"in_features": 3, "n_tasks": 4, "n_latent": 2, **kwargs}
    with pytest.raises((ValueError, TypeError)):
        LatentTaskHead(**args)


def test_single_task_head_prox_is_elastic_net():
    head = SingleTaskHead(5, 3, gamma=0.2, lam=0.1).double()
    W0 = head.W.detach().clone()
    head.proximal_step(0.5)
    torch.testing.assert_close(head.W.detach(), ref.elastic_net_prox(W0, 0.1, 0.1))


# ---- the model ---------------------------------------------------------------------------


@pytest.mark.parametrize("variant", ["single", "M", "all_sharing", "MG"])
@pytest.mark.parametrize("trunk", ["per_attribute", "shared"])
@pytest.mark.parametrize("side", [8, 28])
def test_attribute_cnn_shapes(variant, trunk, side):
    model = AttributeCNN(4, variant, groups=[0, 0, 1, 1], trunk=trunk, n_latent=3, width=2, hidden=6, side=side)
    x = torch.rand(3, 1, side, side)
    assert model(x).shape == (3, 4)
    feats = model.features(x)
    assert feats.shape == ((3, 4, 6) if trunk == "per_attribute" else (3, 6))
    assert float(model.penalty()) == 0.0


def test_attribute_cnn_bad_arguments():
    with pytest.raises(ValueError, match="needs groups"):
        AttributeCNN(3, "MG")
    with pytest.raises(ValueError, match="variant"):
        AttributeCNN(3, "XL")
    with pytest.raises(ValueError, match="trunk"):
        AttributeCNN(3, "M", trunk="tree")


def test_init_from_single_task_reproduces_its_scores():
    torch.manual_seed(5)
    single = AttributeCNN(4, "single", trunk="per_attribute", width=2, hidden=6)
    mg = AttributeCNN(4, "MG", groups=[0, 0, 1, 1], trunk="per_attribute", n_latent=4, width=2, hidden=6)
    mg.init_from_single_task(single)
    x = torch.rand(5, 1, 8, 8)
    torch.testing.assert_close(mg(x), single(x), rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError):
        mg.init_from_single_task(AttributeCNN(4, "single", trunk="shared", width=2, hidden=6))


# ---- the trainer ---------------------------------------------------------------------------

MODEL_KEYS = ("variant", "trunk", "width", "hidden", "n_latent", "mu", "gamma", "lam")


def _make(M=len(DIGIT_ATTRIBUTES), groups=GROUPS, init_from=None, **kw):
    """A model factory and a config from one set of keywords (model keys go to the model)."""
    model_kw = dict(variant="MG", trunk="shared", width=4, hidden=16, n_latent=4, mu=0.1)
    cfg_kw = dict(epochs=3, batch_size=16, seed=0)
    for k, v in kw.items():
        (model_kw if k in MODEL_KEYS else cfg_kw)[k] = v

    def factory():
        m = AttributeCNN(M, groups=groups, **model_kw)
        return m if init_from is None else m.init_from_single_task(init_from)

    return factory, AttributeMTLConfig(**cfg_kw)


def test_trainer_fits_and_reports_per_group_metrics(tmp_path, data):
    d, Y, Yv = data
    path = tmp_path / "metrics.json"
    tr = AttributeMTLTrainer(*_make(epochs=12, lr=5e-3, metrics_path=str(path),
                                    group_names=("number", "loops", "strokes")))
    tr.fit((d.X_train, Y), (d.X_val, Yv))
    assert tr.history_[-1]["train_loss"] < tr.history_[0]["train_loss"]
    ev = tr.evaluate(d.X_val, Yv)
    assert set(ev) == {"accuracy", "loss", "per_attribute", "per_group"}
    assert set(ev["per_group"]) == {"number", "loops", "strokes"}
    assert ev["accuracy"] > 0.7  # majority guessing is about 0.6
    assert tr.predict(d.X_val).shape == Yv.shape and set(tr.predict(d.X_val).unique().tolist()) <= {0, 1}
    saved = json.loads(path.read_text())
    assert saved["metrics"]["accuracy"] == pytest.approx(ev["accuracy"])
    assert saved["method"] == "attribute_mtl" and len(saved["history"]) == 12


def test_trainer_accepts_missing_annotations(data):
    d, Y, _ = data
    Ym = Y.clone()
    Ym[::2, 0] = -1
    tr = AttributeMTLTrainer(*_make(variant="M", epochs=2)).fit((d.X_train, Ym))
    ev = tr.evaluate(d.X_train, Ym)
    assert 0.0 <= ev["per_attribute"]["a0"] <= 1.0
    assert set(ev["per_group"]) == {"g0", "g1", "g2"}  # groups reported for every variant


def test_trainer_exact_resume(tmp_path, data):
    d, Y, _ = data
    ck = str(tmp_path / "attr.pt")
    full = AttributeMTLTrainer(*_make(epochs=4, trunk="per_attribute", width=2)).fit((d.X_train, Y))
    AttributeMTLTrainer(*_make(epochs=2, trunk="per_attribute", width=2, checkpoint_path=ck)).fit((d.X_train, Y))
    resumed = AttributeMTLTrainer(*_make(epochs=4, trunk="per_attribute", width=2, checkpoint_path=ck))
    resumed.fit((d.X_train, Y))
    a, b = full.model.state_dict(), resumed.model.state_dict()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert len(resumed.history_) == 4


def test_trainer_stops_on_nan(data):
    d, Y, _ = data
    tr = AttributeMTLTrainer(*_make(epochs=2, lr=1e30, optimizer="sgd", momentum=0.0))
    with pytest.raises(FloatingPointError, match="non-finite loss"):
        tr.fit((d.X_train, Y))


def test_trainer_bad_input(data):
    d, Y, Yv = data
    M = Y.shape[1]
    tr = AttributeMTLTrainer(*_make(epochs=1))
    with pytest.raises(ValueError, match="must be 0, 1 or -1"):
        tr.fit((d.X_train, Y * 2))
    with pytest.raises(ValueError, match=r"\(N, 9\)"):
        tr.fit((d.X_train, Y[:, :5]))
    with pytest.raises(ValueError, match="samples"):
        tr.fit((d.X_train, Y[:-1]))
    with pytest.raises(ValueError, match="val X has .* samples but Y has"):
        tr.fit((d.X_train, Y), (d.X_val, Yv[:-2]))
    with pytest.raises(TypeError, match="val must be a DataLoader or a tuple"):
        tr.fit((d.X_train, Y), d.X_val)
    with pytest.raises(ValueError, match="NaN"):
        tr.fit((torch.full_like(d.X_train, float("nan")), Y))
    with pytest.raises(ValueError, match="variant"):
        AttributeCNN(M, "XL", GROUPS)
    with pytest.raises(ValueError, match="needs groups"):
        AttributeCNN(M, "MG", None)
    with pytest.raises(ValueError, match="one label per attribute"):
        AttributeCNN(M, "MG", GROUPS[:3])
    with pytest.raises(ValueError, match="mu"):
        AttributeCNN(M, "MG", GROUPS, mu=-1.0)
    with pytest.raises(RuntimeError, match="fit"):
        AttributeMTLTrainer(*_make()).predict(d.X_val)
    with pytest.raises(TypeError, match="config must be a AttributeMTLConfig"):
        AttributeMTLTrainer(_make()[0], TrainConfig())


def test_warm_start_from_single_task_model(data):
    d, Y, _ = data
    single = AttributeMTLTrainer(*_make(variant="single", epochs=2)).fit((d.X_train, Y))
    mg = AttributeMTLTrainer(*_make(variant="MG", epochs=0, n_latent=Y.shape[1], init_from=single.model))
    mg.fit((d.X_train, Y))
    torch.testing.assert_close(mg.decision_function(d.X_train), single.decision_function(d.X_train),
                               rtol=1e-4, atol=1e-4)


def test_digit_attributes_table():
    y = torch.arange(10)
    A = digit_attributes(y)
    assert A.shape == (10, len(DIGIT_ATTRIBUTES))
    names = [a[0] for a in DIGIT_ATTRIBUTES]
    assert A[:, names.index("even")].tolist() == [1, 0, 1, 0, 1, 0, 1, 0, 1, 0]
    assert A[:, names.index("prime")].tolist() == [0, 0, 1, 1, 0, 1, 0, 1, 0, 0]
    assert A[:, names.index("ge5")].tolist() == [0] * 5 + [1] * 5
    assert len(GROUPS) == A.shape[1]
