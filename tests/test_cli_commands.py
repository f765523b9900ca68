"""The CLI's readable commands and rough edges: describe, show, --seeds tables, leaderboard output, the
unsupported-pair hint, --traceback, execution-path notes, step-0 evaluations, interrupted runs."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

import gradbench
from gradbench.cli import main
from gradbench.errors import UsageError
from gradbench.records import history_path, read_history

TOY = ["-t", "toy", "--steps", "20", "--eval-every", "10", "--no-progress", "--no-grad-stats", "--device", "cpu"]


def _run(tmp_path: Path, *extra: str) -> list[dict]:
    runs = tmp_path / "runs"
    assert main(["run", *TOY, "--runs", str(runs), "--json", *extra]) == 0
    return sorted(runs.glob("*/*/*.json"))


def test_describe_prints_each_key_with_type_default_and_meaning(capsys):
    assert main(["describe", "gumbel"]) == 0
    out = capsys.readouterr().out
    assert "supports: bernoulli, categorical" in out
    for key in ("tau", "hard", "anneal_rate", "tau_min"):
        assert f"\n{key} " in out
    assert "per step; 0 keeps tau constant" in out  # the meaning, from the Config's source comment
    assert main(["describe", "sort"]) == 0
    out = capsys.readouterr().out
    assert "quick" in out and "paper" in out and "all_or_none ↑ (main)" in out
    assert "sign | bernoulli" in out  # a Literal's choices as its type
    assert "lr" in out and "0.003" in out  # defaults shown are the quick preset's


def test_describe_unknown_name_is_one_line_with_a_suggestion(capsys):
    assert main(["describe", "gumbell"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "did you mean 'gumbel'" in err


def test_seeds_print_one_table_with_a_mean_row(tmp_path, capsys):
    assert main(["run", *TOY, "-e", "ste", "--seeds", "0-2", "--runs", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert out.count("| task") == 1  # one header
    assert "mean ± 95% CI" in out and "3/3 ok" in out
    assert sum(line.startswith("| toy") for line in out.splitlines()) == 3


def test_show_accepts_a_unique_prefix_and_summarises(tmp_path, capsys):
    (path,) = _run(tmp_path, "-e", "reinforce", "--grad-draws", "10")
    capsys.readouterr()
    rid = path.stem
    assert main(["show", rid[:6], "--runs", str(tmp_path / "runs")]) == 0
    out = capsys.readouterr().out
    assert f"run {rid}: ok" in out
    for section in ("estimator", "gap (main)", "cost:", "execution: none", "made by gradbench"):
        assert section in out
    assert main(["show", rid[:6], "--runs", str(tmp_path / "runs"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["run_id"] == rid


def test_show_refuses_an_ambiguous_prefix(tmp_path, capsys):
    (path,) = _run(tmp_path, "-e", "ste")
    twin = json.loads(path.read_text())
    twin["run_id"] = path.stem[:4] + "0" * 8 if path.stem[4:] != "0" * 8 else path.stem[:4] + "1" * 8
    path.with_name(f"{twin['run_id']}.json").write_text(json.dumps(twin))
    capsys.readouterr()
    assert main(["show", path.stem[:4], "--runs", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "ambiguous" in err and path.stem in err
    assert main(["show", path.stem, "--runs", str(tmp_path / "runs")]) == 0  # the full id is never ambiguous


def test_leaderboard_writes_beside_the_records_and_leaves_the_cwd_file_alone(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    Path("leaderboard.md").write_text("the committed leaderboard\n")
    assert main(["run", *TOY, "-e", "ste"]) == 0
    assert main(["leaderboard"]) == 0
    assert Path("leaderboard.md").read_text() == "the committed leaderboard\n"
    assert "| ste " in Path("runs/leaderboard.md").read_text()
    assert "wrote runs/leaderboard.md" in capsys.readouterr().out


def test_leaderboard_of_a_missing_folder_is_exit_2(tmp_path, capsys):
    assert main(["leaderboard", "--runs", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "does not exist" in err
    assert not (tmp_path / "nope").exists()


def test_unsupported_pair_names_a_task_setting_that_works(capsys):
    assert main(["run", "-t", "sort", "-e", "gumbel", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "try --task sort:node=bernoulli" in err
    assert main(["run", "-t", "classify", "-e", "gumbel", "--no-progress"]) == 2
    assert "try --task classify:node=bernoulli" in capsys.readouterr().err


def test_graph_on_a_cpu_says_it_runs_eagerly(tmp_path, capsys):
    (path,) = _run(tmp_path, "-e", "ste", "--accel", "graph")
    assert "graph: CUDA graphs need a CUDA device; eager instead" in capsys.readouterr().err
    assert json.loads(path.read_text())["accel"]["used"] == "none"


def test_reusing_a_record_from_another_execution_path_says_so(tmp_path, capsys):
    (path,) = _run(tmp_path, "-e", "ste")
    record = json.loads(path.read_text())
    record["accel"]["used"] = "compile"  # as if it had been made with --accel compile
    path.write_text(json.dumps(record))
    capsys.readouterr()
    assert main(["run", *TOY, "-e", "ste", "--runs", str(tmp_path / "runs")]) == 0
    err = capsys.readouterr().err
    assert "steps/s were measured with accel 'compile', not 'none'" in err


def test_learning_curves_start_at_step_0(tmp_path):
    (path,) = _run(tmp_path, "-e", "ste")
    rows = read_history(history_path(path))
    assert [r["step"] for r in rows] == [0, 10, 20]
    assert "test/gap" in rows[0] and "train_cost" not in rows[0]
    assert all("train_cost" in r for r in rows[1:])


def test_plugin_import_error_shows_its_traceback_on_request(tmp_path, capsys):
    plugin = tmp_path / "broken.py"
    plugin.write_text("def helper():\n    raise RuntimeError('boom inside the plugin')\n\nhelper()\n")
    assert main(["list", "--plugin", str(plugin)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "boom inside the plugin" in err
    assert main(["list", "--plugin", str(plugin), "--traceback"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and "in helper" in err


def test_interrupted_run_leaves_no_record_and_no_history(tmp_path):
    plugin = tmp_path / "interrupt.py"
    plugin.write_text(
        "import gradbench\nfrom dataclasses import dataclass\n\n@dataclass(frozen=True)\nclass C:\n    pass\n\n"
        "@gradbench.register_estimator('interrupt_after_a_step')\nclass R(gradbench.Estimator):\n"
        "    supports = frozenset({'bernoulli'})\n    Config = C\n    calls = 0\n\n"
        "    def forward(self, logits, cost_fn):\n        R.calls += 1\n"
        "        if R.calls > 3:\n            raise KeyboardInterrupt\n"
        "        b = (logits > 0).to(logits.dtype)\n        f = cost_fn(b)\n"
        "        return gradbench.EstimatorOutput(b, f.detach(), f.mean() + 0 * logits.sum(), self.zero(logits),"
        " {'cost_evals': 1})\n")
    runs = tmp_path / "r"
    assert main(["run", *TOY, "-e", "interrupt_after_a_step", "--plugin", str(plugin), "--runs", str(runs)]) == 130
    assert [p for p in runs.rglob("*") if p.is_file()] == []  # neither a record nor a (temporary) history


def test_sweep_takes_the_shared_run_options(tmp_path, capsys):
    runs = tmp_path / "runs"
    code = main(["sweep", "--tasks", "toy", "--estimators", "ste", "--seeds", "0", "--steps", "20", "--eval-every",
                 "10", "--grad-draws", "5", "--grad-checkpoints", "1", "--accel", "none", "--runs", str(runs),
                 "--no-progress", "--device", "cpu"])
    assert code == 0
    (path,) = runs.glob("toy/ste/*.json")
    record = json.loads(path.read_text())
    assert record["eval_every"] == 10 and record["grad_stats"] == {"draws": 5, "checkpoints": [1.0]}
    assert record["accel"]["requested"] == "none"
    assert (runs / "leaderboard.md").is_file()


def test_api_sets_run_options_and_task_keys_apart(tmp_path):
    record = gradbench.run("toy", "ste", steps=10, eval_every=5, runs=str(tmp_path), grad_stats=False,
                           device="cpu", task_config={"dim": 7})
    assert record["task"]["config"]["dim"] == 7 and record["budget"] == {"steps": 10}
    # a key given in task_config always goes to the task, even when a run option has its name
    with pytest.raises(UsageError, match="unknown config key 'steps'"):
        gradbench.run("toy", "ste", runs=str(tmp_path), device="cpu", task_config={"steps": 3})


def test_records_folder_that_cannot_be_written_is_exit_2(tmp_path, capsys):
    if os.geteuid() == 0:  # root writes anywhere: use a path below a file instead
        target = tmp_path / "file"
        target.write_text("x")
        runs = str(target / "sub")
    else:
        ro = tmp_path / "ro"
        ro.mkdir(mode=0o500)
        runs = str(ro)
    assert main(["run", *TOY, "-e", "ste", "--runs", runs]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot use --runs" in err


def test_api_takes_the_device_from_options(tmp_path):
    from gradbench.spec import RunOptions

    opts = RunOptions(device="cpu", steps=10, eval_every=5, grad_stats=False, runs=str(tmp_path))
    assert gradbench.run("toy", "ste", options=opts)["provenance"]["device"] == "cpu"
    with pytest.raises(UsageError, match="unknown device"):  # options.device is used, not "auto"
        gradbench.run("toy", "ste", options=RunOptions(device="tpu", runs=str(tmp_path)))


def test_sweep_says_when_it_reuses_records_of_another_execution_path(tmp_path, capsys):
    (path,) = _run(tmp_path, "-e", "ste")
    record = json.loads(path.read_text())
    record["accel"]["used"] = "graph"  # as if made on a GPU with the CUDA graph
    path.write_text(json.dumps(record))
    capsys.readouterr()
    assert main(["sweep", "--tasks", "toy", "--estimators", "ste", "--steps", "20", "--eval-every", "10",
                 "--no-grad-stats", "--device", "cpu", "--runs", str(tmp_path / "runs"), "--no-progress"]) == 0
    captured = capsys.readouterr()
    assert "1 with accel 'graph'; this sweep: 'none'" in captured.err
    assert "1 already finished" in captured.out


def test_a_run_ended_by_system_exit_keeps_no_history(tmp_path):
    plugin = tmp_path / "exits.py"
    plugin.write_text(
        "import sys\nimport gradbench\nfrom dataclasses import dataclass\n\n@dataclass(frozen=True)\nclass C:\n"
        "    pass\n\n@gradbench.register_estimator('exits')\nclass R(gradbench.Estimator):\n"
        "    supports = frozenset({'bernoulli'})\n    Config = C\n\n"
        "    def forward(self, logits, cost_fn):\n        sys.exit(3)\n")
    runs = tmp_path / "r"
    with pytest.raises(SystemExit):
        main(["run", *TOY, "-e", "exits", "--plugin", str(plugin), "--runs", str(runs)])
    assert [p for p in runs.rglob("*") if p.is_file()] == []


def test_rerun_names_the_into_flag_when_it_cannot_write(tmp_path, capsys):
    (path,) = _run(tmp_path, "-e", "ste")
    blocker = tmp_path / "file"
    blocker.write_text("x")
    capsys.readouterr()
    assert main(["rerun", path.stem, "--runs", str(tmp_path / "runs"), "--into", str(blocker / "sub")]) == 2
    assert "cannot use --into" in capsys.readouterr().err


def test_leaderboard_never_overwrites_a_file_it_did_not_make(tmp_path, capsys):
    (path,) = _run(tmp_path, "-e", "ste")
    runs = tmp_path / "runs"
    notes = runs / "leaderboard.md"
    notes.write_text("my notes\n")
    assert main(["leaderboard", "--runs", str(runs)]) == 2
    assert "was not written by gradbench leaderboard" in capsys.readouterr().err
    assert notes.read_text() == "my notes\n"
    notes.unlink()
    assert main(["leaderboard", "--runs", str(runs)]) == 0  # its own file it rewrites
    assert main(["leaderboard", "--runs", str(runs)]) == 0
    made = notes.read_text()
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["leaderboard", "--runs", str(empty), "--out", str(notes)]) == 2  # no records: refused
    assert "no run records in" in capsys.readouterr().err
    assert notes.read_text() == made
