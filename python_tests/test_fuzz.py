"""Property-based fuzz test of every op, through ``mtlkernels.ops`` and ``torch.ops.mtlkernels``.

Three properties, each over every op (the specifications are in _fuzz_cases.py and
_fuzz_cases_more.py), with hypothesis derandomized (a fixed sequence of examples, no
example database), 3,300 examples in all:

- valid inputs (float64: random shapes including empty and batches, non-contiguous and
  transposed layouts, inf / NaN / huge / denormal entries where the op defines them,
  labels that skip values up to 2^40) give the float64 reference's result on both paths;
- invalid inputs (one argument made wrong: dtype, device, shape, value, type) raise
  ValueError, TypeError or RuntimeError whose message names that argument, on both paths;
- in-place ops whose other arguments are views of x (thresholds, gradients), or, for
  dwa_grad_, a gradient listed twice or aliasing a parameter, equal the out-of-place
  result on private copies.

test_the_properties_can_fail checks that each property catches a planted fault.
"""

from __future__ import annotations

import re

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mtlkernels import ops
from mtlkernels import reference as ref

from _fuzz_cases import SPECS, copy_layout, values
from _fuzz_cases_more import SPECS_MORE

ALL = SPECS + SPECS_MORE
N_VALID, N_INVALID, N_ALIASED = 1500, 1200, 600
_SETTINGS = dict(derandomize=True, database=None, deadline=None, print_blob=False,
                 suppress_health_check=list(HealthCheck))
ERRORS = (ValueError, TypeError, RuntimeError)
COUNT = {"valid": 0, "invalid": 0, "aliased": 0}
SEEN = {"valid": set(), "invalid": set(), "aliased": set()}  # the ops each property reached


def _property(body, n):
    return settings(max_examples=n, **_SETTINGS)(given(st.data())(body))


def _close(out, expected, tol, what):
    if isinstance(expected, (list, tuple)):
        assert len(out) == len(expected), what
        for o, e in zip(out, expected):
            _close(o, e, tol, what)
        return
    assert out.shape == expected.shape and out.dtype == expected.dtype, what
    scale = expected.detach().abs().nan_to_num(posinf=0.0).amax().item() if expected.numel() else 0.0
    torch.testing.assert_close(out, expected, rtol=tol, atol=tol * scale + 1e-300, equal_nan=True, msg=what)


# ---- valid inputs match the reference -----------------------------------------------------------


def _valid(data, specs=ALL):
    spec = data.draw(st.sampled_from(specs), label="op")
    args = spec.draw(data)
    expected = spec.reference(args)
    outs = [spec.call(path, args) for path in ("ops", "raw")]
    for path, out in zip(("ops", "raw"), outs):
        what = f"{spec.name} via {path}"
        if expected is None:  # spectral_route: codes, the same on both paths
            assert out.dtype == torch.int64 and torch.equal(out, outs[0]) and bool(((out >= -1) & (out <= 3)).all()), what
        else:
            _close(out, expected, spec.tol, what)
    COUNT["valid"] += 1
    SEEN["valid"].add(spec.name)


def test_valid_inputs_match_the_float64_reference():
    COUNT["valid"] = 0
    SEEN["valid"].clear()
    _property(lambda data: _valid(data), N_VALID)()
    assert COUNT["valid"] >= N_VALID and SEEN["valid"] == {s.name for s in ALL}


# ---- invalid inputs raise, naming the argument ----------------------------------------------------


def _invalid(data, specs=ALL):
    spec = data.draw(st.sampled_from([s for s in specs if s.invalid]), label="op")
    name = data.draw(st.sampled_from(sorted(spec.invalid)), label="fault")
    mutate, pattern = spec.invalid[name]
    bad = mutate(spec.draw(data))
    if bad is None:  # the fault does not apply to this draw (an empty tensor, ...)
        return
    for path in ("ops", "raw"):
        with pytest.raises(ERRORS) as err:
            spec.call(path, bad, copy=False)
        regex = rf"\b{pattern}\b" if pattern.isidentifier() else pattern  # a bare name: as a word
        assert re.search(regex, str(err.value)), f"{spec.name} via {path}, {name}: {err.value!r}"
    COUNT["invalid"] += 1
    SEEN["invalid"].add(spec.name)


def test_invalid_inputs_raise_naming_the_argument():
    COUNT["invalid"] = 0
    SEEN["invalid"].clear()
    _property(lambda data: _invalid(data), N_INVALID)()
    assert COUNT["invalid"] >= N_INVALID * 0.9  # a few faults do not apply to empty draws
    assert SEEN["invalid"] == {s.name for s in ALL}


# ---- in-place ops with aliased arguments ----------------------------------------------------------

_INPLACE = {  # name: (out-of-place twin, builds the other arguments from x (x > 0 and finite))
    "soft_threshold_": (ops.soft_threshold, lambda d, x: (d.draw(st.sampled_from([x, x[:1], x[..., :1], x[0, 0]])),)),
    "elastic_net_prox_": (ops.elastic_net_prox, lambda d, x: (x[-1:], 0.5)),
    "prox_grad_step_": (ops.prox_grad_step, lambda d, x: (d.draw(st.sampled_from([x, x.flip(0).flip(0)])), 0.3,
                                                          d.draw(st.sampled_from([x[:1], 0.1])), 0.2)),
    "group_soft_threshold_": (ops.group_soft_threshold, lambda d, x: (x[:, 0], 1) if d.draw(st.booleans())
                              else (x[0], 0)),
    "group_prox_grad_step_": (ops.group_prox_grad_step, lambda d, x: (x, 0.2, x[:, -1], 1, None,
                                                                      d.draw(st.sampled_from([0.0, 0.1])))),
}


def _aliased(data, names=(*sorted(_INPLACE), "dwa_grad_")):
    name = data.draw(st.sampled_from(names), label="op")
    dtype = data.draw(st.sampled_from([torch.float32, torch.float64]), label="dtype")
    m, n = data.draw(st.integers(1, 6), label="m"), data.draw(st.integers(1, 6), label="n")
    if name == "dwa_grad_":
        p, f = values(data, (m, n)).to(dtype), values(data, (m, n), positive=True).to(dtype)
        g = values(data, (m, n)).to(dtype)
        if data.draw(st.booleans(), label="grad listed twice"):
            expected = g + 2 * ref.dwa_grad([p], [p * 0], [f], 0.5)[0]
            ops.dwa_grad_([g, g], [p, p], [p * 0, p * 0], [f, f], 0.5)
        else:  # the gradient is the parameter itself
            expected = g + ref.dwa_grad([g], [p], [f], 0.5)[0]
            ops.dwa_grad_([g], [g], [p], [f], 0.5)
        torch.testing.assert_close(g, expected, msg=name)
        COUNT["aliased"] += 1
        SEEN["aliased"].add(name)
        return
    x = (values(data, (m, n), positive=True) + 0.1).to(dtype)
    if data.draw(st.booleans(), label="strided x"):
        x = copy_layout(x.t()).t()
    twin, args_of = _INPLACE[name]
    args = args_of(data, x)
    expected = twin(x.clone(), *[a.clone() if isinstance(a, torch.Tensor) else a for a in args])
    getattr(ops, name)(x, *args)
    assert torch.equal(x, expected), name  # the same kernel on the same values: the same bits
    COUNT["aliased"] += 1
    SEEN["aliased"].add(name)


def test_inplace_ops_with_aliased_arguments_equal_out_of_place():
    COUNT["aliased"] = 0
    SEEN["aliased"].clear()
    _property(lambda data: _aliased(data), N_ALIASED)()
    assert COUNT["aliased"] >= N_ALIASED and SEEN["aliased"] == {*_INPLACE, "dwa_grad_"}


# ---- each property can fail ------------------------------------------------------------------------


def test_the_properties_can_fail(monkeypatch):
    """A planted fault makes each property fail (each run on the ops concerned): a
    slightly wrong result, a negative threshold accepted, an in-place op that reads its
    threshold after writing x."""
    spec = [s for s in ALL if s.name == "soft_threshold"]
    real = ops.soft_threshold
    monkeypatch.setattr(ops, "soft_threshold", lambda x, tau: real(x, tau) * (1 + 1e-9))
    with pytest.raises(AssertionError):
        _property(lambda data: _valid(data, spec), 100)()
    monkeypatch.setattr(ops, "soft_threshold", lambda x, tau: real(x, abs(tau) if isinstance(tau, float) else tau))
    with pytest.raises(BaseException, match="DID NOT RAISE"):
        _property(lambda data: _invalid(data, spec), 200)()
    monkeypatch.setattr(ops, "soft_threshold", real)

    def naive(x, tau):  # element by element: reads tau after writing the elements before it
        t = tau.expand_as(x) if isinstance(tau, torch.Tensor) else torch.full_like(x, tau)
        for i in torch.cartesian_prod(*[torch.arange(k) for k in x.shape]).reshape(-1, x.dim()).tolist():
            v, ti = x[tuple(i)].item(), t[tuple(i)].item()
            x[tuple(i)] = max(abs(v) - ti, 0.0) * (1 if v > 0 else -1)
        return x

    monkeypatch.setattr(ops, "soft_threshold_", naive)
    with pytest.raises(AssertionError):
        _property(lambda data: _aliased(data, ("soft_threshold_",)), 100)()
