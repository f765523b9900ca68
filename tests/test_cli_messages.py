"""Rough edges a new user hit (issue 26, items 7 and 8): each is one line on stderr that says what to do,
exit 2 for a usage error; and ``--config FILE.toml`` for run, sweep and tune."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import registry_snapshot

from gradbench.cli import main

TOY = ["-t", "toy", "--steps", "20", "--eval-every", "10", "--no-progress", "--no-grad-stats", "--device", "cpu"]


def _error(capsys) -> str:
    """The one line a usage error prints (asserting that it is one line)."""
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("gradbench: error: "), err
    return err


def _run_id(capsys) -> str:
    return json.loads(capsys.readouterr().out)["run_id"]


# ------------------------------------------------------------------------------------- item 8


def test_settings_without_a_colon_suggest_one(tmp_path, capsys):
    assert main(["sweep", "--tasks", "toy", "--estimators", "ste,gumbel,tau=0.5", "--runs", str(tmp_path)]) == 2
    err = _error(capsys)
    assert "did you mean 'gumbel:tau=0.5'?" in err and "did you mean 'gumbel'?" not in err
    assert main(["run", *TOY, "-e", "gumbel,tau=0.5,hard=true", "--runs", str(tmp_path)]) == 2
    assert "did you mean 'gumbel:tau=0.5,hard=true'?" in _error(capsys)


def test_a_reversed_seed_range_is_named(tmp_path, capsys):
    assert main(["run", *TOY, "-e", "ste", "--seeds", "5-1", "--runs", str(tmp_path)]) == 2
    err = _error(capsys)
    assert "the range 5-1 is reversed; write 1-5" in err and "non-negative" not in err


def test_a_plugin_folder_says_what_is_expected(tmp_path, capsys):
    (tmp_path / "mine.py").write_text("")
    assert main(["list", "--plugin", str(tmp_path)]) == 2
    err = _error(capsys)
    assert "is a folder" in err and "a .py file" in err and "mine.py" in err and "No module named" not in err


def test_runs_that_is_a_file_is_named(tmp_path, capsys):
    blocker = tmp_path / "runs"
    blocker.write_text("x")
    assert main(["run", *TOY, "-e", "ste", "--runs", str(blocker)]) == 2
    err = _error(capsys)
    assert "it is a file" in err and "File exists" not in err


def test_a_grad_checkpoint_outside_0_1_is_named(tmp_path, capsys):
    assert main(["run", "-t", "toy", "-e", "ste", "--grad-checkpoints", "0,1.5", "--runs", str(tmp_path)]) == 2
    err = _error(capsys)
    assert "--grad-checkpoints 1.5 is outside [0, 1]" in err and "(0.0, 1.5)" not in err


def test_an_evals_budget_below_one_step_is_refused(tmp_path, capsys):
    """relax evaluates the cost 3 times per step: --evals 2 cannot buy one step. A record claiming evals=2
    for a 3-evaluation run would be an unfair table entry, so the run is refused, and nothing is written."""
    assert main(["run", *TOY[:2], "-e", "relax", "--evals", "2", "--no-progress", "--no-grad-stats",
                 "--device", "cpu", "--runs", str(tmp_path)]) == 2
    err = _error(capsys)
    assert "--evals 2 is less than one step of 'relax'" in err and "give --evals 3 or more" in err
    assert not list(tmp_path.glob("*/*/*.json*"))


def test_leaderboard_and_plot_refuse_a_folder_without_records_alike(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["leaderboard", "--runs", str(empty)]) == 2
    assert "no run records in" in _error(capsys)
    assert not (empty / "leaderboard.md").exists()
    assert main(["plot", "--runs", str(empty)]) == 2
    assert "no run records in" in _error(capsys)
    for command in ("leaderboard", "plot"):
        assert main([command, "--runs", str(tmp_path / "nope")]) == 2
        assert "does not exist" in _error(capsys)


def test_compare_refuses_an_estimator_with_itself(tmp_path, capsys):
    assert main(["compare", "--task", "toy", "ste", "ste:variant=identity", "--runs", str(tmp_path)]) == 2
    err = _error(capsys)
    assert "'ste' and 'ste:variant=identity' are both 'ste'" in err
    assert main(["compare", "--task", "toy", "ste", "ste", "--runs", str(tmp_path)]) == 2
    assert "A and B are both 'ste'" in _error(capsys)


PLUGIN = """
import gradbench
from gradbench.registry import get_estimator_class


@gradbench.register_estimator("my-ste")
class MySte(get_estimator_class("ste")):
    pass
"""


def test_rerun_of_a_plugin_record_names_the_plugin(tmp_path, capsys):
    plugin = tmp_path / "my_plugin.py"
    plugin.write_text(PLUGIN)
    runs = tmp_path / "runs"
    with registry_snapshot():  # the plugin is loaded only inside this block
        assert main(["run", *TOY, "-e", "my-ste", "--plugin", str(plugin), "--runs", str(runs), "--json"]) == 0
        record = json.loads(capsys.readouterr().out)
    assert record["provenance"]["plugins"] == [str(plugin.resolve())]
    assert main(["rerun", record["run_id"], "--runs", str(runs), "--into", str(tmp_path / "re")]) == 2
    err = _error(capsys)
    assert f"estimator 'my-ste' from a plugin, which is not loaded: pass --plugin {plugin.resolve()}" in err
    assert "did you mean" not in err


def test_records_made_before_provenance_plugins_name_them_from_argv():
    from gradbench.spec import record_plugins

    old = {"provenance": {"argv": ["gradbench", "run", "--plugin", "a.py", "--plugin=mod", "-e", "x"]}}
    assert record_plugins(old) == ["a.py", "mod"]
    assert record_plugins({"provenance": {"argv": ["gradbench", "sweep"]}}) == []


def test_an_unknown_config_key_has_a_did_you_mean(tmp_path, capsys):
    assert main(["run", *TOY, "-e", "gumbel:taux=0.5", "--runs", str(tmp_path)]) == 2
    err = _error(capsys)
    assert "unknown config key 'taux'; did you mean 'tau'?" in err and "valid keys:" in err


def test_a_sweep_with_nothing_to_run_shows_no_bar(tmp_path, capsys):
    runs = str(tmp_path / "runs")
    assert main(["run", *TOY, "-e", "ste", "--runs", runs]) == 0
    capsys.readouterr()
    grid = ["sweep", "--tasks", "toy", "--estimators", "ste", "--steps", "20", "--eval-every", "10",
            "--no-grad-stats", "--device", "cpu", "--runs", runs]
    assert main(grid) == 0  # progress on: the one run is finished, so no "sweep: 0run" bar
    captured = capsys.readouterr()
    assert "1 already finished" in captured.out and "sweep:" not in captured.err


# ------------------------------------------------------------------------------------- item 7


def _write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "options.toml"
    path.write_text(text)
    return str(path)


def test_a_config_file_gives_the_same_run_as_its_flags(tmp_path, capsys):
    runs = str(tmp_path / "runs")
    config = _write(tmp_path, f"""
task = "toy"
estimator = "gumbel:tau=0.5"
steps = 20
eval-every = 10
no_grad_stats = true
no_progress = true
device = "cpu"
runs = {json.dumps(runs)}
""")
    assert main(["run", "--config", config, "--json"]) == 0
    from_file = _run_id(capsys)
    assert main(["run", *TOY, "-e", "gumbel:tau=0.5", "--runs", runs, "--json"]) == 0
    assert _run_id(capsys) == from_file
    assert main(["run", "--config", config, "--steps", "30", "--json"]) == 0  # a flag overrides the file
    out = json.loads(capsys.readouterr().out)
    assert out["budget"] == {"steps": 30} and out["estimator"]["config"]["tau"] == 0.5
    assert main(["run", "--config", config, "--evals", "30", "--json"]) == 0  # and replaces an excluded key
    assert json.loads(capsys.readouterr().out)["budget"] == {"evals": 30}


def test_a_config_file_fills_the_required_options_of_tune(tmp_path, capsys):
    config = _write(tmp_path, 'task = "toy"\nestimators = ["ste", "gumbel:tau=0.5,hard=true"]\n'
                              'grid = {lr = [1e-3, 3e-3]}\nseeds = [0, 1]\n')
    # toy has no validation metrics: tune gets as far as refusing the task, so the file filled --task,
    # --estimators and --grid (which argparse would otherwise demand)
    assert main(["tune", "--config", config, "--runs", str(tmp_path / "runs")]) == 2
    assert "validation" in _error(capsys)


@pytest.mark.parametrize("text,message", [
    ("stepz = 10", "unknown key 'stepz'; did you mean 'steps'?"),
    ("steps = 'many'", "steps must be an integer, got 'many'"),
    ("steps = 1.5", "steps must be an integer, got 1.5"),
    ("no_progress = 'yes'", "no_progress must be true or false, got 'yes'"),
    ("estimator = ['ste']", "estimator must be a string, got a list"),
    ("steps = 10\nevals = 10", "give one of steps, seconds, evals, not steps and evals"),
    ("task = ", "not valid TOML"),
])
def test_bad_config_files_are_one_line_and_exit_2(tmp_path, capsys, text, message):
    config = _write(tmp_path, text)
    assert main(["run", "--config", config, "--runs", str(tmp_path / "runs")]) == 2
    err = _error(capsys)
    assert message in err and config in err


def test_config_is_only_for_commands_that_train(tmp_path, capsys):
    config = _write(tmp_path, "steps = 10")
    assert main(["leaderboard", "--config", config]) == 2
    assert "unrecognized arguments: --config" in _error(capsys)
    assert main(["run", "--config", str(tmp_path / "missing.toml")]) == 2
    assert "no config file" in _error(capsys)
