"""Readable text for the terminal: run rows, a record's summary, the registry, an estimator's or task's
config keys. Pure formatting: nothing here trains, writes or decides.
"""

from __future__ import annotations

import dataclasses
import inspect
import re
import sys
import types
import typing
from typing import Any

from tabulate import tabulate

from gradbench.config import format_value
from gradbench.errors import UsageError
from gradbench.leaderboard import format_mean_ci, format_sig
from gradbench.records import VALID_PREFIX
from gradbench.registry import ESTIMATORS, TASKS
from gradbench.stats import mean_ci

# ------------------------------------------------------------------------------- run rows


def _fmt(v: Any) -> str:
    return "—" if v is None else f"{v:.4f}" if abs(v) < 1000 else f"{v:.1f}"


def _metric_names(records: list[dict[str, Any]]) -> tuple[list[str], dict[str, bool]]:
    """Metric names (main first) and their directions, over all records; validation metrics are left to
    ``gradbench show`` and tuning (tables show what is reported: the test split)."""
    hib: dict[str, bool] = {}
    for r in records:
        hib.update({k: bool(m.get("higher_is_better")) for k, m in (r.get("metrics") or {}).items()
                    if not k.startswith(VALID_PREFIX)})
    main = next((r.get("main_metric") for r in records if r.get("main_metric")), None)
    return sorted(hib, key=lambda m: m != main), hib


def format_selection(sel: dict[str, Any]) -> str:
    """One selection as a table: every setting's validation mean ± CI, its ok seeds, and the choice."""
    metric = sel["selection_metric"]
    arrow = "↑" if sel["higher_is_better"] else "↓"
    chosen = (sel.get("choice") or {}).get("index")
    body = [[", ".join(f"{k}={v}" for k, v in row["values"].items()),
             format_mean_ci(row["mean"], row["ci95"]) if row["mean"] is not None else "—",
             f"{row['n_ok']}/{row['n']}", "chosen" if i == chosen else ""]
            for i, row in enumerate(sel["settings"])]
    head = f"{sel['task']['label']} x {sel['estimator']['label']} (budget: " + \
        ", ".join(f"{k}={v}" for k, v in sel["budget"].items()) + f"): {sel.get('path', '')}"
    table = tabulate(body, headers=["setting", f"{metric} {arrow}", "ok", ""], tablefmt="github",
                     disable_numparse=True)
    return f"{head}\n{table}\n"


def format_rows(records: list[dict[str, Any]]) -> str:
    """Records as one table, a row per seed, plus a mean ± 95% CI row (t over ok seeds) when there are
    several; then where the records are."""
    names, hib = _metric_names(records)
    headers = ["task", "estimator", "seed", *(f"{m} {'↑' if hib[m] else '↓'}" for m in names),
               "steps", "steps/s", "status"]
    body = []
    for r in records:
        cost, metrics = r.get("cost") or {}, r.get("metrics") or {}
        body.append([r["task"]["label"], r["estimator"]["label"], r["seed"],
                     *(_fmt(metrics[m]["value"]) if m in metrics else "—" for m in names),
                     cost.get("steps", "-"), format_sig(cost["steps_per_s"]) if cost.get("steps_per_s") else "-",
                     r["status"]])
    ok = [r for r in records if r["status"] == "ok"]
    if len(records) > 1:
        cells = []
        for m in names:
            mean, h, n = mean_ci(r["metrics"][m]["value"] for r in ok if m in r["metrics"])
            cells.append(format_mean_ci(mean, h) if n else "—")
        body.append(["mean ± 95% CI", "", f"{len(ok)}/{len(records)} ok", *cells, "", "", ""])
    table = tabulate(body, headers=headers, tablefmt="github", disable_numparse=True)
    if len(records) == 1:
        r = records[0]
        where = f"record: {r.get('path', '')}  (run_id {r['run_id']}, preset {r['preset']})"
    else:
        folders = sorted({str(r.get("path", "")).rsplit("/", 1)[0] for r in records})
        where = f"records: {', '.join(folders)}  (run_ids {', '.join(r['run_id'] for r in records)})"
    return f"{table}\n{where}"


# ------------------------------------------------------------------------------- show


def summary(record: dict[str, Any]) -> str:
    """``gradbench show``: a record as sections a person can read (``--json`` gives the record itself)."""
    parts = [_head(record), _configs(record), _metrics(record), _gradient(record), _cost(record),
             _provenance(record)]
    return "\n\n".join(p for p in parts if p)


def _kv(pairs: dict[str, Any]) -> str:
    return ", ".join(f"{k}={format_value(v)}" for k, v in pairs.items()) or "(none)"


def _head(r: dict[str, Any]) -> str:
    lines = [f"run {r['run_id']}: {r['status']}" + (f" ({r['path']})" if r.get("path") else "")]
    if r.get("error"):
        lines.append(f"error: {r['error']}")
    budget = _kv(r.get("budget") or {})
    batch = f"; trained with seeds {r['seed_batch']}" if r.get("seed_batch") else ""
    lines.append(f"preset {r.get('preset')}, seed {r.get('seed')}{batch}, budget {budget}, "
                 f"evaluated every {r.get('eval_every', '?')} steps")
    return "\n".join(lines)


def _configs(r: dict[str, Any]) -> str:
    task, est = r["task"], r["estimator"]
    node = task.get("node") or {}
    rows = [["task", f"{task.get('label', task['name'])} (v{task.get('version')})", _kv(task.get("config") or {})],
            ["node", node.get("kind", "?"), _kv({"shape": node.get("shape"), **(node.get("params") or {})})],
            ["estimator", f"{est.get('label', est['name'])} (v{est.get('version')}"
                          f"{', claims unbiased' if est.get('unbiased') else ''})", _kv(est.get("config") or {})]]
    return tabulate(rows, headers=["", "name", "config"], tablefmt="simple")


def _metrics(r: dict[str, Any]) -> str:
    metrics = r.get("metrics") or {}
    if not metrics:
        return ""
    main = r.get("main_metric")
    rows = [[f"{k}{' (main)' if k == main else ''}", _fmt(m.get("value")), "↑" if m.get("higher_is_better") else "↓"]
            for k, m in sorted(metrics.items(), key=lambda kv: kv[0] != main)]
    return tabulate(rows, headers=["metric", "value", "better"], tablefmt="simple", disable_numparse=True)


def _gradient(r: dict[str, Any]) -> str:
    points = (r.get("gradient") or {}).get("checkpoints") or []
    if not points:
        return "gradient statistics: not measured" if r["status"] == "ok" else ""
    keys = ["draws", "log10_variance", "snr", "cosine", "bias_sq", "bias_p"]
    rows = []
    for p in points:
        if p.get("error"):
            rows.append([p.get("checkpoint"), p.get("step"), f"failed: {p['error']}"] + [""] * (len(keys) - 1) + [""])
            continue
        rows.append([p.get("checkpoint"), p.get("step"), *(format_sig(p[k]) if isinstance(p.get(k), (int, float))
                                                            else "—" for k in keys), p.get("reference", "")])
    return "gradient statistics\n" + tabulate(rows, headers=["checkpoint", "step", *keys, "reference"],
                                              tablefmt="simple", disable_numparse=True)


def _cost(r: dict[str, Any]) -> str:
    cost = r.get("cost") or {}
    if not cost:
        return ""
    accel = r.get("accel") or {"used": "none", "reason": "not recorded (made before accel was recorded: eager)"}
    shown = {k: format_sig(v) if isinstance(v, float) else v for k, v in cost.items() if v is not None}
    return (f"cost: {_kv(shown)}\n"
            f"execution: {accel.get('used')} (asked: {accel.get('requested', 'auto')}): {accel.get('reason', '')}")


def _provenance(r: dict[str, Any]) -> str:
    p = r.get("provenance") or {}
    sha = str(p.get("git_sha") or "unknown")[:10] + (" (dirty)" if p.get("git_dirty") else "")
    return (f"made by gradbench {p.get('gradbench_version')} at {sha}, torch {p.get('torch')}, python "
            f"{p.get('python')}, CUDA {p.get('cuda')}\non {p.get('device')} ({p.get('device_name')}, "
            f"{p.get('threads')} threads) at {p.get('hostname')}, {p.get('start_utc')} to {p.get('end_utc')}\n"
            f"command: {' '.join(map(str, p.get('argv') or []))}")


# ------------------------------------------------------------------------------- registry


def _where(cls: Any) -> str:
    module = sys.modules.get(cls.__module__)
    return getattr(module, "__file__", None) or cls.__module__


def registry_tables() -> str:
    """``gradbench list -v``: every estimator (supports, unbiased claim, origin) and task (node, presets)."""
    rows = []
    for entry in ESTIMATORS.entries():
        try:
            cls = ESTIMATORS.get(entry.name)
            tags = cls.tags_for()  # the facts at the default config
            rows.append([entry.name, ", ".join(sorted(tags.supports)), "yes" if tags.unbiased else "no", entry.origin,
                         _where(cls)])
        except (UsageError, AttributeError) as e:
            rows.append([entry.name, "-", "-", entry.origin, f"failed to load: {e}"])
    est = tabulate(rows, headers=["estimator", "supports", "unbiased", "origin", "file"], tablefmt="github")
    rows = []
    for entry in TASKS.entries():
        try:
            cls = TASKS.get(entry.name)
            rows.append([entry.name, cls.node_of(cls.make_config(None, "quick")).kind, ", ".join(cls.presets),
                         cls.main_metric, entry.origin, _where(cls)])
        except UsageError as e:
            rows.append([entry.name, "-", "-", "-", entry.origin, f"failed to load: {e}"])
    tasks = tabulate(rows, headers=["task", "node (quick)", "presets", "main metric", "origin", "file"],
                     tablefmt="github")
    return f"{est}\n\n{tasks}"


# ------------------------------------------------------------------------------- describe


def type_text(hint: Any) -> str:
    """``Literal['a', 'b']`` -> ``a | b``; ``int | None`` -> ``int | None``."""
    origin = typing.get_origin(hint)
    if origin is typing.Literal:
        return " | ".join(map(str, typing.get_args(hint)))
    if origin in (typing.Union, types.UnionType):
        return " | ".join(type_text(a) for a in typing.get_args(hint))
    if hint is type(None):
        return "None"
    return getattr(hint, "__name__", str(hint))


def field_help(config_cls: type) -> dict[str, str]:
    """One line of meaning per config key: a field's ``metadata["help"]``, else the comment after it in the
    source (``tau: float = 1.0  # temperature``), which is how gradbench's own configs document keys."""
    names = {f.name for f in dataclasses.fields(config_cls)}
    out = {f.name: f.metadata["help"] for f in dataclasses.fields(config_cls) if "help" in f.metadata}
    try:
        source = inspect.getsource(config_cls)
    except (OSError, TypeError):
        return out
    for line in source.splitlines():
        m = re.match(r"\s+(\w+)\s*:[^#]*#\s*(.+)$", line)
        if m and m.group(1) in names:
            out.setdefault(m.group(1), m.group(2).strip())
    return out


def config_table(config_cls: type, defaults: Any = None) -> str:
    hints = typing.get_type_hints(config_cls)
    helps = field_help(config_cls)
    rows = []
    for f in dataclasses.fields(config_cls):
        default = getattr(defaults, f.name) if defaults is not None else (
            f.default if f.default is not dataclasses.MISSING else "—")
        rows.append([f.name, type_text(hints.get(f.name)), format_value(default), helps.get(f.name, "")])
    if not rows:
        return "(no config keys)"
    return tabulate(rows, headers=["key", "type", "default", "meaning"], tablefmt="simple", disable_numparse=True)


def _doc(cls: type) -> str:
    doc = inspect.getdoc(sys.modules.get(cls.__module__)) or inspect.getdoc(cls) or ""
    return doc.split("\n\n")[0].replace("\n", " ")


def describe(cls: type, kind: str) -> str:
    """``gradbench describe NAME``: what it is, its config keys, and for a task its presets and metrics."""
    head = f"{kind} {cls.name!r} (version {cls.version}): {_doc(cls)}"
    if kind == "estimator":
        tags = cls.tags_for()  # at the default config
        facts = (f"supports: {', '.join(sorted(tags.supports))}; claims unbiased: {'yes' if tags.unbiased else 'no'}\n"
                 f"usage: --estimator {cls.name}:key=value,...")
        return f"{head}\n{facts}\n\n{config_table(cls.Config)}"
    quick = cls.make_config(None, "quick") if "quick" in cls.presets else None
    presets = tabulate([[name, p.description, p.steps, p.eval_every, _kv(p.config)] for name, p in cls.presets.items()],
                       headers=["preset", "what", "steps", "eval every", "config"], tablefmt="simple",
                       disable_numparse=True)
    metrics = ", ".join(f"{m} {'↑' if hib else '↓'}{' (main)' if m == cls.main_metric else ''}"
                        for m, hib in cls.metrics.items())
    node = cls.node_of(quick) if quick is not None else None
    facts = (f"node (quick): {node.kind if node else '?'} {node.shape if node else ''}; metrics: {metrics}\n"
             f"usage: --task {cls.name}:key=value,...   (defaults below are the quick preset's)")
    return f"{head}\n{facts}\n\n{config_table(cls.Config, quick)}\n\n{presets}"

