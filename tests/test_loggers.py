"""--log tensorboard|wandb: each history row and the final figures mirrored to the logger, read back from
the logger's own files (TensorBoard's EventAccumulator; W&B's offline run file). A missing library is a
one-line usage error before training; a logger failing mid-run only warns. In CI (CI set) the extras must
be installed: these tests fail there instead of skipping."""

from __future__ import annotations

import importlib
import json
import math
import os
import struct
from pathlib import Path

import numpy as np
import pytest

import gradbench
from gradbench import loggers, records
from gradbench.cli import main


def need(module: str, extra: str):
    """The extra's module; skip without it, except in CI (which installs every extra): fail there."""
    if os.environ.get("CI"):
        return importlib.import_module(module)
    return pytest.importorskip(module, reason=f"the {extra} extra is not installed: pip install 'gradbench[{extra}]'")


def _history(record: dict) -> list[dict]:
    return records.read_history(records.history_path(Path(record["path"])))


def _record(runs: Path) -> dict:
    (path,) = runs.glob("*/*/*.json")
    return {**records.read_record(path), "path": str(path)}


RUN = ["run", "--task", "toy", "--estimator", "reinforce", "--steps", "120", "--eval-every", "50", "--no-progress"]

# ----------------------------------------------------------------------------------------- TensorBoard


def _scalars(folder: Path) -> dict[str, dict[int, float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    return {tag: {e.step: e.value for e in acc.Scalars(tag)} for tag in acc.Tags()["scalars"]}


def test_tensorboard_scalars_equal_the_history_rows(tmp_path):
    need("tensorboard", "tensorboard")
    runs = tmp_path / "runs"
    assert main([*RUN, "--runs", str(runs), "--log", "tensorboard"]) == 0
    record = _record(runs)
    folder = runs / "tensorboard" / record["run_id"]  # the default: <runs>/tensorboard/<run_id>/
    got = _scalars(folder)
    rows = _history(record)
    assert [r["step"] for r in rows] == [0, 50, 100, 120]
    expected: dict[str, dict[int, float]] = {}
    for row in rows:
        for key, value in row.items():
            if key != "step" and isinstance(value, (int, float)):
                expected.setdefault(key, {})[row["step"]] = float(np.float32(value))  # event files hold float32
    assert {"loss", "train_cost", "test/gap", "grad/log10_variance", "cost_evals"} <= set(expected)
    for key, by_step in expected.items():
        assert got[key] == by_step, key
    # the final figures at the last step, the gradient checkpoints at theirs
    steps = record["cost"]["steps"]
    for name, metric in record["metrics"].items():
        assert got[f"final/{name}"] == {steps: float(np.float32(metric["value"]))}
    assert got["cost/steps"] == {steps: float(steps)}
    for c in record["gradient"]["checkpoints"]:
        assert got[f"gradient/{c['checkpoint']}/variance"] == {c["step"]: float(np.float32(c["variance"]))}


def test_tensorboard_names_the_run_and_logs_its_config(tmp_path):
    """The Python API takes ``log`` as a run option; ``tensorboard:DIR`` puts the run under DIR/<run_id>."""
    need("tensorboard", "tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    record = gradbench.run(task="toy", estimator="ste", steps=30, eval_every=30, grad_stats=False, seed=3,
                           runs=str(tmp_path / "runs"), log=f"tensorboard:{tmp_path / 'tb'}")
    assert record["status"] == "ok"
    acc = EventAccumulator(str(tmp_path / "tb" / record["run_id"]))
    acc.Reload()
    start = acc.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    hparams = plugin_data_pb2.HParamsPluginData.FromString(start).session_start_info.hparams
    assert hparams["run_id"].string_value == record["run_id"]
    assert hparams["task.name"].string_value == "toy" and hparams["estimator.label"].string_value == "ste"
    assert hparams["seed"].number_value == 3 and hparams["budget.steps"].number_value == 30
    name = acc.Tensors("run/text_summary")[0].tensor_proto.string_val[0].decode()
    assert name == f"toy/ste seed 3 ({record['run_id']})"
    assert acc.Tensors("status/text_summary")[0].tensor_proto.string_val[0].decode() == "ok"
    assert not (tmp_path / "runs" / "tensorboard").exists()


# ------------------------------------------------------------------------------------- Weights & Biases


def _wandb_records(path: Path):
    """The records of a W&B run file: a LevelDB-style log (a 7-byte ':W&B' header, 32 KiB blocks of
    chunks, each with a crc32, length and type) of wandb's protobuf Records."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    ident, magic, _ = struct.unpack("<4sHB", data[:7])
    assert ident == b":W&B" and magic == 0xBEE1
    pos, parts, block = 7, b"", 32768
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:  # a block's tail too short for a chunk header is padding
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if length == 0 and kind == 0:
            pos += left
            continue
        parts += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # a full record, or the last chunk of one
            rec = pb.Record()
            rec.ParseFromString(parts)
            parts = b""
            yield rec


def _items(items) -> dict:
    return {i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in items}


def test_wandb_offline_run_holds_the_history_rows_and_final_figures(tmp_path, monkeypatch):
    need("wandb", "wandb")
    for var, sub in (("WANDB_DIR", "wandb"), ("WANDB_CONFIG_DIR", "config"), ("WANDB_CACHE_DIR", "cache"),
                     ("WANDB_DATA_DIR", "data")):
        monkeypatch.setenv(var, str(tmp_path / sub))
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    runs = tmp_path / "runs"
    assert main([*RUN, "--runs", str(runs), "--log", "wandb:my-project"]) == 0
    record = _record(runs)
    (run_file,) = (tmp_path / "wandb").glob("wandb/offline-run-*/run-*.wandb")  # under WANDB_DIR
    history, summary, run = [], {}, None
    for rec in _wandb_records(run_file):
        kind = rec.WhichOneof("record_type")
        if kind == "history":
            history.append(_items(rec.history.item))
        elif kind == "summary":
            summary.update(_items(rec.summary.update))
        elif kind == "run":
            run = rec.run
    assert run is not None and run.project == "my-project"
    assert run.display_name == f"toy/reinforce seed 0 ({record['run_id']})" and run.run_group == "toy/reinforce"
    config = _items(run.config.update)
    assert config["run_id"] == record["run_id"] and config["task"]["name"] == "toy" and config["seed"] == 0
    rows = _history(record)
    assert len(history) == len(rows)
    for logged, row in zip(history, rows, strict=True):
        assert logged["_step"] == row["step"]
        want = {k: v for k, v in row.items() if k != "step" and isinstance(v, (int, float))}
        assert {k: logged[k] for k in want} == pytest.approx(want, rel=1e-12)
    for name, metric in record["metrics"].items():
        assert summary[f"final/{name}"] == pytest.approx(metric["value"], rel=1e-12)
    assert summary["cost/steps"] == record["cost"]["steps"] and summary["status"] == "ok"
    end = next(c for c in record["gradient"]["checkpoints"] if c["checkpoint"] == "end")
    assert summary["gradient/end/variance"] == pytest.approx(end["variance"], rel=1e-12)


# --------------------------------------------------------------------------------- failures and costs


def test_a_missing_library_is_one_usage_line_before_any_training(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(loggers.KINDS, "tensorboard", "gradbench_no_such_module")
    runs = tmp_path / "runs"
    for argv in ([*RUN, "--runs", str(runs), "--log", "tensorboard"],
                 ["sweep", "--tasks", "toy", "--estimators", "ste", "--steps", "20", "--runs", str(runs),
                  "--log", "tensorboard:tb", "--no-progress"],
                 ["tune", "--task", "classify", "--estimators", "ste", "--grid", "lr=1e-3", "--steps", "20",
                  "--runs", str(runs), "--log", "tensorboard"],
                 ["study", str(tmp_path / "any.toml"), "--profile", "cpu", "--log", "tensorboard"]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "pip install 'gradbench[tensorboard]'" in err
    assert not list(runs.glob("*/*/*.json"))
    assert main([*RUN, "--runs", str(runs), "--log", "mlflow"]) == 2
    assert "unknown --log 'mlflow'" in capsys.readouterr().err


def test_a_logger_failing_mid_run_warns_once_and_the_run_goes_on(tmp_path, monkeypatch, capsys):
    need("tensorboard", "tensorboard")
    calls = []

    def broken(self, step, row):
        calls.append(step)
        raise OSError("disk full")

    monkeypatch.setattr(loggers.TensorBoardLogger, "log_row", broken)
    runs = tmp_path / "runs"
    assert main([*RUN, "--runs", str(runs), "--log", "tensorboard", "--no-grad-stats"]) == 0
    err = capsys.readouterr().err
    assert err.count("--log tensorboard failed (OSError: disk full)") == 1 and calls == [0]
    record = _record(runs)
    assert record["status"] == "ok" and len(_history(record)) == 4  # the history is whole

    def unopenable(self, *args):
        raise RuntimeError("no such project")

    monkeypatch.setattr(loggers.TensorBoardLogger, "__init__", unopenable)
    assert main([*RUN, "--runs", str(runs), "--log", "tensorboard", "--seed", "1", "--no-grad-stats"]) == 0
    assert capsys.readouterr().err.count("--log tensorboard failed (RuntimeError: no such project)") == 1


class Recorder:
    def __init__(self):
        self.rows, self.finals, self.closed = [], [], 0

    def log_row(self, step, row):
        self.rows.append((step, dict(row)))

    def log_final(self, record):
        self.finals.append(record["run_id"])

    def close(self):
        self.closed += 1


def test_the_logger_sees_each_history_row_once_and_nothing_per_step(tmp_path, monkeypatch):
    """Called at the history rows only (every log or evaluation step), then once with the record; a seed
    batch gets one logger per seed; a reused record opens none."""
    made: dict[str, Recorder] = {}

    def open_run(targets, spec, runs_dir, execution=None):
        assert [t.kind for t in targets] == ["tensorboard"] and execution["device"] == "cpu"
        return made.setdefault(spec.run_id, Recorder())

    monkeypatch.setattr(loggers, "open_run", open_run)
    monkeypatch.setitem(loggers.KINDS, "tensorboard", "json")  # any importable module: no library needed
    runs = tmp_path / "runs"
    argv = ["run", "--task", "toy", "--estimator", "ste", "--seeds", "0-1", "--batch-seeds", "--steps", "260",
            "--eval-every", "100", "--no-grad-stats", "--no-progress", "--device", "cpu", "--runs", str(runs),
            "--log", "tensorboard"]
    assert main(argv) == 0
    assert len(made) == 2
    for run_id, rec in made.items():
        (path,) = runs.glob(f"*/*/{run_id}.json")
        rows = records.read_history(records.history_path(path))
        assert [step for step, _ in rec.rows] == [r["step"] for r in rows] == [0, 50, 100, 150, 200, 250, 260]
        assert [row for _, row in rec.rows] == rows
        assert rec.finals == [run_id] and rec.closed == 1
    made.clear()
    assert main(argv) == 0  # finished: reused, nothing logged again
    assert made == {}


def test_scalars_keep_numbers_only():
    assert loggers.scalars({"step": 5, "loss": 1, "x": None, "ok": True, "t": "a", "n": math.nan}).keys() == {
        "loss", "n"}
    assert loggers.parse(None) == [] and loggers.parse("none") == []
