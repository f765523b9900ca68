"""gradbench export: one flat row per run record (csv, jsonl, parquet), read back and checked against the
records of a small runs folder (two toy runs). Parquet needs the export extra: the test skips without it,
except in CI (which installs every extra), where it fails."""

from __future__ import annotations

import csv
import importlib
import io
import json
import math
import os
import sys
from pathlib import Path

import pytest

from gradbench import export as exporter
from gradbench.cli import main
from gradbench.results import Record, RunSet


def need(module: str, extra: str):
    """The extra's module; skip without it, except in CI (which installs every extra): fail there."""
    if os.environ.get("CI"):
        return importlib.import_module(module)
    return pytest.importorskip(module, reason=f"the {extra} extra is not installed: pip install 'gradbench[{extra}]'")


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("runs")
    assert main(["run", "--task", "toy", "--estimator", "reinforce", "--seeds", "0-1", "--steps", "20",
                 "--eval-every", "10", "--no-progress", "--runs", str(folder)]) == 0
    return folder


def _records(runs: Path) -> dict[str, dict]:
    return {d["run_id"]: d for d in (json.loads(p.read_text()) for p in runs.glob("*/*/*.json"))}


COLUMNS = ["run_id", "status", "error", "task", "task_version", "task_label", "task.dim", "task.target", "node.kind",
           "node.shape", "estimator", "estimator_version", "estimator_label", "estimator.baseline",
           "estimator.samples", "preset", "seed", "seed_batch", "budget.steps", "budget.seconds", "budget.evals",
           "budget.lr_schedule", "metric.gap", "metric.expected_cost", "gradient.start.log10_variance",
           "gradient.middle.cosine", "gradient.end.variance", "gradient.end.bias_p", "gradient.end.step",
           "cost.cost_evals_per_step", "cost.steps_per_s", "cost.train_seconds", "accel.used",
           "provenance.git_sha", "provenance.git_dirty", "provenance.torch", "provenance.device",
           "provenance.cpu_model", "provenance.threads", "provenance.hostname", "provenance.start_utc",
           "provenance.end_utc", "data_fingerprint"]


def _check_values(row: dict, record: dict, text: bool) -> None:
    """One exported row against its record; ``text``: the row came from csv (every cell a string)."""
    def same(cell, value):
        if value is None:
            assert cell in ("", None)
        elif isinstance(value, bool):
            assert cell == (("true" if value else "false") if text else value)
        elif isinstance(value, float):
            assert math.isclose(float(cell), value, rel_tol=1e-12)
        elif isinstance(value, list):
            assert (json.loads(cell) if text or isinstance(cell, str) else cell) == value
        else:
            assert cell == (str(value) if text else value)

    end = record["gradient"]["checkpoints"][-1]
    same(row["status"], record["status"])
    same(row["task"], record["task"]["name"])
    same(row["task_version"], record["task"]["version"])
    same(row["task.dim"], record["task"]["config"]["dim"])
    same(row["node.shape"], record["task"]["node"]["shape"])
    same(row["estimator"], record["estimator"]["name"])
    same(row["estimator_label"], record["estimator"]["label"])
    same(row["estimator.baseline"], record["estimator"]["config"]["baseline"])
    same(row["preset"], record["preset"])
    same(row["seed"], record["seed"])
    same(row["budget.steps"], record["budget"]["steps"])
    same(row["budget.evals"], None)
    same(row["budget.lr_schedule"], "constant")
    same(row["metric.gap"], record["metrics"]["gap"]["value"])
    same(row["metric.expected_cost"], record["metrics"]["expected_cost"]["value"])
    assert end["checkpoint"] == "end"
    same(row["gradient.end.variance"], end["variance"])
    same(row["gradient.end.step"], end["step"])
    same(row["cost.steps_per_s"], record["cost"]["steps_per_s"])
    same(row["accel.used"], record["accel"]["used"])
    for key in ("git_sha", "git_dirty", "torch", "device", "cpu_model", "threads", "hostname", "start_utc", "end_utc"):
        same(row[f"provenance.{key}"], record["provenance"][key])
    same(row["data_fingerprint"], record["data_fingerprint"])


def test_csv_columns_and_values(runs, capsys):
    assert main(["export", "--runs", str(runs)]) == 0
    out = capsys.readouterr().out
    rows = list(csv.DictReader(io.StringIO(out)))
    header = next(csv.reader(io.StringIO(out)))
    records = _records(runs)
    assert len(rows) == 2 and {r["run_id"] for r in rows} == set(records)
    assert [c for c in COLUMNS if c not in header] == []
    assert len(header) == len(set(header))
    # groups stay together, in the documented order
    assert header.index("run_id") == 0 and header.index("data_fingerprint") == len(header) - 1
    assert header.index("metric.gap") < header.index("gradient.start.variance") < header.index("cost.steps") < \
        header.index("provenance.git_sha")
    assert [r["seed"] for r in rows] == ["0", "1"]
    for row in rows:
        _check_values(row, records[row["run_id"]], text=True)


def test_jsonl_keeps_json_types(runs, tmp_path, capsys):
    out = tmp_path / "runs.jsonl"
    assert main(["export", "--runs", str(runs), "--format", "jsonl", "--out", str(out)]) == 0
    assert "wrote" in capsys.readouterr().out
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    records = _records(runs)
    assert len(rows) == 2
    for row in rows:
        assert list(row) == list(rows[0])  # every column in every row
        assert row["node.shape"] == [100] and isinstance(row["provenance.git_dirty"], bool)
        assert row["seed_batch"] is None and row["budget.seconds"] is None
        _check_values(row, records[row["run_id"]], text=False)


def test_parquet_round_trip(runs, tmp_path):
    pd = need("pandas", "export")
    need("pyarrow", "export")
    out = tmp_path / "runs.parquet"
    assert main(["export", "--runs", str(runs), "--format", "parquet", "--out", str(out)]) == 0
    frame = pd.read_parquet(out)
    columns, rows = exporter.table(RunSet.collect(runs))
    assert list(frame.columns) == columns and len(frame) == 2
    records = _records(runs)
    for row in frame.to_dict("records"):
        row = {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in row.items()}
        assert json.loads(row["node.shape"]) == [100]  # lists travel as JSON text
        assert row["seed"] == records[row["run_id"]]["seed"]
        _check_values(row, records[row["run_id"]], text=False)


def test_parquet_keeps_a_column_of_mixed_kinds_as_text(tmp_path):
    pd = need("pandas", "export")
    need("pyarrow", "export")
    base = {"schema_version": 1, "status": "ok", "metrics": {}, "seed": 0, "estimator": {"name": "e", "label": "e"}}
    runs = RunSet.of([{**base, "run_id": "a", "task": {"name": "t", "config": {"x": 1}}},
                      {**base, "run_id": "b", "task": {"name": "t", "config": {"x": "wide"}}}])
    columns, rows = exporter.table(runs)
    exporter.write_parquet(columns, rows, tmp_path / "mixed.parquet")
    assert list(pd.read_parquet(tmp_path / "mixed.parquet")["task.x"]) == ["1", "wide"]


def test_parquet_needs_out_and_the_extra(runs, tmp_path, monkeypatch, capsys):
    assert main(["export", "--runs", str(runs), "--format", "parquet"]) == 2
    assert "--out" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "pandas", None)  # import pandas now raises ImportError
    out = tmp_path / "x.parquet"
    assert main(["export", "--runs", str(runs), "--format", "parquet", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "pip install 'gradbench[export]'" in err
    assert not out.exists()


def test_export_refuses_a_folder_without_records(tmp_path, capsys):
    assert main(["export", "--runs", str(tmp_path)]) == 2
    assert "no run records" in capsys.readouterr().err


def test_record_reads_what_the_export_needs():
    r = Record({"budget": {"steps": 5}, "data_fingerprint": "ab", "schema_version": 1,
                "gradient": {"checkpoints": [{"checkpoint": "end", "step": 5, "variance": 0.1}]}})
    assert r.lr_schedule == "constant"
    assert Record({"budget": {"steps": 5, "lr_schedule": "cosine"}}).lr_schedule == "cosine"
    assert r.end.fields == {"step": 5, "variance": 0.1}
    assert r.data_fingerprint == "ab" and Record({}).data_fingerprint is None and r.schema_version == 1
