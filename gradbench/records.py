"""Run records: one JSON file per run, written atomically, keyed by a hash of the resolved spec.

Layout: ``<runs>/<task>/<estimator>/<run_id>.json`` with per-step history in
``<run_id>.history.jsonl`` beside it. A record exists only once its final file does (temp + rename),
so a crash never leaves a half-written record under the final name.

Record fields (schema_version 1; docs/records.md says what each means)::

    schema_version, run_id, status ("ok" | "failed" | "diverged"), error (str | None),
    task: {name, version, config, label, node: {kind, shape, ...params}},
    estimator: {name, version, config, label, unbiased},
    preset, seed,
    budget: {"steps": N} | {"seconds": S} | {"evals": E}, plus "lr_schedule": "cosine" when not constant,
    grad_stats: {"draws": K, "checkpoints": [fractions]} | None   (what gradient statistics were asked for),
    seed_batch: [seeds]   (only in records of a batched run: the seeds trained together),
    metrics: {name: {value, higher_is_better}}   (test metrics and their valid_* counterparts; {} unless ok),
    main_metric,
    data_fingerprint: str | None   (ok runs: a hash of the first training batches' logits; None when batched),
    gradient: {"checkpoints": [{checkpoint, step, draws, variance, log10_variance, snr, cosine, bias_p, ...}]}
              ({} without gradient statistics or for a run that did not finish),
    cost: {cost_evals_per_step, steps, steps_per_s, train_seconds, first_step_seconds, capture_seconds,
           peak_memory_mb, peak_memory_kind, replicas (batched records only)}   ({} unless ok),
    diagnostics: {name: float}  (estimator diagnostics at the end),
    eval_every: N  (the evaluation interval used),
    accel: {requested, used ("none" | "graph" | "compile"), reason},
    provenance: {gradbench_version, git_sha, git_dirty, torch, python, cuda, device, device_name, cpu_model,
                 threads, threads_source, threads_probe_seconds (after a probe), hostname, argv, plugins,
                 start_utc, end_utc}

Records made before a field existed lack it (the schema version stayed 1): eval_every, accel,
seed_batch, data_fingerprint, provenance.plugins, cpu_model and threads_source; a record without
``accel`` ran eagerly. Readers go through the typed view ``gradbench.results.Record``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from gradbench.protocol import VALID_PREFIX as VALID_PREFIX  # where older imports find it

SCHEMA_VERSION = 1
SELECTIONS = "selections"  # folder of tuning's selection records, under the records folder
STATUSES = ("ok", "failed", "diverged")
FINISHED = ("ok", "diverged")  # re-running these gives the same answer; "failed" is retried


def spec_key(spec: dict[str, Any]) -> dict[str, Any]:
    """The part of a spec that changes the result (never device or paths)."""
    key = {
        "task": {k: spec["task"][k] for k in ("name", "version", "config")},
        "estimator": {k: spec["estimator"][k] for k in ("name", "version", "config")},
        "preset": spec["preset"],
        "seed": spec["seed"],
        "budget": spec["budget"],
    }
    if spec.get("grad_stats"):  # what is measured changes the record, though not the training
        key["grad_stats"] = spec["grad_stats"]
    if spec.get("seed_batch") is not None:  # batched seeds draw their random numbers together
        key["seed_batch"] = spec["seed_batch"]
    return key


def run_id(spec: dict[str, Any]) -> str:
    """Short stable hash of the fully resolved spec."""
    blob = json.dumps(spec_key(spec), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def record_path(runs_dir: str | Path, task: str, estimator: str, rid: str) -> Path:
    return Path(runs_dir) / task / estimator / f"{rid}.json"


def history_path(record: Path) -> Path:
    return record.with_name(record.stem + ".history.jsonl")


def _clean(obj: Any) -> Any:
    """JSON-safe: non-finite floats become None (strict JSON has no NaN)."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    return obj


def atomic_write_text(path: str | Path, text: str) -> None:
    """Temp file in the same folder, fsync, then rename: readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = path.stat().st_mode & 0o777 if path.exists() else 0o644  # mkstemp would leave 0600
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_json(path: Path, data: Any) -> None:
    """A record as strict JSON (non-finite floats -> null), written atomically."""
    atomic_write_text(path, json.dumps(_clean(data), indent=2, allow_nan=False) + "\n")


class CorruptRecord(ValueError):
    """A record file that is not a complete, valid record."""


def validate(record: Any) -> dict[str, Any]:
    if not isinstance(record, dict):
        raise CorruptRecord("not a JSON object")
    missing = [k for k in ("schema_version", "run_id", "status", "task", "estimator", "metrics", "seed")
               if k not in record]
    if missing:
        raise CorruptRecord(f"missing fields: {', '.join(missing)}")
    if record["status"] not in STATUSES:
        raise CorruptRecord(f"bad status {record['status']!r}")
    if record["schema_version"] != SCHEMA_VERSION:
        raise CorruptRecord(f"schema_version {record['schema_version']} (this gradbench reads {SCHEMA_VERSION})")
    return record


def read_record(path: Path) -> dict[str, Any]:
    """Parse and validate one record; raises CorruptRecord."""
    try:
        with open(path) as f:
            data = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CorruptRecord(f"{path}: {e}") from None
    try:
        return validate(data)
    except CorruptRecord as e:
        raise CorruptRecord(f"{path}: {e}") from None


def load_finished(path: Path) -> dict[str, Any] | None:
    """The record at ``path`` if it is a finished run (reused on re-run), else None; CorruptRecord if
    the file is there but unreadable (the run must be redone)."""
    if not path.exists():
        return None
    record = read_record(path)
    return record if record["status"] in FINISHED else None


def iter_records(runs_dir: str | Path) -> Iterator[tuple[Path, dict[str, Any] | None, str | None]]:
    """Every ``*.json`` record under ``runs_dir``: (path, record or None, error or None)."""
    root = Path(runs_dir)
    if not root.is_dir():
        return
    for path in sorted(root.glob("*/*/*.json")):
        try:
            yield path, read_record(path), None
        except CorruptRecord as e:
            yield path, None, str(e)


def read_history(path: Path) -> list[dict[str, Any]]:
    """The rows of a history file ([] when there is none); a torn last line (a crash mid-write) is skipped."""
    rows = []
    try:
        with open(path) as f:
            for line in f:
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError:
                    continue
    except OSError:
        return []
    return rows


class HistoryWriter:
    """Appends one JSON line per logged step to a file of this process's own, flushed so a crash keeps
    what was logged; ``close`` renames it over the final name, so two processes running the same
    spec never interleave their lines."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        self._f = open(self._tmp, "w")
        _OPEN_HISTORIES.add(self)

    def write(self, row: dict[str, Any]) -> None:
        self._f.write(json.dumps(_clean(row)) + "\n")
        self._f.flush()

    def close(self) -> None:
        if not self._f.closed:
            self._f.close()
            os.replace(self._tmp, self.path)
        _OPEN_HISTORIES.discard(self)  # only now: a stop before the rename still finds it, and discards it

    def discard(self) -> None:
        """Close without keeping anything (the run will be made again another way)."""
        _OPEN_HISTORIES.discard(self)
        if not self._f.closed:
            self._f.close()
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._tmp)


_OPEN_HISTORIES: set[HistoryWriter] = set()


def discard_open_histories() -> None:
    """Discard every history this process is still writing: a sweep worker stopped mid-run (the sweep was
    interrupted) keeps no record of that run, so it must leave no half-written history either."""
    for writer in list(_OPEN_HISTORIES):
        writer.discard()


def selection_path(runs_dir: str | Path, selection_id: str) -> Path:
    return Path(runs_dir) / SELECTIONS / f"{selection_id}.json"


def read_selections(runs_dir: str | Path) -> tuple[list[dict[str, Any]], list[str]]:
    """Every selection record (``gradbench tune``) under ``runs_dir``, and one line per unreadable file:
    never silently dropped."""
    out, problems = [], []
    for path in sorted((Path(runs_dir) / SELECTIONS).glob("*.json")):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(data, dict) or data.get("kind") != "selection" or not isinstance(
                    data.get("settings"), list):
                raise ValueError("not a selection record")
            out.append(data)
        except (OSError, ValueError) as e:
            problems.append(f"{path}: {e}")
    return out, problems
