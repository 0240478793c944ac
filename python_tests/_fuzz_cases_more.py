"""Fuzz specifications of the nuclear-norm, joint-IRLS, AMTFL and DWA ops (see _fuzz_cases.py)."""

from __future__ import annotations

import torch
from hypothesis import strategies as st

from mtlkernels import ops
from mtlkernels import reference as ref

from _fuzz_cases import F64, M, X, Spec, layout, num, values

# ---- nuclear norm ------------------------------------------------------------------------


def _spectral_args(data):
    batch = data.draw(st.sampled_from([(), (1,), (3,), (2, 2)]), label="batch")
    m, n = data.draw(st.integers(0, 6), label="m"), data.draw(st.integers(0, 6), label="n")
    scale = data.draw(st.sampled_from([1e-3, 1.0, 1e3]), label="scale")
    x = layout(data, values(data, (*batch, m, n), scale=scale))
    if data.draw(st.booleans(), label="tau per matrix"):
        tau = values(data, batch, positive=True, scale=scale)
    else:
        tau = data.draw(st.sampled_from([0.0, 0.5, 2.0]), label="tau") * scale
    return {"x": x, "tau": tau, "lam": data.draw(st.sampled_from([0.0, 0.5, 2.0]), label="lam"),
            "eps": data.draw(st.sampled_from([0.1, 1.0]), label="eps") * scale}


def _spectral_spec(name):
    def call(path, a, copy=True):
        if name == "svt":
            return ops.svt(a["x"], a["tau"]) if path == "ops" else M.svt(a["x"], num(a["tau"]))
        if name == "nuclear_norm":
            return getattr(ops if path == "ops" else M, name)(a["x"])
        if name == "spectral_route":
            return ops.spectral_route(a["x"], "svt", a["tau"]) if path == "ops" else M._spectral_route(a["x"], num(a["tau"]), 0)
        return getattr(ops if path == "ops" else M, name)(a["x"], a["lam"], a["eps"])

    def reference(a):
        if name == "svt":
            return ref.svt(a["x"], a["tau"])
        if name == "nuclear_norm":
            return ref.nuclear_norm(a["x"])
        if name == "spectral_route":
            return None  # no reference: both paths agree on valid route codes
        return getattr(ref, name)(a["x"], a["lam"], a["eps"])

    inv = {
        "x 1-D": (lambda a: {**a, "x": a["x"].reshape(-1)}, X),
        "x integer": (lambda a: {**a, "x": a["x"].to(torch.int64)}, X),
        "x half outside autocast": (lambda a: {**a, "x": a["x"].half()}, X),
    }
    if name in ("svt", "spectral_route"):
        inv["tau negative"] = (lambda a: {**a, "tau": -1.0}, "tau")
        inv["tau batch shape"] = (lambda a: {**a, "tau": torch.ones(7, dtype=F64)}, "tau")
        inv["tau on meta"] = (lambda a: {**a, "tau": torch.ones(a["x"].shape[:-2], dtype=F64, device="meta")}
                              if a["x"].dim() > 2 else None, "tau")
    if name.startswith("smoothed"):
        inv["lam negative"] = (lambda a: {**a, "lam": -1.0}, "lam")
        inv["eps zero"] = (lambda a: {**a, "eps": 0.0}, "eps")
        inv["eps below 1 / DBL_MAX"] = (lambda a: {**a, "eps": 1e-310}, "eps")
    return Spec(name, _spectral_args, call, reference, inv, tol=1e-9)


# ---- joint IRLS ---------------------------------------------------------------------------


def _irls_args(data):
    n = data.draw(st.integers(1, 5), label="networks")
    sizes = data.draw(st.lists(st.integers(1, 4), min_size=1, max_size=3), label="layer sizes")
    offsets = ops.layer_offsets(sizes)
    L = len(sizes)
    params = layout(data, values(data, (n, offsets[-1])))
    gen = torch.Generator().manual_seed(data.draw(st.integers(0, 1000), label="seed"))
    w = torch.rand(L, n, n, generator=gen, dtype=F64) * data.draw(st.sampled_from([0.0, 1.0, 5.0]), label="w scale")
    kind = data.draw(st.sampled_from(["number", "per pair", "zero", "inf"]), label="sigma")
    sigma = {"number": 0.7, "zero": 0.0, "inf": float("inf"), "per pair": values(data, (L,), positive=True)}[kind]
    return {"params": params, "offsets": offsets, "sigma": sigma, "weights": w, "coeffs": torch.randn(L, n, n, generator=gen,
            dtype=F64), "transpose": data.draw(st.booleans(), label="transpose"),
            "sq_dists": ref.pairwise_sq_dists(params, offsets), "use_weights": data.draw(st.booleans(), label="weighted")}


_IRLS = {  # name: (call(ops-or-M, args, path), reference(args))
    "pairwise_sq_dists": (lambda f, a, p: f.pairwise_sq_dists(a["params"], a["offsets"]),
                          lambda a: ref.pairwise_sq_dists(a["params"], a["offsets"])),
    "irls_weights": (lambda f, a, p: f.irls_weights(a["sq_dists"], a["sigma"] if p == "ops" else num(a["sigma"])),
                     lambda a: ref.irls_weights(a["sq_dists"], a["sigma"])),
    "robust_consistency": (
        lambda f, a, p: (ops.robust_consistency(a["params"], a["offsets"], a["sigma"],
                                                a["weights"] if a["use_weights"] else None) if p == "ops" else
                         M.robust_consistency(a["params"], a["offsets"], None if a["use_weights"] else num(a["sigma"]),
                                              a["weights"] if a["use_weights"] else None)[0]),
        lambda a: ref.robust_consistency(a["params"], a["offsets"], a["sigma"], a["weights"] if a["use_weights"] else None)),
    "irls_consensus": (lambda f, a, p: f.irls_consensus(a["weights"], a["params"], a["offsets"]),
                       lambda a: ref.irls_consensus(a["weights"], a["params"], a["offsets"])),
    "pairwise_mix": (lambda f, a, p: f.pairwise_mix(a["params"], a["offsets"], a["coeffs"], a["transpose"]),
                     lambda a: ref.pairwise_mix(a["params"], a["offsets"], a["coeffs"], a["transpose"])),
    "layer_pair_sq_dists": (lambda f, a, p: ops.layer_pair_sq_dists(a["sq_dists"]),
                            lambda a: ref.layer_pair_sq_dists(a["sq_dists"])),
    "layer_weights": (lambda f, a, p: ops.layer_weights(a["weights"]), lambda a: ref.layer_weights(a["weights"])),
}


def _irls_spec(name):
    call_fn, reference = _IRLS[name]
    inv = {}
    if name not in ("irls_weights", "layer_pair_sq_dists", "layer_weights"):
        inv.update({
            "params 1-D": (lambda a: {**a, "params": a["params"].reshape(-1)}, "params"),
            "params integer": (lambda a: {**a, "params": a["params"].long()}, "params"),
            "offsets float": (lambda a: {**a, "offsets": [0, 0.5] + a["offsets"][1:]}, "offsets"),
            "offsets bool": (lambda a: {**a, "offsets": torch.tensor([False, True])}, "offsets"),
            "offsets short of P": (lambda a: {**a, "offsets": a["offsets"][:-1] + [a["offsets"][-1] + 1]}, "offsets"),
            "an empty layer": (lambda a: {**a, "offsets": [0, 0] + a["offsets"][1:]}, "layer 0 is empty"),
        })
    if name in ("irls_weights", "robust_consistency"):
        inv["sigma negative"] = (lambda a: {**a, "sigma": -1.0, "use_weights": False}, "sigma")
        inv["sigma per pair, wrong length"] = (lambda a: {**a, "sigma": torch.ones(9, dtype=F64), "use_weights": False},
                                               "sigma")
        inv["sigma on meta"] = (lambda a: {**a, "sigma": torch.ones(a["weights"].shape[0], device="meta"),
                                           "use_weights": False}, "sigma")
    if name == "irls_weights":
        inv["sq_dists negative"] = (lambda a: {**a, "sq_dists": a["sq_dists"] - 1}, "sq_dists")
        inv["sq_dists not square"] = (lambda a: {**a, "sq_dists": torch.ones(1, 2, 3, dtype=F64)}, "sq_dists")
    if name in ("irls_consensus", "robust_consistency"):
        inv["weights negative"] = (lambda a: {**a, "weights": -1 - a["weights"], "use_weights": True}, "weights")
        inv["weights NaN"] = (lambda a: {**a, "weights": a["weights"] * float("nan"), "use_weights": True}, "weights")
        inv["weights shape"] = (lambda a: {**a, "weights": a["weights"][:, :, :0], "use_weights": True}, "weights")
    if name == "pairwise_mix":
        inv["coeffs shape"] = (lambda a: {**a, "coeffs": a["coeffs"][..., :0]}, "coeffs")
    if name in ("layer_pair_sq_dists", "layer_weights"):
        key = "sq_dists" if name == "layer_pair_sq_dists" else "weights"
        inv[f"{key} 2-D"] = (lambda a: {**a, key: torch.ones(2, 2, dtype=F64)}, "sq_dists" if key == "sq_dists" else "pair_weights")
    return Spec(name, _irls_args, lambda p, a, copy=True: call_fn(ops if p == "ops" else M, a, p), reference, inv, tol=1e-11)


def _sigma_init_args(data):
    a = _irls_args(data)
    if a["params"].shape[0] < 2:
        a["params"] = torch.cat([a["params"], a["params"] + 1])
        a["sq_dists"] = ref.pairwise_sq_dists(a["params"], a["offsets"])
    return a


_SIGMA_INIT = Spec("sigma_init", _sigma_init_args, lambda p, a, copy=True: ops.sigma_init(a["sq_dists"]),
                   lambda a: ref.sigma_init(a["sq_dists"]), {
                       "sq_dists integer": (lambda a: {**a, "sq_dists": a["sq_dists"].long()}, "sq_dists"),
                       "sq_dists negative": (lambda a: {**a, "sq_dists": a["sq_dists"] - 1}, "sq_dists")}, tol=1e-11)


# ---- AMTFL and DWA ------------------------------------------------------------------------


def _amtfl_args(data):
    N, k, T = (data.draw(st.integers(0, 6), label="N"), data.draw(st.integers(1, 5), label="k"),
               data.draw(st.integers(1, 4), label="T"))
    return {"Z": layout(data, values(data, (N, k))), "W": values(data, (k, T)), "A": layout(data, values(data, (T, k))),
            "bias": values(data, (k,)) if data.draw(st.booleans(), label="bias") else None}


def _amtfl_call(path, a, copy=True):
    if path == "ops":
        return ops.amtfl_reconstruction_loss(a["Z"], a["W"], a["A"], a["bias"])
    return M.amtfl_reconstruction(a["Z"], a["W"], a["A"], a["bias"], False, False, False, False)[0]


_AMTFL = Spec("amtfl_reconstruction_loss", _amtfl_args, _amtfl_call,
              lambda a: ref.amtfl_reconstruction_loss(a["Z"], a["W"], a["A"], a["bias"]), {
                  "Z 1-D": (lambda a: {**a, "Z": a["Z"].reshape(-1)}, "Z"),
                  "W shape": (lambda a: {**a, "W": a["W"].t()} if a["W"].shape[0] != a["W"].shape[1] else None, "W"),
                  "A shape": (lambda a: {**a, "A": a["A"][:, :0]}, "A"),
                  "W dtype": (lambda a: {**a, "W": a["W"].float()}, "W"),
                  "bias shape": (lambda a: {**a, "bias": torch.ones(a["Z"].shape[1] + 1, dtype=F64)}, "bias"),
              }, tol=1e-10)


def _dwa_args(data):
    shapes = data.draw(st.lists(st.sampled_from([(0,), (1,), (5,), (2, 3)]), min_size=1, max_size=3), label="shapes")
    return {"params": [values(data, s) for s in shapes], "anchors": [values(data, s) for s in shapes],
            "importance": [values(data, s, positive=True) for s in shapes], "grads": [values(data, s) for s in shapes],
            "lam": data.draw(st.sampled_from([0.0, 0.5, 3.0]), label="lam")}


def _dwa_call(name):
    def call(path, a, copy=True):
        p, an, f, lam = a["params"], a["anchors"], a["importance"], a["lam"]
        if name == "dwa_penalty":
            return ops.dwa_penalty(p, an, f, lam) if path == "ops" else M.dwa_penalty(p, an, f, lam, True)
        grads = [g.clone() for g in a["grads"]] if copy else a["grads"]
        (ops.dwa_grad_(grads, p, an, f, lam) if path == "ops" else M.dwa_grad_(grads, p, an, f, lam, True))
        return grads
    return call


def _dwa_spec(name):
    def reference(a):
        if name == "dwa_penalty":
            return ref.dwa_penalty(a["params"], a["anchors"], a["importance"], a["lam"])
        return [g + d for g, d in zip(a["grads"], ref.dwa_grad(a["params"], a["anchors"], a["importance"], a["lam"]))]

    inv = {
        "anchors one short": (lambda a: {**a, "anchors": a["anchors"][:-1]}, "anchors"),
        "importance shape": (lambda a: {**a, "importance": [torch.ones(7, dtype=F64)] + a["importance"][1:]}, "importance"),
        "importance negative": (lambda a: {**a, "importance": [-1 - f for f in a["importance"]]}
                                if any(f.numel() for f in a["importance"]) else None, "importance"),
        "lam negative": (lambda a: {**a, "lam": -1.0}, "lam"),
        "lam overflowing float32": (lambda a: {k: [t.float() for t in v] if isinstance(v, list) else v
                                               for k, v in {**a, "lam": 1e39}.items()}, "lam"),
        "params integer": (lambda a: {**a, "params": [p.long() for p in a["params"]]}, "params"),
        "anchors dtype": (lambda a: {**a, "anchors": [x.float() for x in a["anchors"]]}, "anchors"),
    }
    if name == "dwa_grad_":
        inv["grads shape"] = (lambda a: {**a, "grads": [torch.ones(7, dtype=F64)] + a["grads"][1:]}, "grads")
    return Spec(name, _dwa_args, _dwa_call(name), reference, inv, inplace=name == "dwa_grad_", tol=1e-11)


SPECS_MORE = (
    [_spectral_spec(n) for n in ("svt", "nuclear_norm", "smoothed_nuclear_norm", "smoothed_nuclear_norm_grad",
                                 "spectral_route")]
    + [_irls_spec(n) for n in _IRLS] + [_SIGMA_INIT, _AMTFL, _dwa_spec("dwa_penalty"), _dwa_spec("dwa_grad_")]
)
