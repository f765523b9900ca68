"""``gradbench export``: every run record as one flat row, for pandas, R, a spreadsheet or a database.

A view of the results layer: the records are read as ``Record``s (``RunSet.collect``: every status, every
run, tuning grids included; unreadable files are listed in ``problems``, never silently dropped) and each
becomes one row of flat columns:

    run_id, status, error, schema_version
    task, task_version, task_label, task.<config key>, node.kind, node.shape, node.<param>
    estimator, estimator_version, estimator_label, estimator_unbiased, estimator.<config key>
    preset, seed, seed_batch, budget.steps, budget.seconds, budget.evals, budget.lr_schedule, eval_every
    main_metric, metric.<name> (test metrics, then the valid_* ones tuning uses)
    gradient.<checkpoint>.<field> (start, middle, end or the fraction; every field each checkpoint stored)
    cost.<key>, accel.requested, accel.used
    provenance.<field> (gradbench_version, git_sha, git_dirty, torch, python, cuda, device, device_name,
        cpu_model, threads, threads_source, hostname, argv, plugins, start_utc, end_utc)
    data_fingerprint

Columns are the union over the runs, in that order; a run without a column leaves it empty (csv) or null.
A metric's value is written only when it is a finite number (the layer's rule), else empty / null.

Formats: ``csv`` and ``jsonl`` with the standard library (in csv, lists and objects such as ``node.shape``
are JSON text and booleans ``true``/``false``; jsonl keeps them as JSON); ``parquet`` through pandas and
pyarrow, the optional extra ``gradbench[export]``, imported only here.
"""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from gradbench.budget import KINDS
from gradbench.errors import UsageError
from gradbench.records import atomic_write_text
from gradbench.results import Record, RunSet

FORMATS = ("csv", "jsonl", "parquet")
MISSING_EXTRA = "parquet export needs pandas and pyarrow: pip install 'gradbench[export]'"


def _prefixed(prefix: str, values: Mapping[str, Any] | None) -> dict[str, Any]:
    return {f"{prefix}.{k}": v for k, v in (values or {}).items()}


def _sort_key(record: Record) -> tuple:
    seed = record.seed
    return (record.task, record.task_label, record.stored_label, record.preset, json.dumps(record.budget,
            sort_keys=True), not isinstance(seed, int), seed if isinstance(seed, int) else 0, str(seed), record.run_id)


def row(record: Record) -> dict[str, Any]:
    """One record as flat columns (see the module's docstring), in column order."""
    r = record
    budget = r.budget if isinstance(r.budget, Mapping) else {}
    out: dict[str, Any] = {
        "run_id": r.run_id, "status": r.status, "error": r.error, "schema_version": r.schema_version,
        "task": r.task, "task_version": r.task_version, "task_label": r.task_label,
        **_prefixed("task", r.task_config),
        "node.kind": r.node_kind, **_prefixed("node", r.node_settings),
        "estimator": r.estimator, "estimator_version": r.estimator_version, "estimator_label": r.stored_label,
        "estimator_unbiased": r.unbiased, **_prefixed("estimator", r.estimator_config),
        "preset": r.preset, "seed": r.seed, "seed_batch": r.seed_batch,
        **{f"budget.{k}": budget.get(k) for k in KINDS}, "budget.lr_schedule": r.lr_schedule,
        "eval_every": r.eval_every, "main_metric": r.main_metric,
        **{f"metric.{name}": r.metric(name) for name in r.metric_directions(validation=True)},
    }
    for point in r.checkpoints:
        out.update(_prefixed(f"gradient.{point.name}", point.fields))
    out.update(_prefixed("cost", r.cost))
    accel = r.accel
    out.update({"accel.requested": accel.requested if accel else None, "accel.used": r.accel_path})
    prov = r.provenance
    out.update({f"provenance.{k}": list(v) if isinstance(v, tuple) else v for k, v in vars(prov).items()})
    out["data_fingerprint"] = r.data_fingerprint
    return out


def table(runs: RunSet | Iterable[Record]) -> tuple[list[str], list[dict[str, Any]]]:
    """(columns, rows): one row per record, sorted by task, labels, preset, budget and seed. The columns are
    the union of the rows' keys; a key one row adds goes right after the key before it in that row, so a
    group (``metric.*``, ``gradient.end.*``) stays together."""
    rows = [row(r) for r in sorted(runs, key=_sort_key)]
    columns: list[str] = []
    where: dict[str, int] = {}  # column -> its index
    for r in rows:
        at = 0
        for key in r:
            if key not in where:
                columns.insert(at, key)
                where = {c: i for i, c in enumerate(columns)}
            at = where[key] + 1
    return columns, rows


def _text(value: Any) -> str:
    """A csv cell: empty for none, ``true``/``false``, JSON for lists and objects, else ``str``."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple, dict)):
        return json.dumps(value, sort_keys=True)
    return str(value)


def to_csv(columns: list[str], rows: list[dict[str, Any]]) -> str:
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(columns)
    w.writerows([_text(r.get(c)) for c in columns] for r in rows)
    return out.getvalue()


def to_jsonl(columns: list[str], rows: list[dict[str, Any]]) -> str:
    """One JSON object per line, every column present (null when the run has none)."""
    return "".join(json.dumps({c: r.get(c) for c in columns}, allow_nan=False) + "\n" for r in rows)


def _frame(columns: list[str], rows: list[dict[str, Any]]) -> Any:
    """A pandas DataFrame: lists and objects as JSON text, and a column whose runs hold values of different
    kinds (a number here, a string there) as text, so that pyarrow can type every column."""
    try:
        import pandas as pd
        import pyarrow  # noqa: F401  (pandas' parquet engine)
    except ImportError:
        raise UsageError(MISSING_EXTRA) from None

    data: dict[str, list[Any]] = {}
    for c in columns:
        values = [r.get(c) for r in rows]
        values = [json.dumps(v, sort_keys=True) if isinstance(v, (list, tuple, dict)) else v for v in values]
        kinds = {"bool" if isinstance(v, bool) else "number" if isinstance(v, (int, float)) else type(v).__name__
                 for v in values if v is not None}
        if len(kinds) > 1:
            values = [None if v is None else _text(v) for v in values]
        data[c] = values
    return pd.DataFrame(data, columns=columns)


def write_parquet(columns: list[str], rows: list[dict[str, Any]], path: str | Path) -> None:
    """The table as a parquet file, written to a temp file beside ``path`` and renamed into place."""
    frame = _frame(columns, rows)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        frame.to_parquet(tmp, index=False)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def export(runs_dir: str | Path, fmt: str = "csv", out: str | Path | None = None) -> tuple[str | None, int, list[str]]:
    """Every record under ``runs_dir`` as ``fmt``. With ``out`` the file is written (atomically) and the
    text returned is None; without, the text is returned (parquet needs ``out``). Returns (text, runs
    exported, unreadable files)."""
    if fmt not in FORMATS:
        raise UsageError(f"unknown export format {fmt!r}; use one of {', '.join(FORMATS)}")
    if fmt == "parquet" and out is None:
        raise UsageError("parquet is a binary format: pass --out FILE.parquet")
    runs = RunSet.collect(runs_dir)
    columns, rows = table(runs)
    if fmt == "parquet":
        write_parquet(columns, rows, out)
        return None, len(rows), runs.problems
    text = to_csv(columns, rows) if fmt == "csv" else to_jsonl(columns, rows)
    if out is None:
        return text, len(rows), runs.problems
    atomic_write_text(out, text)
    return None, len(rows), runs.problems
