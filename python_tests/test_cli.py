"""The command line (python -m mtlkernels): --version, options after the command, one JSON
per method written before its plots, plots optional without matplotlib, clear errors for an
unwritable --out and an unusable --device; figures that leave the caller's backend alone."""

import json

import numpy as np
import pytest

from mtlkernels import demo, plots
from mtlkernels.__main__ import _parser, main
from mtlkernels.experiments.registry import ALIASES, EXPERIMENTS


def test_version(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.startswith("mtlkernels ")


def test_options_after_the_command():
    p = _parser(EXPERIMENTS, ALIASES)
    a = p.parse_args(["run", "amtfl", "-v", "--device", "cpu", "--threads", "2"])
    assert a.verbose and a.device == "cpu" and a.threads == 2 and a.method == "amtfl"
    assert p.parse_args(["-v", "demo"]).verbose and not p.parse_args(["demo"]).verbose


def test_unwritable_out_and_bad_device_are_clear_errors(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(SystemExit) as e:
        main(["run", "linear-synthetic", "--out", str(blocker / "sub")])
    assert e.value.code == 2 and "--out" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["run", "linear-synthetic", "--device", "nonsense0"])
    err = capsys.readouterr().err
    assert "--device 'nonsense0'" in err and "available: cpu" in err


def _fake_experiment(out_dir_seen):
    def run(seeds=(0,), quick=False, out_dir=None, log=print):
        def make(values):
            # drawn after the JSON: the numbers are on disk before any plot starts
            out_dir_seen.append((out_dir / "fake.json").exists())
            fig = plots._figure()
            fig.subplots().plot(values)
            return fig

        figures = plots.figure(out_dir / "fake.png", make, [1.0, 2.0])
        return {"title": "fake", "columns": ["a"], "rows": [[1]], "plots": figures, "raw": {}}
    return run


@pytest.mark.parametrize("with_matplotlib", [True, False])
def test_one_json_per_method_before_plots(tmp_path, monkeypatch, capsys, with_matplotlib):
    seen = []
    monkeypatch.setitem(EXPERIMENTS, "fake", ("unused", "unused", "a fake experiment"))
    monkeypatch.setattr(demo, "get", lambda name: _fake_experiment(seen))
    if not with_matplotlib:
        monkeypatch.setattr(plots, "have_matplotlib", lambda: False)
    demo.main(out=str(tmp_path), methods=["fake"])
    saved = json.loads((tmp_path / "fake.json").read_text())
    assert saved["result"]["rows"] == [[1]]
    assert not (tmp_path / "results.json").exists()  # `run METHOD` writes its own JSON only
    if with_matplotlib:
        assert seen == [True] and (tmp_path / "fake.png").exists()
    else:
        assert seen == [] and not (tmp_path / "fake.png").exists()
        assert "matplotlib is not installed" in capsys.readouterr().out


def test_figures_leave_the_backend_alone():
    matplotlib = pytest.importorskip("matplotlib")
    from matplotlib.figure import Figure

    before = matplotlib.get_backend()
    fig = plots.similarity_figure({"a": np.eye(3), "b": np.ones((3, 3))})
    assert isinstance(fig, Figure) and matplotlib.get_backend() == before
