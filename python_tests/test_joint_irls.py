"""Joint IRLS training of n networks (Zhang et al. 2019) and its baselines: shapes, the coupling
penalty against the reference ops, the sigma rule, IRLS weights and the stop rule, the
weight graph, classification and auto-encoder fits, checkpoint resume, bad input."""

from __future__ import annotations

import json
import math

import pytest
import torch
from sklearn.exceptions import ConvergenceWarning
from torch import nn

from mtlkernels import reference
from mtlkernels.datasets import digits_domains
from mtlkernels.nn import DigitsAutoEncoder, DigitsCNN, DigitsMLP
from mtlkernels.plots import save, weight_graph_figure
from mtlkernels.testing import devices
from mtlkernels.train import (CheckpointError, Isolated, JointIRLSConfig, JointIRLSTrainer, L2Reg, PretrainFinetune,
                              Shareall)
from mtlkernels.train.joint_irls import irls_layers, mutual_top_k_edges

DOMAINS = ("original", "rotated", "inverted")


ONE_THREAD = True  # the whole module on one intra-op thread (conftest.py)


@pytest.fixture(scope="module")
def domains():
    return digits_domains(DOMAINS, seed=0, train_per_domain=24)


def tiny_mlp():
    return DigitsMLP(hidden=(12,))


def cfg(**kw):
    base = dict(epochs=6, batch_size=16, lr=1e-2, seed=0)
    base.update(kw)
    return JointIRLSConfig(**base)


def params_of(trainer):
    return [torch.cat([p.detach().reshape(-1) for p in net.parameters()]) for net in trainer.models_]


# ---- shapes and layers ---------------------------------------------------------------------------


def test_networks_shapes_and_layers():
    x = torch.rand(5, 1, 8, 8)
    ae = DigitsAutoEncoder(code=6, hidden=20)
    with torch.no_grad():
        y = ae(x)
    assert y.shape == x.shape and float(y.min()) >= 0 and float(y.max()) <= 1
    assert DigitsMLP(n_out=7, hidden=(9, 5))(x).shape == (5, 7)
    names = [n for n, _ in irls_layers(DigitsCNN(width=4, hidden=8))]
    assert names == ["body.0", "body.2", "body.6", "head"]
    assert [n for n, _ in irls_layers(ae)] == ["encoder.1", "encoder.3", "decoder.0", "decoder.2"]
    layers = irls_layers(ae)
    assert sum(p.numel() for _, ps in layers for p in ps) == sum(p.numel() for p in ae.parameters())


def test_custom_layers_must_cover_every_parameter():
    class Bad(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(64, 4), nn.Linear(4, 10)

        def irls_layers(self):
            return [("a", list(self.a.parameters()))]

        def forward(self, x):
            return self.b(self.a(x.flatten(1)))

    with pytest.raises(ValueError, match="outside every layer"):
        irls_layers(Bad())


# ---- the coupling of eqs. 6-9 against the reference ops ----------------------------------------------


def test_block_penalty_is_eq9_and_its_gradient_is_eq8(domains):
    """Network i's penalty lam sum_l C_il ||theta^l - t_i^l||^2 (eq. 9) has the gradient of
    lam * the eq. 8 weighted least squares with respect to theta_i (reference ops, float64)."""
    torch.manual_seed(1)
    tr = JointIRLSTrainer(lambda: DigitsMLP(hidden=(6, 5)).double(), cfg(same_init=False, lam=0.7, epochs=0))
    tr.fit([(d.X_train.double(), d.y_train) for d in domains])  # 0 sweeps: networks, layers and state only
    n, L = tr.n, len(tr.offsets) - 1
    w = torch.rand(L, n, n, dtype=torch.float64)
    w = (w + w.transpose(1, 2)) / 2
    c = reference.layer_weights(w)
    P = tr._params_matrix()
    for i in range(n):
        penalty = tr._coupling(i, c)
        for p in tr.nets[i].parameters():
            p.grad = None
        value = penalty()
        value.backward()
        got = torch.cat([p.grad.reshape(-1) for _, ps in tr.layers[i] for p in ps])
        # reference: d/dtheta_i of lam * 1/2 sum_{a != b} w d2 with the other rows fixed
        Pg = P.clone().requires_grad_(True)
        ref_loss = 0.7 * reference.robust_consistency(Pg, tr.offsets, weights=w)
        (ref_grad,) = torch.autograd.grad(ref_loss, Pg)
        torch.testing.assert_close(got, ref_grad[i], rtol=1e-10, atol=1e-12)
        # and the value is lam sum_l C_il ||theta^l - t^l||^2 with the reference consensus
        target = reference.irls_consensus(c, P, tr.offsets)[i]
        D = reference.pairwise_sq_dists(torch.stack([P[i], target]), tr.offsets)[:, 0, 1]
        C = c[:, i].sum(-1) - c[:, i, i]
        torch.testing.assert_close(value.detach(), 0.7 * (C * D).sum(), rtol=1e-10, atol=1e-12)


def test_l2_coefficients_and_sigma_rule(domains):
    """Init uses w = 1 (eq. 5); sigma^l = mean_i min_j d_l(i, j) at the initialised
    parameters (sec. 4.2.1); the first weights are eq. 7 at those parameters."""
    data = [(d.X_train, d.y_train) for d in domains]
    for last, normalize in ((False, True), (True, False)):
        tr = JointIRLSTrainer(tiny_mlp, cfg(epochs=3, init_epochs=3, init_tol=0.0, lam=0.05, last_layer_term=last,
                                            normalize=normalize))
        with pytest.warns(ConvergenceWarning):
            tr.fit(data)  # stops right after the first weighting step
        st = tr.state_
        assert st.phase == "irls" and st.k == 1
        P = tr._params_matrix().double()
        D = reference.pairwise_sq_dists(P, tr.offsets)
        sigma = reference.sigma_init(D)
        sizes = torch.tensor([b - a for a, b in zip(tr.offsets[:-1], tr.offsets[1:])], dtype=torch.float64)
        scale = 1.0 / torch.stack([sizes[0] + sizes[1], sizes[1]]) if normalize else torch.ones(2, dtype=torch.float64)
        if not last:  # eq. 3: L - 1 = 1 adjacent pair; the last layer alone is switched off (sigma = 0)
            sigma[-1] = 0.0
            scale[-1] = 0.0
        torch.testing.assert_close(st.sigma.double(), sigma, rtol=1e-4, atol=1e-6)
        w_ref, _ = reference.irls_weights(D, sigma)
        torch.testing.assert_close(st.w.double(), w_ref, rtol=1e-4, atol=1e-5)
        c_ref = reference.layer_weights(w_ref * scale.view(-1, 1, 1))
        torch.testing.assert_close(st.c.double(), c_ref, rtol=1e-4, atol=1e-9)
        assert [h["phase"] for h in tr.history_] == ["init"] * 3
        assert tr.history_[-1]["irls_iter"] == 1 and tr.history_[-1]["delta"] > 0.1  # away from the L2 weights


def test_l2_initialisation_stops_at_its_own_convergence_test_or_the_cap(domains):
    """Eq. 5 runs until the relative change of its objective over a sweep is <= init_tol
    (none before the second sweep), or for init_epochs sweeps at most."""
    data = [(d.X_train, d.y_train) for d in domains]
    tr = JointIRLSTrainer(tiny_mlp, cfg(epochs=6, init_epochs=5, init_tol=10.0, lam=0.05, max_irls_iters=1))
    with pytest.warns(ConvergenceWarning):
        tr.fit(data)
    phases = [h["phase"] for h in tr.history_]
    assert phases[:2] == ["init", "init"] and phases[2] != "init"  # stopped by the test after sweep 2
    assert tr.history_[1]["init_change"] <= 10.0 and "irls_iter" in tr.history_[1]
    tr = JointIRLSTrainer(tiny_mlp, cfg(epochs=6, init_epochs=4, init_tol=0.0, lam=0.05, max_irls_iters=1))
    with pytest.warns(ConvergenceWarning):
        tr.fit(data)
    assert [h["phase"] for h in tr.history_][:4] == ["init"] * 4 and "irls_iter" in tr.history_[3]


def test_l2reg_shared_fraction_couples_only_the_first_layers(domains):
    """L2Reg(25%) / L2Reg(50%) (Table 4): round(fraction * L) first layers coupled, the rest isolated."""
    data = [(d.X_train, d.y_train) for d in domains]
    for frac, k in ((0.25, 1), (0.5, 2), (None, 3)):  # DigitsMLP: 3 layers
        tr = L2Reg(DigitsMLP, cfg(epochs=1, lam=1.0, shared_fraction=frac)).fit(data)
        c = tr.state_.c
        assert bool((c[:k] > 0).all()) and bool((c[k:] == 0).all())
        # the coupling's gradient is zero on the layers that are not shared
        penalty = tr._coupling(0, c)
        for p in tr.nets[0].parameters():
            p.grad = None
        penalty().backward()
        grads = [torch.cat([p.grad.reshape(-1) for p in ps]) for _, ps in tr.layers[0]]
        assert all(float(g.abs().max()) > 0 for g in grads[:k]) and all(float(g.abs().max()) == 0 for g in grads[k:])


def test_stop_rule_and_iteration_cap(domains):
    data = [(d.X_train, d.y_train) for d in domains]
    # delta^(1) = max |w - 1| <= 1 always: tol = 1 stops after the first weighting
    tr = JointIRLSTrainer(tiny_mlp, cfg(epochs=6, init_epochs=2, tol=1.0, lam=0.05)).fit(data)
    assert tr.converged_ and tr.irls_iters_ == 1 and tr.converged_sweep_ == 2
    assert [h["phase"] for h in tr.history_] == ["init", "init"] + ["frozen"] * 4
    # tol = 0 never stops: the cap on iterations freezes the weights, with a warning
    with pytest.warns(ConvergenceWarning, match="after max_irls_iters=3 weighting steps"):
        tr = JointIRLSTrainer(tiny_mlp, cfg(epochs=8, init_epochs=2, tol=0.0, max_irls_iters=3, epochs_per_iter=1,
                                            lam=0.05)).fit(data)
    assert not tr.converged_ and tr.irls_iters_ == 3 and tr.converged_sweep_ is None
    assert [h.get("irls_iter") for h in tr.history_ if "irls_iter" in h] == [1, 2, 3]
    assert tr.history_[-1]["phase"] == "frozen"
    deltas = [h["delta"] for h in tr.history_ if "delta" in h]
    assert all(0 <= d <= 1 for d in deltas)
    assert all(math.isfinite(h["closs"]) and h["closs"] >= 0 for h in tr.history_)


def test_jacobi_and_gauss_seidel_schedules(domains):
    """Jacobi: every network trains against the eq. 9 targets of the sweep's start, so after
    one sweep networks 1 and 2 do not depend on dataset 0. Gauss-Seidel (sec. 4.2.3): network
    1 trains against network 0's newest parameters, so they do."""
    data = [(d.X_train, d.y_train) for d in domains]
    other = [(data[0][0], data[0][1].roll(1)), *data[1:]]  # dataset 0's labels changed

    def nets(schedule, sets):
        return params_of(L2Reg(tiny_mlp, cfg(epochs=1, lam=0.5, schedule=schedule)).fit(sets))

    jac, jac_other = nets("jacobi", data), nets("jacobi", other)
    gs, gs_other = nets("gauss_seidel", data), nets("gauss_seidel", other)
    assert not torch.equal(jac[0], jac_other[0])
    assert torch.equal(jac[1], jac_other[1]) and torch.equal(jac[2], jac_other[2])
    assert not torch.equal(gs[1], gs_other[1]) and not torch.equal(gs[2], gs_other[2])
    assert torch.equal(jac[0], gs[0]) and not torch.equal(jac[1], gs[1])  # network 0 goes first in both


def test_l2reg_never_reweights(domains):
    data = [(d.X_train, d.y_train) for d in domains]
    tr = L2Reg(tiny_mlp, cfg(epochs=4, lam=0.05)).fit(data)
    assert {h["phase"] for h in tr.history_} == {"l2"}
    w = tr.weights_  # 1 on the L - 1 adjacent pairs of eq. 3, 0 on the last layer alone
    assert tr.irls_iters_ == 0 and torch.equal(w[:-1], torch.ones_like(w[:-1])) and not bool(w[-1].any())
    assert all(h["penalty"] >= 0 for h in tr.history_)


def test_coupling_pulls_networks_together(domains):
    data = [(d.X_train, d.y_train) for d in domains]
    spread = {}
    for lam in (0.0, 1000.0):  # normalised per parameter: 1000 / (P_l ~ 900) ~ 1 per pair
        tr = L2Reg(tiny_mlp, cfg(epochs=5, lam=lam))
        tr.fit(data)
        P = tr._params_matrix()
        spread[lam] = float((P - P.mean(0)).norm())
    assert spread[1000.0] < 0.5 * spread[0.0]


# ---- the weight graph (Fig. 2) -----------------------------------------------------------------------


def test_mutual_top_k_edges():
    w = torch.tensor([[1.0, 0.9, 0.1, 0.2], [0.9, 1.0, 0.3, 0.1], [0.1, 0.3, 1.0, 0.8], [0.2, 0.1, 0.8, 1.0]])
    assert mutual_top_k_edges(w, 1) == [[0, 1], [2, 3]]
    assert mutual_top_k_edges(w, 3) == [[0, 1], [0, 2], [0, 3], [1, 2], [1, 3], [2, 3]]


def test_weight_graph_data_and_plot(domains, tmp_path):
    data = [(d.X_train, d.y_train) for d in domains]
    tr = JointIRLSTrainer(DigitsMLP, cfg(epochs=4, init_epochs=2, graph_top_k=1, lam=0.05)).fit(data)
    g = tr.weight_graph_
    L = len(tr.offsets) - 1
    assert g["layer_pairs"] == ["net.1+net.3", "net.3+net.5"] and len(g["sigma"]) == L - 1  # eq. 3: L - 1 pairs
    W = torch.tensor(g["weights"])
    assert W.shape == (L - 1, 3, 3) and torch.allclose(W, W.transpose(1, 2)) and float(W.min()) >= 0
    assert float(W.max()) <= 1
    for l in range(L - 1):
        assert g["edges"][l] == mutual_top_k_edges(W[l], 1)
    json.dumps(g)
    import matplotlib

    backend = matplotlib.get_backend()
    fig = weight_graph_figure(g, title="t")
    png = save(fig, tmp_path / "graph.png")
    assert (tmp_path / "graph.png").stat().st_size > 1000 and png.endswith(".png")
    assert type(fig).__name__ == "Figure" and matplotlib.get_backend() == backend  # the caller's backend is kept


# ---- end to end ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("device", devices())
def test_all_methods_fit_and_evaluate(domains, device, tmp_path):
    methods = [
        JointIRLSTrainer(tiny_mlp, cfg(device=device, lam=0.05, metrics_path=str(tmp_path / "m.json"))),
        L2Reg(tiny_mlp, cfg(device=device, lam=0.05)),
        Isolated(tiny_mlp, cfg(device=device)),
        Shareall(tiny_mlp, cfg(device=device)),
        PretrainFinetune(tiny_mlp, cfg(device=device, pretrain_epochs=3)),
    ]
    for tr in methods:
        tr.fit(domains, "val")
        ev = tr.evaluate("test")
        assert ev["tasks"] == list(DOMAINS) and len(ev["per_task"]) == 3
        assert all(0 <= a <= 1 for a in ev["per_task"]) and ev["metric"] == "accuracy"
        assert len(tr.history_) == 6 and all(len(h["val"]) == 3 for h in tr.history_)
        assert tr.history_[-1]["loss"] < tr.history_[0]["loss"], tr.method
    shareall, pf = methods[3], methods[4]
    assert all(m is shareall.models_[0] for m in shareall.models_)
    assert len({id(m) for m in pf.models_}) == 3 and [h["phase"] for h in pf.history_] == ["pretrain"] * 3 + ["finetune"] * 3
    saved = json.loads((tmp_path / "m.json").read_text())
    assert saved["method"] == "joint_irls" and "weight_graph" in saved and len(saved["history"]) == 6
    assert set(saved["evaluation"]) == {"val", "test"}


def test_autoencoder_task(domains):
    """Task II of Zhang et al. 2019 (joint IRLS) at small scale: the reconstruction error on held-out images falls."""
    train = [d.X_train for d in domains]
    test = [d.X_test for d in domains]
    factory = lambda: DigitsAutoEncoder(code=8, hidden=24)  # noqa: E731
    c = cfg(task="autoencoder", epochs=8, init_epochs=3, lam=0.01)
    start = JointIRLSTrainer(factory, cfg(task="autoencoder", epochs=0, lam=0.01)).fit(train).evaluate(test)["per_task"]
    tr = JointIRLSTrainer(factory, c).fit(train)  # the same initial weights (same seed)
    ev = tr.evaluate(test)
    assert ev["metric"] == "recon_error" and all(a < b for a, b in zip(ev["per_task"], start))
    # completion-style pairs (corrupted input, clean target) are accepted too
    masked = [x.clone() for x in train]
    for x in masked:
        x[:, :, 2:5, 2:5] = 0
    sh = Shareall(factory, c).fit(list(zip(masked, train)), names=["a", "b", "c"])
    assert sh.evaluate(list(zip(masked, train)))["tasks"] == ["a", "b", "c"]
    with pytest.raises(ValueError, match="auto-encoder outputs shape"):
        JointIRLSTrainer(factory, c).fit([(x, x[:, :, :4]) for x in train])


def test_completion_masks():
    from mtlkernels.experiments.joint_irls import mask_squares

    X = torch.rand(50, 1, 8, 8) + 0.1
    M = mask_squares(X, 3, seed=4)
    zeros = (M == 0).flatten(1).sum(1)
    assert torch.equal(zeros, torch.full((50,), 9)) and torch.equal(M, mask_squares(X, 3, seed=4))
    assert torch.equal(M[M != 0], X[M != 0])


# ---- seeds and exact resume ------------------------------------------------------------------------------


def test_seed_control(domains):
    data = [(d.X_train, d.y_train) for d in domains]
    a = params_of(JointIRLSTrainer(tiny_mlp, cfg(epochs=3, init_epochs=1, lam=0.05)).fit(data))
    b = params_of(JointIRLSTrainer(tiny_mlp, cfg(epochs=3, init_epochs=1, lam=0.05)).fit(data))
    c = params_of(JointIRLSTrainer(tiny_mlp, cfg(epochs=3, init_epochs=1, seed=1, lam=0.05)).fit(data))
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not torch.equal(a[0], c[0])


@pytest.mark.parametrize("make", [
    lambda c: JointIRLSTrainer(tiny_mlp, c),
    lambda c: PretrainFinetune(tiny_mlp, c),
    lambda c: Shareall(tiny_mlp, c),
], ids=["joint_irls", "pretrain_finetune", "shareall"])
def test_checkpoint_exact_resume(domains, tmp_path, make):
    """Stop after k sweeps (across the init -> IRLS and pretrain -> finetune switches),
    resume with a fresh trainer and the same config: the same weights as one run."""
    data = [(d.X_train, d.y_train) for d in domains]
    kw = dict(init_epochs=2, epochs_per_iter=2, pretrain_epochs=3, lam=0.05)
    full = make(cfg(epochs=7, **kw)).fit(data)
    path = str(tmp_path / "ck.pt")
    make(cfg(epochs=3, checkpoint_path=path, **kw)).fit(data)  # stopped after 3 sweeps
    resumed = make(cfg(epochs=7, checkpoint_path=path, **kw)).fit(data)  # a larger budget continues
    assert all(torch.equal(x, y) for x, y in zip(params_of(full), params_of(resumed)))
    assert [h["loss"] for h in resumed.history_] == [h["loss"] for h in full.history_]
    if hasattr(full, "weights_"):
        assert torch.equal(full.weights_, resumed.weights_) and full.irls_iters_ == resumed.irls_iters_


class _Kill(Exception):
    pass


def test_kill_mid_epoch_then_resume(domains, tmp_path):
    """A crash in the middle of a sweep: the resumed run replays it from the last checkpoint."""
    data = [(d.X_train, d.y_train) for d in domains]
    calls = {"n": 0, "kill_at": None}

    class Fragile(DigitsMLP):
        def forward(self, x):
            calls["n"] += 1
            if calls["kill_at"] is not None and calls["n"] == calls["kill_at"]:
                raise _Kill()
            return super().forward(x)

    factory = lambda: Fragile(hidden=(12,))  # noqa: E731
    kw = dict(epochs=5, init_epochs=2, lam=0.05)
    full = JointIRLSTrainer(factory, cfg(**kw)).fit(data)
    path = str(tmp_path / "ck.pt")
    calls.update(n=0, kill_at=22)  # 1 shape check + 3 sweeps x (2 batches x 3 networks): in the 4th sweep
    with pytest.raises(_Kill):
        JointIRLSTrainer(factory, cfg(checkpoint_path=path, **kw)).fit(data)
    calls["kill_at"] = None
    resumed = JointIRLSTrainer(factory, cfg(checkpoint_path=path, **kw)).fit(data)
    assert len(resumed.history_) == 5
    assert all(torch.equal(x, y) for x, y in zip(params_of(full), params_of(resumed)))


def test_checkpoint_of_another_number_of_processes_is_refused(domains, tmp_path):
    data = [(d.X_train, d.y_train) for d in domains]
    (tmp_path / "ck.rank0-of-2.pt").write_bytes(b"a shard of a 2-process run")
    with pytest.raises(CheckpointError, match="holds a run of 2 process.*nproc_per_node=2"):
        JointIRLSTrainer(tiny_mlp, cfg(epochs=2, checkpoint_path=str(tmp_path / "ck.pt"))).fit(data)


def test_checkpoint_of_another_method_is_refused(domains, tmp_path):
    data = [(d.X_train, d.y_train) for d in domains]
    path = str(tmp_path / "ck.pt")
    Isolated(tiny_mlp, cfg(epochs=1, checkpoint_path=path)).fit(data)
    with pytest.raises(CheckpointError, match="trainer: 'isolated' in the checkpoint, 'joint_irls' now"):
        JointIRLSTrainer(tiny_mlp, cfg(epochs=2, checkpoint_path=path)).fit(data)


# ---- bad input ---------------------------------------------------------------------------------------------


def test_bad_input(domains):
    data = [(d.X_train, d.y_train) for d in domains]
    with pytest.raises(ValueError, match="at least 2 datasets"):
        JointIRLSTrainer(tiny_mlp, cfg()).fit(data[:1])
    with pytest.raises(ValueError, match="mismatched datasets"):
        JointIRLSTrainer(tiny_mlp, cfg()).fit([data[0], (data[1][0][:, :, :7, :7], data[1][1])])
    with pytest.raises(ValueError, match=r"samples but the targets have"):
        Isolated(tiny_mlp, cfg()).fit([data[0], (data[1][0], data[1][1][:-1])])
    bad = data[1][1].clone()
    bad[0] = 10
    with pytest.raises(ValueError, match=r"labels must be in \[0, 10\)"):
        JointIRLSTrainer(tiny_mlp, cfg()).fit([data[0], (data[1][0], bad)])
    with pytest.raises(ValueError, match="labels must be integer"):
        Isolated(tiny_mlp, cfg()).fit([(data[0][0], data[0][1].float())])
    with pytest.raises(ValueError, match="classification needs labels"):
        Isolated(tiny_mlp, cfg()).fit([data[0][0]])
    X = data[0][0].clone()
    X[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN or inf"):
        Isolated(tiny_mlp, cfg()).fit([(X, data[0][1])])
    with pytest.raises(ValueError, match="lam must be"):
        JointIRLSTrainer(tiny_mlp, cfg(lam=-1.0))
    with pytest.raises(ValueError, match="task must be"):
        JointIRLSTrainer(tiny_mlp, cfg(task="gan"))
    with pytest.raises(ValueError, match="tol must be"):
        JointIRLSTrainer(tiny_mlp, cfg(tol=-1))
    with pytest.raises(ValueError, match="schedule must be one of"):
        JointIRLSTrainer(tiny_mlp, cfg(schedule="parallel"))
    with pytest.raises(ValueError, match="dist_timeout_s must be"):
        JointIRLSTrainer(tiny_mlp, cfg(dist_timeout_s=0))
    with pytest.raises(TypeError, match="factory"):
        JointIRLSTrainer(tiny_mlp(), cfg())
    with pytest.raises(ValueError, match="different architectures"):
        sizes = iter([(12,), (13,), (12,)])
        JointIRLSTrainer(lambda: DigitsMLP(hidden=next(sizes)), cfg()).fit(data)
    with pytest.raises(ValueError, match="2 names for 3 datasets"):
        Isolated(tiny_mlp, cfg()).fit(data, names=["a", "b"])
    with pytest.raises(ValueError, match="no 'val' split"):
        Isolated(tiny_mlp, cfg(epochs=1)).fit(data, "val")


def test_nan_loss_stops_with_a_message(domains):
    class Exploding(DigitsMLP):
        def forward(self, x):
            out = super().forward(x)
            return out * float("nan") if self.training else out

    data = [(d.X_train, d.y_train) for d in domains]
    for make in (lambda: JointIRLSTrainer(lambda: Exploding(hidden=(8,)), cfg(lam=0.1)),
                 lambda: Shareall(lambda: Exploding(hidden=(8,)), cfg())):
        with pytest.raises(FloatingPointError, match="non-finite loss"):
            make().fit(data)


def test_experiment_follows_the_papers_protocol():
    """One epoch per IRLS iteration (sec. 4.2.3), the delta <= 1e-2 stop, lam on a grid with
    the paper's 10, L2Reg(25%) / L2Reg(50%) among the baselines (Table 4)."""
    from mtlkernels.experiments.joint_irls import METHODS, SHARED, settings

    for quick in (True, False):
        st = settings(quick)
        assert st["epochs_per_iter"] == 1 and st["tol"] == 1e-2 and 10.0 in st["lam_grid"]
    assert SHARED == {"L2Reg(25%)": 0.25, "L2Reg(50%)": 0.5} and set(SHARED) <= set(METHODS)
    assert JointIRLSConfig().last_layer_term is False and JointIRLSConfig().normalize is True
