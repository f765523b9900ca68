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
from collections.abc import Mapping
from typing import Any

from gradbench.budget import budget_text
from gradbench.config import format_value
from gradbench.errors import UsageError
from gradbench.registry import ESTIMATORS, TASKS
from gradbench.results import Record, Selection, columns, fmt
from gradbench.results.record import Accel
from gradbench.stats import mean_ci

# ------------------------------------------------------------------------------- run rows


def _fmt(v: float | None) -> str:
    return fmt.MISSING if v is None else f"{v:.4f}" if abs(v) < 1000 else f"{v:.1f}"


def format_selection(sel: Selection | Mapping[str, Any]) -> str:
    """One selection as a table: every setting's validation mean ± CI, its ok seeds, and the choice."""
    sel = sel if isinstance(sel, Selection) else Selection(sel)
    body = [[fmt.values_text(row.values), fmt.mean_ci(row.mean, row.ci95) if row.mean is not None else fmt.MISSING,
             f"{row.n_ok}/{row.n}", "chosen" if i == sel.chosen_index else ""]
            for i, row in enumerate(sel.settings)]
    for i in sel.tied:
        if i != sel.chosen_index and i < len(body):
            body[i][3] = "tied"
    head = f"{sel.task_label} x {sel.label} (budget: {budget_text(sel.budget)}): {sel.path}"
    table = fmt.table(["setting", f"{sel.metric}{fmt.arrow(sel.higher_is_better)}", "ok", ""], body)
    notes = []
    if sel.validation_size:
        notes.append(f"validation: {sel.validation_size} examples per seed"
                     + (f"; settings within {sel.resolution:.4g} of the best are tied (the choice: the one nearest "
                        f"the grid's middle)" if sel.resolution else ""))
    if sel.extensions:
        made = ", ".join(f"{e.get('key')}={e.get('value')} ({e.get('direction')})" for e in sel.extensions)
        notes.append(f"grid extended past an edge choice: {made}")
    if sel.edge:
        notes.append(f"EDGE: {sel.edge_text}")
    if sel.overlap:
        notes.append(f"reported at tuning seed(s) {','.join(map(str, sel.overlap))} (--allow-overlap): optimistic")
    return f"{head}\n{table}\n" + "".join(f"{n}\n" for n in notes)


def format_rows(records: list[Record] | list[Mapping[str, Any]]) -> str:
    """Records as one table, a row per seed, plus a mean ± 95% CI row (t over ok seeds) when there are
    several; then where the records are."""
    recs = [Record.of(r) for r in records]
    _, metrics = columns(recs)
    metrics = [m for m in metrics if any(m.name in r.metric_directions() for r in recs)]  # none when all failed
    headers = ["task", "estimator", "seed", *(m.column for m in metrics), "steps", "steps/s", "status"]
    body = [[r.task_label, r.label, r.seed, *(_fmt(r.metric(m.name)) for m in metrics),
             "-" if r.steps is None else r.steps, fmt.sig(r.steps_per_s) if r.steps_per_s else "-", r.status]
            for r in recs]
    ok = [r for r in recs if r.ok]
    if len(recs) > 1:
        cells = []
        for m in metrics:
            mean, h, n = mean_ci(r.metric(m.name) for r in ok)
            cells.append(fmt.mean_ci(mean, h) if n else fmt.MISSING)
        body.append(["mean ± 95% CI", "", f"{len(ok)}/{len(recs)} ok", *cells, "", "", ""])
    table = fmt.table(headers, body)
    if len(recs) == 1:
        r = recs[0]
        where = f"record: {r.path}  (run_id {r.run_id}, preset {r.preset})"
    else:
        folders = sorted({r.path.rsplit("/", 1)[0] for r in recs})
        where = f"records: {', '.join(folders)}  (run_ids {', '.join(r.run_id for r in recs)})"
    return f"{table}\n{where}"


# ------------------------------------------------------------------------------- show


def summary(record: Record | Mapping[str, Any]) -> str:
    """``gradbench show``: a record as sections a person can read (``--json`` gives the record itself)."""
    r = Record.of(record)
    parts = [_head(r), _configs(r), _metrics(r), _gradient(r), _cost(r), _provenance(r)]
    return "\n\n".join(p for p in parts if p)


def _kv(pairs: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={format_value(v)}" for k, v in pairs.items()) or "(none)"


def _head(r: Record) -> str:
    lines = [f"run {r.run_id}: {r.status}" + (f" ({r.path})" if r.path else "")]
    if r.error:
        lines.append(f"error: {r.error}")
    batch = f"; trained with seeds {r.seed_batch}" if r.seed_batch else ""
    lines.append(f"preset {r.preset}, seed {r.seed}{batch}, budget {_kv(r.budget or {})}, "
                 f"evaluated every {'?' if r.eval_every is None else r.eval_every} steps")
    return "\n".join(lines)


def _configs(r: Record) -> str:
    rows = [["task", f"{r.task_label} (v{r.task_version})", _kv(r.task_config)],
            ["node", r.node_kind, _kv(r.node_settings)],
            ["estimator", f"{r.label} (v{r.estimator_version}{', claims unbiased' if r.unbiased else ''})",
             _kv(r.estimator_config or {})]]
    return fmt.table(["", "name", "config"], rows, style="plain", numparse=True)


def _metrics(r: Record) -> str:
    directions = r.metric_directions(validation=True)
    if not directions:
        return ""
    main = r.main_metric
    rows = [[f"{k}{' (main)' if k == main else ''}", _fmt(r.metric(k)), "↑" if hib else "↓"]
            for k, hib in sorted(directions.items(), key=lambda kv: kv[0] != main)]
    return fmt.table(["metric", "value", "better"], rows, style="plain")


def _gradient(r: Record) -> str:
    points = r.checkpoints
    if not points:
        return "gradient statistics: not measured" if r.ok else ""
    keys = ["draws", "log10_variance", "snr", "cosine", "bias_sq", "bias_p"]
    rows = []
    for p in points:
        if p.error:
            rows.append([p.name, p.step, f"failed: {p.error}"] + [""] * (len(keys) - 1) + [""])
            continue
        rows.append([p.name, p.step, *(fmt.sig(p.stat(k)) for k in keys), p.reference])
    return "gradient statistics\n" + fmt.table(["checkpoint", "step", *keys, "reference"], rows, style="plain")


def _cost(r: Record) -> str:
    if not r.cost:
        return ""
    accel = r.accel or Accel(used="none", reason="not recorded (made before accel was recorded: eager)")
    shown = {k: fmt.sig(v) if isinstance(v, float) else v for k, v in r.cost.items() if v is not None}
    return (f"cost: {_kv(shown)}\n"
            f"execution: {accel.used} (asked: {accel.requested}): {accel.reason}")


def _provenance(r: Record) -> str:
    p = r.provenance
    sha = str(p.git_sha or "unknown")[:10] + (" (dirty)" if p.git_dirty else "")
    return (f"made by gradbench {p.gradbench_version} at {sha}, torch {p.torch}, python "
            f"{p.python}, CUDA {p.cuda}\non {p.device} ({p.device_name}, "
            f"{p.threads} threads) at {p.hostname}, {p.start_utc} to {p.end_utc}\n"
            f"command: {' '.join(p.argv)}")


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
    est = fmt.table(["estimator", "supports", "unbiased", "origin", "file"], rows, numparse=True)
    rows = []
    for entry in TASKS.entries():
        try:
            cls = TASKS.get(entry.name)
            rows.append([entry.name, cls.node_of(cls.make_config(None, "quick")).kind, ", ".join(cls.presets),
                         cls.main_metric, entry.origin, _where(cls)])
        except UsageError as e:
            rows.append([entry.name, "-", "-", "-", entry.origin, f"failed to load: {e}"])
    tasks = fmt.table(["task", "node (quick)", "presets", "main metric", "origin", "file"], rows, numparse=True)
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
    return fmt.table(["key", "type", "default", "meaning"], rows, style="plain")


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
    rows = [[name, p.description, p.steps, p.eval_every, _kv(p.config)] for name, p in cls.presets.items()]
    presets = fmt.table(["preset", "what", "steps", "eval every", "config"], rows, style="plain")
    metrics = ", ".join(f"{m} {'↑' if hib else '↓'}{' (main)' if m == cls.main_metric else ''}"
                        for m, hib in cls.metrics.items())
    node = cls.node_of(quick) if quick is not None else None
    facts = (f"node (quick): {node.kind if node else '?'} {node.shape if node else ''}; metrics: {metrics}\n"
             f"usage: --task {cls.name}:key=value,...   (defaults below are the quick preset's)")
    return f"{head}\n{facts}\n\n{config_table(cls.Config, quick)}\n\n{presets}"

