"""The registry: helpful unknown names, duplicate names, --plugin files/modules, entry points, the CLI's errors."""

from __future__ import annotations

import importlib
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest
import torch

import gradbench
from gradbench.cli import main
from gradbench.errors import UnknownNameError, UsageError
from gradbench.registry import BUILTIN_ESTIMATORS, ESTIMATORS, Registry

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"

PLUGIN = '''
from dataclasses import dataclass

import torch

import gradbench


@dataclass(frozen=True)
class {cls}Config:
    scale: float = 1.0


@gradbench.register_estimator({name!r})
class {cls}(gradbench.Estimator):
    supports = frozenset({{"bernoulli"}})
    unbiased = {unbiased}
    Config = {cls}Config

    def forward(self, logits, cost_fn):
        p = torch.sigmoid(logits)
        b = torch.bernoulli(p.detach())
        y = b + p - p.detach()  # straight-through: biased
        cost = cost_fn(y)
        return gradbench.EstimatorOutput(sample=b, cost=cost.detach(), loss=cost.mean(),
                                         aux_loss=self.zero(logits), diagnostics={{"cost_evals": 1}})
'''


def write_plugin(folder: Path, name: str, cls: str, *, unbiased: bool = False, extra: str = "",
                 filename: str | None = None) -> Path:
    path = folder / (filename or f"{name}.py")
    path.write_text(PLUGIN.format(name=name, cls=cls, unbiased=unbiased) + textwrap.dedent(extra))
    return path


# ---------------------------------------------------------------- names


def test_unknown_name_suggests_and_lists():
    with pytest.raises(UnknownNameError) as info:
        ESTIMATORS.get("dabb")
    assert isinstance(info.value, UsageError)
    msg = str(info.value)
    assert "did you mean 'dab'?" in msg
    for name in BUILTIN_ESTIMATORS:
        assert name in msg.split("known estimators:")[1]
    assert "--plugin" in msg
    assert "\n" not in msg


def test_did_you_mean_ignores_case():
    with pytest.raises(UnknownNameError, match="did you mean 'dab'"):
        ESTIMATORS.get("DAB")


def test_unknown_name_without_close_match_has_no_suggestion():
    with pytest.raises(UnknownNameError) as info:
        gradbench.create_estimator("zzzzqqq", gradbench.Node("bernoulli", (3,)))
    assert "did you mean" not in str(info.value)
    assert "gumbel" in str(info.value)


def test_taken_builtin_name_with_another_class_is_refused():
    class Impostor:
        pass

    with pytest.raises(UsageError, match="'dab'"):
        gradbench.register_estimator("dab")(Impostor)
    real = ESTIMATORS.get("dab")  # still the built-in, and loadable
    assert real.__module__ == "gradbench.estimators.dab"
    gradbench.register_estimator("dab")(real)  # the same class again is fine
    assert ESTIMATORS.get("dab") is real
    with pytest.raises(UsageError, match="'dab'"):  # and refused once loaded too
        gradbench.register_estimator("dab")(Impostor)
    assert ESTIMATORS.get("dab") is real


def test_taken_builtin_name_refused_before_and_after_load():
    reg = Registry("estimator", "gradbench.no_such_group", {"ste": "gradbench.estimators.ste:StraightThrough"})

    class Impostor:
        pass

    with pytest.raises(UsageError, match="already taken"):  # lazy entry, not imported yet
        reg.register("ste", Impostor, "test")
    cls = reg.get("ste")
    assert cls.__name__ == "StraightThrough"
    with pytest.raises(UsageError, match="already registered"):
        reg.register("ste", Impostor, "test")
    reg.register("ste", cls, "test")
    assert reg.get("ste") is cls


def test_taken_plugin_name_with_another_class_is_refused():
    class First:
        pass

    class Second:
        pass

    gradbench.register_estimator("tmp_taken_name")(First)
    gradbench.register_estimator("tmp_taken_name")(First)
    with pytest.raises(UsageError, match="tmp_taken_name"):
        gradbench.register_estimator("tmp_taken_name")(Second)
    assert ESTIMATORS.get("tmp_taken_name") is First


# ---------------------------------------------------------------- --plugin FILE.py | module


def test_load_plugin_file_registers_estimator(tmp_path):
    path = write_plugin(tmp_path, "tmp_plugin_est", "TmpPluginEst")
    assert "tmp_plugin_est" not in gradbench.list_estimators()
    gradbench.load_plugin(str(path))
    assert "tmp_plugin_est" in gradbench.list_estimators()
    est = gradbench.create_estimator("tmp_plugin_est", gradbench.Node("bernoulli", (3,)), scale="2")
    assert type(est).__name__ == "TmpPluginEst"
    assert est.config.scale == 2.0
    assert est.name == "tmp_plugin_est"
    out = est(torch.zeros(5, 3), lambda y: y.sum(-1))
    assert tuple(out.sample.shape) == (5, 3)
    assert "plugin" in next(e.origin for e in ESTIMATORS.entries() if e.name == "tmp_plugin_est")


def test_load_plugin_twice_is_a_no_op(tmp_path):
    counter = tmp_path / "imports.txt"
    path = write_plugin(tmp_path, "tmp_plugin_twice", "TmpPluginTwice",
                        extra=f"\nwith open({str(counter)!r}, 'a') as fh:\n    fh.write('x')\n")
    gradbench.load_plugin(str(path))
    cls = ESTIMATORS.get("tmp_plugin_twice")
    gradbench.load_plugin(str(path))
    (tmp_path / "sub").mkdir()
    gradbench.load_plugin(str(tmp_path / "sub" / ".." / path.name))  # another spelling of the same file
    assert counter.read_text() == "x"
    assert ESTIMATORS.get("tmp_plugin_twice") is cls


def test_plugin_file_that_raises_names_the_file(tmp_path):
    path = tmp_path / "broken_plugin.py"
    path.write_text("import gradbench\nraise RuntimeError('boom at import')\n")
    with pytest.raises(UsageError) as info:
        gradbench.load_plugin(str(path))
    msg = str(info.value)
    assert str(path) in msg and "boom at import" in msg and "RuntimeError" in msg
    names = gradbench.list_estimators()
    assert set(BUILTIN_ESTIMATORS) <= set(names)
    assert ESTIMATORS.get("gumbel").__name__ == "GumbelSoftmax"


def test_plugin_file_with_syntax_error(tmp_path):
    path = tmp_path / "bad_syntax.py"
    path.write_text("def (:\n")
    with pytest.raises(UsageError, match="bad_syntax.py"):
        gradbench.load_plugin(str(path))


def test_missing_plugin_file(tmp_path):
    missing = tmp_path / "nope.py"
    with pytest.raises(UsageError, match="not found") as info:
        gradbench.load_plugin(str(missing))
    assert str(missing) in str(info.value)


def test_missing_plugin_module():
    with pytest.raises(UsageError, match="gbplug_no_such_module_xyz"):
        gradbench.load_plugin("gbplug_no_such_module_xyz")


def test_plugin_module_by_name(tmp_path, monkeypatch):
    mod = f"gbplug_mod_{uuid.uuid4().hex[:8]}"
    write_plugin(tmp_path, "tmp_plugin_module_est", "TmpPluginModuleEst", filename=f"{mod}.py")
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()
    gradbench.load_plugin(mod)
    assert ESTIMATORS.get("tmp_plugin_module_est").__module__ == mod


def test_plugin_module_that_raises_is_a_usage_error(tmp_path, monkeypatch):
    mod = f"gbplug_raises_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{mod}.py").write_text("raise RuntimeError('boom in module')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()
    with pytest.raises(UsageError) as info:
        gradbench.load_plugin(mod)
    assert mod in str(info.value) and "boom in module" in str(info.value)
    assert set(BUILTIN_ESTIMATORS) <= set(gradbench.list_estimators())


# ---------------------------------------------------------------- entry points (a real dist-info on sys.path)

GOOD_MODULE = '''
import gradbench


class GoodEstimator(gradbench.Estimator):
    supports = frozenset({"bernoulli"})
'''


def make_distribution(folder: Path) -> str:
    mod = f"gbplug_{uuid.uuid4().hex[:10]}"
    (folder / f"{mod}.py").write_text(GOOD_MODULE)
    info = folder / "gbplug_dist-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: gbplug-dist\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(
        f"[gradbench.estimators]\ngood_ep = {mod}:GoodEstimator\nbroken_ep = gbplug_missing_module:Nope\n")
    return mod


@pytest.fixture
def distribution(tmp_path, monkeypatch):
    monkeypatch.delenv("GRADBENCH_DISABLE_PLUGIN_AUTOLOAD", raising=False)
    mod = make_distribution(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()
    yield mod
    sys.modules.pop(mod, None)


def test_entry_points_listed_lazily_and_loaded_by_name(distribution):
    mod = distribution
    reg = Registry("estimator", "gradbench.estimators", {})
    assert reg.names() == ["broken_ep", "good_ep"]
    assert mod not in sys.modules  # listing imports nothing
    origins = {e.name: e.origin for e in reg.entries()}
    assert "gbplug-dist" in origins["good_ep"] and "0.1" in origins["good_ep"]

    with pytest.raises(UsageError) as info:
        reg.get("broken_ep")
    msg = str(info.value)
    assert "gbplug-dist" in msg and "gbplug_missing_module:Nope" in msg and "broken_ep" in msg
    assert "\n" not in msg

    assert reg.names() == ["broken_ep", "good_ep"]  # a broken plugin takes nothing else down
    cls = reg.get("good_ep")
    assert mod in sys.modules
    assert cls is sys.modules[mod].GoodEstimator
    assert cls.name == "good_ep"  # answers to its entry-point name, like a decorated class
    assert reg.get("good_ep") is cls
    with pytest.raises(UsageError, match="gbplug-dist"):  # still broken, still a clear error
        reg.get("broken_ep")


def test_entry_point_unknown_name_suggests(distribution):
    reg = Registry("estimator", "gradbench.estimators", {})
    with pytest.raises(UnknownNameError, match="did you mean 'good_ep'"):
        reg.get("god_ep")


def test_disable_autoload_env(distribution, monkeypatch):
    monkeypatch.setenv("GRADBENCH_DISABLE_PLUGIN_AUTOLOAD", "1")
    reg = Registry("estimator", "gradbench.estimators", {"ste": "gradbench.estimators.ste:StraightThrough"})
    assert reg.names() == ["ste"]
    with pytest.raises(UnknownNameError):
        reg.get("good_ep")
    monkeypatch.delenv("GRADBENCH_DISABLE_PLUGIN_AUTOLOAD")
    assert "good_ep" in Registry("estimator", "gradbench.estimators", {}).names()  # the control


# ---------------------------------------------------------------- the CLI


def test_list_does_not_import_torch(tmp_path):
    code = "import sys; from gradbench.cli import main; main(['list']); print('torch' in sys.modules)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert "dab" in lines[0]
    assert lines[-1] == "False"


@pytest.mark.parametrize(("argv", "needles"), [
    (["run", "--estimator", "dabb"], ["did you mean 'dab'", "known estimators:"]),
    (["validate", "--estimator", "nope"], ["'nope'", "known estimators:", "dab"]),
    (["run", "--plugin", "/nonexistent.py"], ["/nonexistent.py"]),
    (["run", "--estimator", "gumbel:tua=1"], ["'tua'", "tau"]),
    (["run", "--estimator"], ["--estimator"]),
])
def test_cli_usage_errors_are_one_line(argv, needles, capsys):
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("gradbench: error: ")
    for needle in needles:
        assert needle in lines[0]


def test_cli_validate_plugin_example(capsys):
    rc = main(["validate", "--estimator", "my-disarm", "--plugin", str(EXAMPLES / "disarm.py")])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "8/8 checks passed" in out
    assert "FAIL" not in out


def test_cli_validate_catches_a_false_unbiased_claim(tmp_path, capsys):
    path = write_plugin(tmp_path, "tmp_biased_st", "TmpBiasedST", unbiased=True)
    rc = main(["validate", "--estimator", "tmp_biased_st", "--plugin", str(path)])
    out = capsys.readouterr().out
    assert rc == 1, out
    failed = [line for line in out.splitlines() if line.startswith("FAIL")]
    assert len(failed) == 1, out  # everything else about it conforms
    assert failed[0].split()[1] == "unbiased"
    assert "7/8 checks passed" in out
