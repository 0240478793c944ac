"""Op specifications and input strategies of the property-based fuzz test (test_fuzz.py).

Every public op is a :class:`Spec`: how to draw valid arguments (a dict of the
wrapper's arguments), how to call it through ``mtlkernels.ops`` and through
``torch.ops.mtlkernels`` (numbers become 0-dim CPU float64 tensors, as the wrappers pass
them), its float64 reference, and the ways to make one argument invalid, each with the
name that the error message must contain.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
from hypothesis import strategies as st

from mtlkernels import ops
from mtlkernels import reference as ref

M = torch.ops.mtlkernels
F64 = torch.float64
#: The message of an error about x names it as the subject (x is also named in others' messages).
X = r"\bx (must|is|has)|elements of x"
SPECIALS = [0.0, -0.0, float("inf"), -float("inf"), float("nan"), 1e300, -1e300, 1e-310, -5e-324]


# ---- tensors ---------------------------------------------------------------------------


def values(data, shape, *, specials=False, positive=False, scale=None) -> torch.Tensor:
    """A float64 tensor of the shape: normals at a drawn scale (seeded generator: cheap for
    hypothesis), with, if ``specials``, some entries replaced by inf / NaN / huge / denormals."""
    seed = data.draw(st.integers(0, 2**31 - 1), label="seed")
    if scale is None:
        scale = data.draw(st.sampled_from([1e-3, 1.0, 1.0, 1e3]), label="scale")
    gen = torch.Generator().manual_seed(seed)
    t = torch.randn(shape, generator=gen, dtype=F64) * scale
    if positive:
        t = t.abs()
    if specials and t.numel() and data.draw(st.booleans(), label="specials"):
        k = data.draw(st.integers(1, min(4, t.numel())), label="n_specials")
        pool = [v for v in SPECIALS if not (positive and (v < 0 or v != v))]
        idx = torch.randint(0, t.numel(), (k,), generator=gen)
        t.view(-1)[idx] = torch.tensor([pool[int(i) % len(pool)] for i in torch.randint(0, 99, (k,), generator=gen)],
                                       dtype=F64)
    return t


def layout(data, t: torch.Tensor) -> torch.Tensor:
    """t as it is, non-contiguous (every other element of a wider buffer), or transposed."""
    kind = data.draw(st.sampled_from(["contiguous", "strided", "transposed"]), label="layout")
    if kind == "strided" and t.dim() >= 1:
        buf = torch.zeros(*t.shape[:-1], 2 * t.shape[-1], dtype=t.dtype)
        buf[..., ::2] = t
        return buf[..., ::2]
    if kind == "transposed" and t.dim() >= 2:
        return t.transpose(-1, -2).contiguous().transpose(-1, -2)
    return t


def copy_layout(t: torch.Tensor) -> torch.Tensor:
    """A private copy of t with t's strides (non-contiguous stays non-contiguous)."""
    if t.is_contiguous() or t.dim() == 0:
        return t.clone()
    buf = torch.zeros(*t.shape[:-1], 2 * t.shape[-1], dtype=t.dtype)
    out = buf[..., ::2]
    out.copy_(t)
    return out


def num(v):
    """A wrapper's number as the raw op takes it."""
    return torch.tensor(float(v), dtype=F64) if isinstance(v, (int, float)) else v


# ---- specs -----------------------------------------------------------------------------


@dataclass
class Spec:
    name: str
    draw: Callable  # data -> dict of the wrapper's arguments
    call: Callable  # (path, args) -> result; path "ops" or "raw"
    reference: Callable  # args -> float64 result
    invalid: dict = field(default_factory=dict)  # name -> (args -> args, message pattern, raw too?)
    inplace: bool = False
    tol: float = 1e-12


def _threshold(data, x):
    kind = data.draw(st.sampled_from(["number", "zero", "scalar", "row", "col", "matrix", "full"]), label="threshold")
    if kind == "number":
        return data.draw(st.sampled_from([0.1, 0.5, 2.0, 1e3]), label="tau")
    if kind == "zero":
        return 0.0
    shape = {"scalar": (), "row": x.shape[-1:], "col": (x.shape[-2], 1) if x.dim() >= 2 else (),
             "matrix": (x.shape[0], 1, 1) if x.dim() >= 3 else (), "full": x.shape}[kind]
    return values(data, shape, positive=True)


def _matrix_shape(data, min_dim=0):
    return (data.draw(st.integers(min_dim, 7), label="m"), data.draw(st.integers(min_dim, 7), label="n"))


def _elementwise_args(data, step: bool, l2: bool):
    shape = data.draw(st.sampled_from([(0,), (1,), (5,), (3, 4), (2, 3, 5), (1, 1, 1)]), label="shape")
    x = layout(data, values(data, shape, specials=True))
    a = {"x": x, "tau": _threshold(data, x)}
    if step:
        a["grad"] = layout(data, values(data, shape, specials=True))
        a["lr"] = data.draw(st.sampled_from([1e-3, 0.1, 1.0, 3.0]), label="lr")
    if l2:
        a["l2"] = data.draw(st.sampled_from([0.0, 0.5, 10.0]), label="l2")
    return a


def _group_args(data, step: bool):
    m, n = _matrix_shape(data)
    x = layout(data, values(data, (m, n), specials=True))
    dim = data.draw(st.sampled_from([0, 1, -1]), label="dim")
    size = x.shape[dim]
    mode = data.draw(st.sampled_from(["none", "labels", "sparse labels", "per-group tau"]), label="groups")
    groups, tau = None, data.draw(st.sampled_from([0.0, 0.3, 1.0, 5.0]), label="tau")
    if mode != "none":
        G = data.draw(st.integers(1, 4), label="G")
        gen = torch.Generator().manual_seed(data.draw(st.integers(0, 1000), label="label seed"))
        groups = torch.randint(0, G, (size,), generator=gen)
        if mode == "sparse labels":
            groups = groups * data.draw(st.sampled_from([7, 10**6, 2**40]), label="spread")
        if mode == "per-group tau":
            tau = values(data, (G,), positive=True)
    elif data.draw(st.booleans(), label="tau per group"):
        tau = values(data, (x.shape[0] if dim % 2 == 1 else x.shape[1],), positive=True)
    a = {"x": x, "tau": tau, "dim": dim, "groups": groups, "l1": data.draw(st.sampled_from([0.0, 0.2]), label="l1")}
    if step:
        a["grad"] = layout(data, values(data, (m, n), specials=True))
        a["lr"] = data.draw(st.sampled_from([0.01, 0.5, 2.0]), label="lr")
    return a


def _group_ref(a, step):
    groups = a["groups"]
    if groups is not None and not isinstance(a["tau"], torch.Tensor):
        groups = torch.unique(groups, return_inverse=True)[1]  # the reference allocates max label + 1 groups
    if step:
        return ref.group_prox_grad_step(a["x"], a["grad"], a["lr"], a["tau"], a["dim"], groups, a["l1"])
    return ref.group_soft_threshold(a["x"], a["tau"], a["dim"], groups, a["l1"])


def _run(fn, a, args, inplace, copy):
    """fn(x, *args); in place on a private copy of x (same strides) unless ``copy=False``."""
    if not inplace:
        return fn(a["x"], *args)
    x = copy_layout(a["x"]) if copy else a["x"]
    fn(x, *args)
    return x


def _shrink_spec(name, step, l2, reference, inplace):
    thr = "l1" if name.startswith(("elastic", "prox")) else "tau"

    def call(path, a, copy=True):
        fn = getattr(ops if path == "ops" else M, name)
        head = (a["grad"], a["lr"]) if step else ()
        args = (*head, a["tau"] if path == "ops" else num(a["tau"]), *((a["l2"],) if l2 else ()))
        return _run(fn, a, args, inplace, copy)

    def expanded(a):
        return {**a, "x": a["x"].reshape(-1)[:1].expand(3)} if a["x"].numel() else None

    inv = {
        "x integer": (lambda a: {**a, "x": a["x"].to(torch.int64)}, X),
        "x complex": (lambda a: {**a, "x": a["x"].to(torch.complex128)}, X),
        f"{thr} negative": (lambda a: {**a, "tau": -0.5}, thr),
        f"{thr} NaN": (lambda a: {**a, "tau": float("nan")}, thr),
        f"{thr} tensor with a negative entry": (lambda a: {**a, "tau": -torch.ones(1, dtype=F64)}, thr),
        f"{thr} bool": (lambda a: {**a, "tau": torch.tensor(True)}, thr),
        f"{thr} not broadcastable": (lambda a: {**a, "tau": torch.ones(a["x"].shape[-1] + 2, dtype=F64)}, thr),
        f"{thr} on meta": (lambda a: {**a, "tau": torch.ones(a["x"].shape[-1:], dtype=F64, device="meta")}, thr),
        f"{thr} a string": (lambda a: {**a, "tau": "0.1"}, thr),
    }
    if inplace:
        inv["x expanded"] = (expanded, X)
    else:
        inv["x bfloat16 outside autocast"] = (lambda a: {**a, "x": a["x"].to(torch.bfloat16)}, X)
    if step:
        inv.update({
            "grad shape": (lambda a: {**a, "grad": torch.ones(a["x"].numel() + 1, dtype=F64)}, "grad"),
            "grad dtype": (lambda a: {**a, "grad": a["grad"].float()}, "grad"),
            "grad on meta": (lambda a: {**a, "grad": a["grad"].to("meta")}, "grad"),
            "lr zero": (lambda a: {**a, "lr": 0.0}, "lr"),
            "lr NaN": (lambda a: {**a, "lr": float("nan")}, "lr"),
            "lr overflowing float32": (lambda a: {**a, "x": a["x"].float(), "grad": a["grad"].float(), "lr": 1e39}, "lr"),
        })
    if l2:
        inv["l2 negative"] = (lambda a: {**a, "l2": -1.0}, "l2")
        inv["l2 inf"] = (lambda a: {**a, "l2": float("inf")}, "l2")
    return Spec(name, lambda d: _elementwise_args(d, step, l2), call, reference, inv, inplace)


def _group_spec(name, step, inplace):
    def call(path, a, copy=True):
        fn = getattr(ops if path == "ops" else M, name)
        head = (a["grad"], a["lr"]) if step else ()
        args = (*head, a["tau"] if path == "ops" else num(a["tau"]), a["dim"], a["groups"], a["l1"])
        return _run(fn, a, args, inplace, copy)

    def labels(a, v):
        n = a["x"].shape[a["dim"]]
        return {**a, "groups": torch.full((n,), v, dtype=torch.int64)} if n else None

    inv = {
        "x 1-D": (lambda a: {**a, "x": a["x"].reshape(-1)}, X),
        "x integer": (lambda a: {**a, "x": a["x"].to(torch.int32)}, X),
        "dim 2": (lambda a: {**a, "dim": 2}, "dim"),
        "groups float": (lambda a: {**a, "groups": torch.zeros(a["x"].shape[a["dim"]])}, "groups"),
        "groups 2-D": (lambda a: {**a, "groups": torch.zeros(1, a["x"].shape[a["dim"]], dtype=torch.int64)}, "groups"),
        "groups too many": (lambda a: {**a, "groups": torch.zeros(a["x"].shape[a["dim"]] + 1, dtype=torch.int64)}, "groups"),
        "groups on meta": (lambda a: {**a, "groups": torch.zeros(a["x"].shape[a["dim"]], dtype=torch.int64, device="meta")},
                           "groups"),
        "a negative label": (lambda a: labels(a, -1), "group label"),
        "a label beyond tau": (lambda a: labels(a, 3) and {**labels(a, 3), "tau": torch.ones(2, dtype=F64)},
                               "group label"),
        "tau 2-D": (lambda a: {**a, "tau": torch.ones(1, 1, dtype=F64)}, "tau"),
        "tau negative": (lambda a: {**a, "tau": -1.0}, "tau"),
        "tau count": (lambda a: {**a, "groups": None, "tau": torch.ones(a["x"].shape[0] + a["x"].shape[1] + 2, dtype=F64)},
                      "tau"),
        "l1 negative": (lambda a: {**a, "l1": -0.1}, "l1"),
    }
    if step:
        inv["lr negative"] = (lambda a: {**a, "lr": -1.0}, "lr")
        inv["grad transposed shape"] = (lambda a: {**a, "grad": torch.ones(a["x"].shape[1] + 1, a["x"].shape[0])}, "grad")
    return Spec(name, lambda d: _group_args(d, step), call, lambda a: _group_ref(a, step), inv, inplace, tol=1e-10)


SPECS = [
    _shrink_spec("soft_threshold", False, False, lambda a: ref.soft_threshold(a["x"], a["tau"]), False),
    _shrink_spec("soft_threshold_", False, False, lambda a: ref.soft_threshold(a["x"], a["tau"]), True),
    _shrink_spec("elastic_net_prox", False, True, lambda a: ref.elastic_net_prox(a["x"], a["tau"], a["l2"]), False),
    _shrink_spec("elastic_net_prox_", False, True, lambda a: ref.elastic_net_prox(a["x"], a["tau"], a["l2"]), True),
    _shrink_spec("prox_grad_step", True, True,
                 lambda a: ref.prox_grad_step(a["x"], a["grad"], a["lr"], a["tau"], a["l2"]), False),
    _shrink_spec("prox_grad_step_", True, True,
                 lambda a: ref.prox_grad_step(a["x"], a["grad"], a["lr"], a["tau"], a["l2"]), True),
    _group_spec("group_soft_threshold", False, False),
    _group_spec("group_soft_threshold_", False, True),
    _group_spec("group_prox_grad_step", True, False),
    _group_spec("group_prox_grad_step_", True, True),
]
