"""The CLI's run and leaderboard commands end to end, and the first command every user types."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from gradbench.cli import main

ROOT = Path(__file__).resolve().parent.parent
DISARM = str(ROOT / "examples" / "disarm.py")


def test_run_json_prints_the_record(tmp_path, capsys):
    code = main(["run", "-t", "toy", "-e", "gumbel:tau=0.5", "--steps", "20", "--runs", str(tmp_path),
                 "--json", "--no-progress"])
    out = capsys.readouterr().out
    assert code == 0
    record = json.loads(out)
    assert record["estimator"]["label"] == "gumbel(tau=0.5)"
    assert record["status"] == "ok"


def test_run_prints_a_leaderboard_row(tmp_path, capsys):
    assert main(["run", "-t", "toy", "-e", "ste:variant=prob", "--steps", "20", "--runs", str(tmp_path),
                 "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "| ste(variant=prob)" in out and "gap ↓" in out and "record:" in out


def test_failed_run_exits_1(tmp_path, capsys):
    plugin = tmp_path / "bad.py"
    plugin.write_text(
        "import gradbench\nfrom dataclasses import dataclass\n\n@dataclass(frozen=True)\nclass C:\n    pass\n\n"
        "@gradbench.register_estimator('cli_raises')\nclass R(gradbench.Estimator):\n"
        "    supports = frozenset({'bernoulli'})\n    Config = C\n\n"
        "    def forward(self, logits, cost_fn):\n        raise ValueError('kaput')\n")
    code = main(["run", "-t", "toy", "-e", "cli_raises", "--steps", "5", "--runs", str(tmp_path / "r"),
                 "--plugin", str(plugin), "--no-progress"])
    assert code == 1
    assert "kaput" in capsys.readouterr().err


def test_external_plugin_is_validated_and_run(tmp_path, capsys):
    assert main(["validate", "--estimator", "my-disarm", "--plugin", DISARM]) == 0
    assert main(["run", "-t", "toy", "-e", "my-disarm", "--plugin", DISARM, "--steps", "200", "--runs", str(tmp_path),
                 "--json", "--no-progress"]) == 0
    out = capsys.readouterr().out
    record = json.loads(out[out.index("{"):])
    assert record["status"] == "ok" and record["cost"]["cost_evals_per_step"] == 2


def test_leaderboard_command_writes_tables_with_na_rows(tmp_path, capsys):
    runs = tmp_path / "runs"
    for seed in (0, 1):
        for est in ("reinforce", "ste"):
            assert main(["run", "-t", "toy", "-e", est, "--steps", "20", "--seed", str(seed), "--runs", str(runs),
                         "--no-progress"]) == 0
    out = tmp_path / "lb.md"
    assert main(["leaderboard", "--runs", str(runs), "--out", str(out)]) == 0
    text = out.read_text()
    assert "<!-- gradbench:leaderboard:begin -->" in text
    assert "| reinforce" in text and "| ste " in text  # labels show only non-default values
    assert "ste(variant" not in text
    assert "### toy" in text


def test_runs_folder_that_is_a_file_is_a_usage_error(tmp_path, capsys):
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("x")
    assert main(["run", "-t", "toy", "--runs", str(not_a_dir), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot use --runs" in err


def test_interrupt_exits_130(tmp_path, capsys):
    plugin = tmp_path / "interrupt.py"
    plugin.write_text(
        "import gradbench\nfrom dataclasses import dataclass\n\n@dataclass(frozen=True)\nclass C:\n    pass\n\n"
        "@gradbench.register_estimator('cli_interrupt')\nclass R(gradbench.Estimator):\n"
        "    supports = frozenset({'bernoulli'})\n    Config = C\n\n"
        "    def forward(self, logits, cost_fn):\n        raise KeyboardInterrupt\n")
    runs = tmp_path / "r"
    code = main(["run", "-t", "toy", "-e", "cli_interrupt", "--plugin", str(plugin), "--runs", str(runs),
                 "--no-progress"])
    assert code == 130
    assert not list(runs.glob("*/*/*.json"))  # only complete records are ever left


@pytest.mark.slow
def test_first_command_sorts_to_90_percent(tmp_path):
    """`gradbench run --estimator dab --task sort` on the CPU: status ok, all-or-none >= 0.90."""
    proc = subprocess.run([sys.executable, "-m", "gradbench.cli", "run", "--estimator", "dab", "--task", "sort",
                           "--json", "--no-progress", "--device", "cpu"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    record = json.loads(proc.stdout)
    assert record["status"] == "ok"
    assert record["metrics"]["all_or_none"]["value"] >= 0.90
    assert (tmp_path / "runs" / "sort" / "dab" / f"{record['run_id']}.json").is_file()
