"""CETL (Chen et al. 2018): decoder and codes, Fisher / relative Fisher / GFI (eqs. 9-10), the DWA
loss through the op (eq. 11), the trainer (Algorithm 1, eq. 6, the three variants),
checkpoint resume, bad input, and the baselines."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mtlkernels import ops, reference
from mtlkernels.datasets import digits_images
from mtlkernels.fisher import (_average_ranks, diagonal_fisher, generalized_fisher, normalize_importance,
                               per_sample_grads, relative_fisher)
from mtlkernels.nn import CETLDecoder, CETLNetworks, DigitsCNN, coupling_code
from mtlkernels.train import (CETLConfig, CETLTrainer, FineTuneConfig, FineTuneTrainer, SoftTargetConfig,
                              SoftTargetTrainer, TargetOnlyTrainer, TrainConfig, train_source)


ONE_THREAD = True  # the whole module on one intra-op thread (conftest.py)


def small_cnn(n_out=5, seed=0, width=8, hidden=32):
    torch.manual_seed(seed)
    return DigitsCNN(n_out, width=width, hidden=hidden)


@pytest.fixture(scope="module")
def data():
    d = digits_images(0)
    src = d.y_train < 5
    tgt = torch.nonzero(d.y_train >= 5).flatten()
    return {"Xs": d.X_train[src][:150], "ys": d.y_train[src][:150],
            "X": d.X_train[tgt][:40], "y": d.y_train[tgt][:40] - 5, "Xu": d.X_train[tgt][40:100],
            "Xte": d.X_test[d.y_test >= 5], "yte": d.y_test[d.y_test >= 5] - 5}


@pytest.fixture(scope="module")
def source(data):
    torch.manual_seed(0)
    return train_source(DigitsCNN(5, width=8, hidden=32), TrainConfig(epochs=5, lr=5e-3, seed=0), (data["Xs"], data["ys"]))


def cfg(**kw):
    base = dict(epochs=2, batch_size=16, seed=0, fisher_samples=12, stage_epochs=(1, 1, 2), lr=5e-3)
    base.update(kw)
    return CETLConfig(**base)


def cetl(source, target, **kw):
    return CETLTrainer(CETLNetworks(source, target), cfg(**kw))


def params_of(*modules):
    return [p.detach().clone() for m in modules for p in m.parameters()]


# ---- decoder and codes ------------------------------------------------------------------------------


def test_decoder_shapes_and_range():
    net = small_cnn(10)
    t1 = CETLDecoder.mirror(net, "features")
    x = torch.rand(7, 1, 8, 8)
    code = coupling_code(net, x, "features")
    assert code.shape == (7, 32) and t1.code_dim == 32
    out = t1(code)
    assert out.shape == (7, 1, 8, 8) and float(out.detach().min()) >= 0 and float(out.detach().max()) <= 1
    t1s = CETLDecoder.mirror(net, "soft")
    soft = coupling_code(net, x, "soft", temperature=3.0)
    assert soft.shape == (7, 10)
    torch.testing.assert_close(soft.sum(1), torch.ones(7))
    torch.testing.assert_close(soft, F.softmax(net(x) / 3.0, 1))
    assert t1s(soft).shape == (7, 1, 8, 8)
    with pytest.raises(ValueError, match="codes of shape"):
        t1(torch.rand(3, 10))
    with pytest.raises(ValueError, match="coupling"):
        coupling_code(net, x, "logits")
    with pytest.raises(TypeError, match="features"):
        coupling_code(nn.Sequential(nn.Flatten(), nn.Linear(64, 3)), x, "features")


# ---- Fisher, RF, GFI --------------------------------------------------------------------------------------


def test_per_sample_grads_match_a_loop_and_fisher_is_mean_square():
    torch.manual_seed(1)
    net = nn.Sequential(nn.Linear(5, 4), nn.Tanh(), nn.Linear(4, 3)).double()
    x, y = torch.randn(9, 5, dtype=torch.float64), torch.randint(0, 3, (9,))
    params = dict(net.named_parameters())

    def loss(p, xx, yy):
        return F.cross_entropy(torch.func.functional_call(net, p, (xx,)), yy)

    g = per_sample_grads(loss, params, (x, y), chunk_size=4)
    for i in range(9):
        net.zero_grad()
        F.cross_entropy(net(x[i:i + 1]), y[i:i + 1]).backward()
        for n, p in net.named_parameters():
            torch.testing.assert_close(g[n][i], p.grad)
    fisher = diagonal_fisher([g[n] for n in params])
    for f, n in zip(fisher, params):
        torch.testing.assert_close(f, (g[n] ** 2).mean(0))


def test_average_ranks_with_ties():
    from scipy.stats import rankdata

    a = torch.randint(0, 4, (30, 25)).float()  # (m, n): ranks along dim 1, many ties
    np.testing.assert_allclose(_average_ranks(a).numpy(), rankdata(a.numpy(), axis=1))


@pytest.mark.parametrize("estimator", ["gaussian_copula", "histogram"])
def test_relative_fisher_properties(estimator):
    g = torch.Generator().manual_seed(0)
    n = 400
    a = torch.rand(n, 3, 5, generator=g)
    b_indep = torch.rand(n, 3, 5, generator=g)
    same = relative_fisher([a], [a ** 3 + 2], estimator)[0]  # a monotone transform: full information
    assert same.shape == (3, 5)
    assert float(same.min()) > 0.95
    indep = relative_fisher([a], [b_indep], estimator)[0]
    assert float(indep.max()) < 0.3
    assert float(indep.min()) >= 0
    const = relative_fisher([a], [torch.zeros(n, 3, 5)], estimator)[0]  # a dead weight: no information
    assert torch.equal(const, torch.zeros(3, 5))
    noisy = relative_fisher([a], [a + 0.3 * torch.rand(n, 3, 5, generator=g)], estimator)[0]
    assert float(indep.mean()) < float(noisy.mean()) < float(same.mean())


def test_relative_fisher_gaussian_copula_is_linfoot_of_gaussian_mi():
    # for jointly Gaussian data with correlation rho the estimator is close to |rho|
    g = torch.Generator().manual_seed(3)
    n, rho = 4000, 0.6
    z1, z2 = torch.randn(n, 1, generator=g), torch.randn(n, 1, generator=g)
    a, b = z1, rho * z1 + (1 - rho ** 2) ** 0.5 * z2
    rf = relative_fisher([a.exp()], [b.exp()])[0]  # any monotone transform of each
    assert abs(float(rf) - rho) < 0.05


def test_relative_fisher_histogram_is_normalised_mi_of_a_known_discrete_case():
    """Eq. 9's "mutual information normalised in [0, 1]": X ~ U(0, 4); Y = X with probability q,
    else independent U(0, 4). On 4 equal-frequency bins (the bins are floor(X), floor(Y))
    I = sum p log(p / (1/16)) with p = (q + (1 - q) / 4) / 4 on the diagonal and
    (1 - q) / 16 off it, and H = log 4 for both: the estimator must give I / log 4."""
    g = torch.Generator().manual_seed(5)
    n, q = 40000, 0.5
    x = 4 * torch.rand(n, 1, generator=g)
    y = torch.where(torch.rand(n, 1, generator=g) < q, x, 4 * torch.rand(n, 1, generator=g))
    p_diag, p_off = (q + (1 - q) / 4) / 4, (1 - q) / 16
    mi = 4 * p_diag * math.log(16 * p_diag) + 12 * p_off * math.log(16 * p_off)
    rf = float(relative_fisher([x], [y], "histogram", bins=4)[0])
    assert abs(rf - mi / math.log(4)) < 0.01


def test_relative_fisher_gaussian_copula_understates_a_shared_zero_mass():
    """Deliberate reading, measured: per-sample Fisher terms of two tasks share exact zeros
    (a dead ReLU unit zeroes both gradients). With a shared zero with probability 1/2 and
    independent values otherwise, I = log 2, whose Linfoot coefficient is sqrt(3)/2 = 0.866;
    the rank-based Gaussian copula treats the zeros as one tie and gives less (about 0.75),
    still above u = 0.5: it ranks such weights as shared, if less surely."""
    g = torch.Generator().manual_seed(6)
    n = 20000
    z = torch.rand(n, 1, generator=g) < 0.5
    a = torch.where(z, 0.0, torch.rand(n, 1, generator=g) + 0.1)
    b = torch.where(z, 0.0, torch.rand(n, 1, generator=g) + 0.1)
    rf = float(relative_fisher([a], [b])[0])
    assert 0.5 < rf < math.sqrt(1 - math.exp(-2 * math.log(2)))


def test_relative_fisher_bad_input():
    with pytest.raises(ValueError, match="estimator"):
        relative_fisher([torch.rand(5, 2)], [torch.rand(5, 2)], "kde")
    with pytest.raises(ValueError, match="shapes differ"):
        relative_fisher([torch.rand(5, 2)], [torch.rand(5, 3)])
    with pytest.raises(ValueError, match="at least 3"):
        relative_fisher([torch.rand(2, 2)], [torch.rand(2, 2)])


def test_generalized_fisher_eq10():
    m = 20000
    f = torch.rand(m) + 0.5
    shared, private = torch.ones(m), torch.zeros(m)
    keep_shared = generalized_fisher([f], [shared], u=0.5, p=0.9, generator=torch.Generator().manual_seed(0))[0]
    keep_private = generalized_fisher([f], [private], u=0.5, p=0.9, generator=torch.Generator().manual_seed(0))[0]
    assert abs(float((keep_shared != 0).double().mean()) - 0.9) < 0.01  # RF >= u: F kept with probability p
    assert abs(float((keep_private != 0).double().mean()) - 0.1) < 0.01  # RF < u: F kept with probability 1 - p
    nz = keep_shared != 0
    assert torch.equal(keep_shared[nz], f[nz])  # kept values are the Fisher itself
    again = generalized_fisher([f], [shared], generator=torch.Generator().manual_seed(0))[0]
    assert torch.equal(again, keep_shared)  # seeded
    assert torch.equal(generalized_fisher([f], [torch.full((m,), 0.5)], p=1.0)[0], f)  # RF == u counts as shared
    with pytest.raises(ValueError, match="p must"):
        generalized_fisher([f], [shared], p=1.5)
    imp = normalize_importance([torch.tensor([1.0, 3.0]), torch.tensor([2.0, 2.0])])
    torch.testing.assert_close(torch.cat(imp).mean(), torch.tensor(1.0))


# ---- DWA loss (eq. 11) through the op --------------------------------------------------------------------


def test_dwa_step_in_trainer_is_the_op_with_reference_gradient(data, source):
    """One SGD step (lr 1) of the trainer's stage step on DWA alone moves T1 by minus the
    gradient of the reference DWA loss (eq. 11), through the op and through the fused path."""
    for fused in (False, True):
        tr = cetl(source, small_cnn(), epochs=1, dwa_lambda=0.7, dwa_fused=fused).fit((data["X"], data["y"]))
        net = tr.decoder
        anchors = [p.detach() + 0.1 * torch.randn_like(p) for p in net.parameters()]
        imp = [torch.rand_like(p) for p in net.parameters()]
        before = [p.detach().clone() for p in net.parameters()]
        ps = [p.detach().clone().requires_grad_(True) for p in net.parameters()]
        g_ref = torch.autograd.grad(reference.dwa_penalty(ps, anchors, imp, 0.7), ps)
        opt = torch.optim.SGD(net.parameters(), lr=1.0)
        zero = lambda: sum(p.sum() for p in net.parameters()) * 0.0  # noqa: E731  (no data loss)
        _, dwa = tr._dwa_step(opt, zero, 1.0, net, (imp, anchors), "test")
        torch.testing.assert_close(torch.as_tensor(float(dwa.detach())), reference.dwa_penalty(before, anchors, imp, 0.7).float())
        for p, b0, g in zip(net.parameters(), before, g_ref):
            torch.testing.assert_close(p.detach(), b0 - g, rtol=1e-5, atol=1e-6)
    # gradcheck on a tiny parameter list
    ps = [torch.randn(3, 2, dtype=torch.float64, requires_grad=True), torch.randn(4, dtype=torch.float64, requires_grad=True)]
    an = [torch.randn(3, 2, dtype=torch.float64), torch.randn(4, dtype=torch.float64)]
    fi = [torch.rand(3, 2, dtype=torch.float64), torch.rand(4, dtype=torch.float64)]
    assert torch.autograd.gradcheck(lambda a, b: ops.dwa_penalty([a, b], an, fi, 0.7), tuple(ps))


# ---- the trainer --------------------------------------------------------------------------------------------


def test_fit_staged_transfer(data, source, tmp_path):
    before = params_of(source)
    metrics = tmp_path / "m.json"
    tr = cetl(source, small_cnn(), epochs=3, stage_epochs=(1, 1, 6), metrics_path=str(metrics))
    tr.fit((data["X"], data["y"]), (data["Xte"], data["yte"]), unlabeled=data["Xu"])
    assert len(tr.history_) == 3
    rec = tr.history_[-1]
    for k in ("loss1", "loss2", "loss3", "dwa1", "dwa2", "dwa3", "val_accuracy"):
        assert k in rec and np.isfinite(rec[k])
    assert tr.history_[0]["dwa2"] == 0.0 and rec["dwa2"] > 0  # no GFI2 before the first stage 2
    assert tr.history_[0]["loss1"] > rec["loss1"]  # T1 o S learns to reconstruct
    assert [s["gfi"] for s in tr.gfi_stats_[:3]] == ["gfi1", "gfi2", "gfi3"]
    assert all(0 <= s["kept"] <= 1 for s in tr.gfi_stats_)
    for a, b in zip(before, params_of(source)):
        assert torch.equal(a, b)  # S is frozen
    assert tr.score(data["Xte"], data["yte"]) > 0.4
    ev = tr.evaluate(data["Xte"], data["yte"])
    assert set(ev) >= {"accuracy", "cross_entropy", "per_class_accuracy", "recon_source_mse", "recon_coupled_mse"}
    assert len(ev["per_class_accuracy"]) == 5
    saved = json.loads(metrics.read_text())
    assert saved["method"] == "cetl" and len(saved["history"]) == 3 and "accuracy" in saved["final"]


@pytest.mark.parametrize("importance", ["none", "fisher"])
def test_fit_ablations(data, source, importance):
    tr = cetl(source, small_cnn(), importance=importance, rf_estimator="histogram").fit((data["X"], data["y"]))
    assert len(tr.history_) == 2
    if importance == "none":
        assert tr.history_[-1]["dwa3"] == 0.0 and tr.gfi_stats_ == []
    else:
        assert tr.history_[-1]["dwa3"] > 0 and all(s["kept"] == 1.0 for s in tr.gfi_stats_)


def test_fit_joint_coupled_loss(data, source):
    tr = cetl(source, small_cnn(), schedule="joint", lambdas=(1.0, 2.0, 0.5)).fit((data["X"], data["y"]),
                                                                                   unlabeled=data["Xu"])
    rec = tr.history_[-1]
    assert set(rec) >= {"loss1", "loss2", "loss3", "coupled"}
    assert rec["coupled"] == pytest.approx(rec["loss1"] + 2 * rec["loss3"] + 0.5 * rec["loss2"], rel=1e-5)


def test_distillation_variant_couples_through_soft_targets(data):
    """Reading of sec. 3.4.2: T2 is the concise student (the network stage 3 trains and the
    one scored), T1 its mirrored decoder, S the teacher; the coupling is the soft targets."""
    torch.manual_seed(0)
    teacher = train_source(DigitsCNN(5, width=16, hidden=64), TrainConfig(epochs=2, seed=0), (data["X"], data["y"]))
    student = small_cnn(width=2, hidden=16)
    tr = cetl(teacher, student, variant="distillation")
    assert tr.config.coupling_ == "soft"
    teacher_before = params_of(teacher)
    tr.fit((data["X"], data["y"]))
    assert tr.decoder.code_dim == 5 and np.isfinite(tr.history_[-1]["loss2"])
    assert tr.target is student and all(torch.equal(a, b) for a, b in zip(teacher_before, params_of(teacher)))
    with torch.no_grad():
        torch.testing.assert_close(tr.predict(data["Xte"]), student.eval()(data["Xte"]))
    widths = [m.out_channels for m in tr.decoder.modules() if isinstance(m, nn.ConvTranspose2d)]
    assert widths[0] == 2  # the decoder mirrors the student (width 2), not the teacher (16)
    with pytest.raises(ValueError, match="coupling codes"):  # features of different widths cannot share T1
        cetl(teacher, small_cnn(width=2, hidden=16), coupling="features").fit((data["X"], data["y"]))


def test_domain_adaptation_variant(data, source):
    # labelled source data (digits 0-4), unlabelled target inputs (shifted digits)
    from mtlkernels.datasets import transform_domain

    Xt = transform_domain(data["Xs"][:50], "shifted")
    tr = cetl(source, small_cnn(), variant="domain_adaptation")
    with pytest.raises(ValueError, match="unlabeled"):
        tr.fit((data["Xs"][:50], data["ys"][:50]))
    tr.fit((data["Xs"][:50], data["ys"][:50]), unlabeled=Xt)
    assert len(tr.history_) == 2


def _kill_after(trainer, rounds_done):
    orig = trainer.train_epoch

    def wrapped(rnd, *a):
        if rnd == rounds_done:
            raise KeyboardInterrupt("killed")
        return orig(rnd, *a)

    trainer.train_epoch = wrapped


def test_sequential_ablations_cetl_f_and_cetl_u(data, source):
    """Table 2: CETL_f trains T1 o S first, then T1 o T2 with T1 fixed; CETL_u updates T1 too."""
    train = (data["X"], data["y"])
    f = cetl(source, small_cnn(seed=2), schedule="sequential", decoder_fixed=True, importance="none", epochs=3)
    snaps = []
    f.train_epoch = (lambda orig: lambda rnd: (orig(rnd), snaps.append(params_of(f.decoder)))[0])(f.train_epoch)
    f.fit(train, unlabeled=data["Xu"])
    assert "loss1" in f.history_[0] and "loss1" not in f.history_[1]  # T1 o S only in the first round
    assert all(torch.equal(a, b) for a, b in zip(snaps[0], snaps[-1]))  # T1 fixed after its stage 1
    assert {"loss2", "loss3"} <= set(f.history_[-1]) and f.gfi_stats_ == []
    u = cetl(source, small_cnn(seed=2), schedule="sequential", importance="none", epochs=3).fit(
        train, unlabeled=data["Xu"])
    assert not all(torch.equal(a, b) for a, b in zip(params_of(f.decoder), params_of(u.decoder)))
    with pytest.raises(ValueError, match="sequential"):
        cetl(source, small_cnn(), decoder_fixed=True)


@pytest.mark.parametrize("schedule", ["staged", "joint", "sequential"])
def test_checkpoint_exact_resume(data, source, tmp_path, schedule):
    kw = dict(epochs=3, schedule=schedule)
    train = (data["X"], data["y"])
    full = cetl(source, small_cnn(seed=5), **kw).fit(train, unlabeled=data["Xu"])
    path = tmp_path / f"{schedule}.pt"
    first = cetl(source, small_cnn(seed=5), checkpoint_path=str(path), **kw)
    _kill_after(first, 2)
    with pytest.raises(KeyboardInterrupt):
        first.fit(train, unlabeled=data["Xu"])
    assert path.exists()
    resumed = cetl(source, small_cnn(seed=9), checkpoint_path=str(path), **kw)  # other init: overwritten
    resumed.fit(train, unlabeled=data["Xu"])
    for a, b in zip(params_of(full.target, full.decoder), params_of(resumed.target, resumed.decoder)):
        assert torch.equal(a, b)
    assert resumed.history_ == full.history_


def test_tol_stops_when_converged(data, source):
    tr = cetl(source, small_cnn(), epochs=5, tol=10.0).fit((data["X"], data["y"]))
    assert len(tr.history_) == 2


# ---- bad input ----------------------------------------------------------------------------------------------


def test_bad_input(data, source):
    tr = cetl(source, small_cnn())
    X, y = data["X"], data["y"]
    with pytest.raises(ValueError, match="different numbers of samples"):
        tr.fit((X, y[:-1]))
    with pytest.raises(ValueError, match=r"labels must be in \[0, 5\)"):
        tr.fit((X, y + 5))
    with pytest.raises(ValueError, match="integer"):
        tr.fit((X, y.float()))
    with pytest.raises(ValueError, match="do not match"):
        tr.fit((X, y), unlabeled=torch.rand(10, 1, 4, 4))
    with pytest.raises(ValueError, match="NaN"):
        bad = X.clone()
        bad[0, 0, 0, 0] = float("nan")
        tr.fit((bad, y))
    with pytest.raises(ValueError, match="different numbers of samples"):
        tr.fit((X, y), (X, y[:3]))
    with pytest.raises(TypeError, match="CETLNetworks"):
        CETLTrainer(small_cnn(), cfg()).fit((X, y))
    for bad_cfg in (dict(variant="x"), dict(schedule="x"), dict(importance="x"), dict(lambdas=(1.0, 1.0)),
                    dict(p=2.0), dict(stage_epochs=(1, 0, 1)), dict(coupling="x"), dict(fisher_samples=2)):
        with pytest.raises(ValueError):
            cetl(source, small_cnn(), **bad_cfg)


def test_nan_loss_stops(data, source):
    net = small_cnn()
    with torch.no_grad():
        net.head.weight.fill_(float("nan"))
    tr = cetl(source, net, importance="none")
    with pytest.raises(FloatingPointError, match="non-finite loss .* stage 3"):
        tr.fit((data["X"], data["y"]))


# ---- baselines ---------------------------------------------------------------------------------------------------


def test_baselines(data, source):
    X, y, Xte, yte = data["X"], data["y"], data["Xte"], data["yte"]
    before = params_of(source)
    ft = FineTuneTrainer(source, FineTuneConfig(epochs=2, batch_size=16, n_classes=5)).fit((X, y))
    assert ft.model.head is not source.head and ft.model.head.out_features == 5
    for a, b in zip(before, params_of(source)):
        assert torch.equal(a, b)  # fine-tuning works on a copy of S
    head_only = FineTuneTrainer(source, FineTuneConfig(epochs=1, batch_size=16, n_classes=5, mode="head"))
    head_only.fit((X, y))
    for a, b in zip(params_of(source.body), params_of(head_only.model.body)):
        assert torch.equal(a, b)  # only the new head moved
    with pytest.raises(ValueError, match="labels must be in"):
        FineTuneTrainer(source, FineTuneConfig(epochs=1, n_classes=3)).fit((X, y))
    with pytest.raises(ValueError, match="n_classes"):
        FineTuneConfig(epochs=1).validate()
    alone = TargetOnlyTrainer(small_cnn(), TrainConfig(epochs=2, batch_size=16)).fit((X, y))
    assert 0 <= alone.score(Xte, yte) <= 1
    with pytest.raises(ValueError, match="labels must be in"):
        TargetOnlyTrainer(small_cnn(), TrainConfig(epochs=1)).fit((X, y + 1))
    kd = SoftTargetTrainer(small_cnn(width=2, hidden=8), SoftTargetConfig(epochs=2, batch_size=16), teacher=source)
    assert 0 <= kd.fit((X, y)).score(Xte, yte) <= 1
    with pytest.raises(ValueError, match="alpha"):
        SoftTargetConfig(alpha=2.0).validate()


def test_fused_dwa_gradient_gives_the_same_training(data, source):
    a = cetl(source, small_cnn(seed=3)).fit((data["X"], data["y"]))
    b = cetl(source, small_cnn(seed=3), dwa_fused=True).fit((data["X"], data["y"]))
    assert b.history_[-1]["dwa3"] > 0
    for p, q in zip(params_of(a.target, a.decoder), params_of(b.target, b.decoder)):
        torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-5)


def test_experiment_notes_say_where_the_paper_is_not_followed():
    from mtlkernels.experiments.cetl import _notes, _pm

    per_setting = {"a": {"T2 alone": [0.5, 0.6, 0.55], "fine-tuning": [0.6, 0.62, 0.61], "CETL": [0.7, 0.72, 0.71]},
                   "b": {"T2 alone": [0.9, 0.92, 0.91], "fine-tuning": [0.8, 0.8, 0.8], "CETL": [0.85, 0.86, 0.84],
                         "CETL_e (no DWA)": [0.8, 0.8, 0.8]}}
    notes = _notes(per_setting, quick=False, n_seeds=3)
    assert "a: CETL 0.710" in notes and "follows the paper: CETL is best." in notes
    assert "b: CETL 0.850" in notes and "does NOT follow the paper: T2 alone (0.910)" in notes
    assert "Ablations, best first: CETL 0.850 > CETL_e (no DWA) 0.800" in notes
    assert _pm([0.5, 0.7]) == "0.600 ± 0.141" and _pm([0.1], signed=True) == "+0.100 ± 0.000"
