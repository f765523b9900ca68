"""The provenance header of a set of records, every figure counted from the records themselves (how many, by
status; seeds, presets, dates, training time; the code, machines, execution paths and estimator versions
behind the numbers; how the gradient statistics were measured), so that it cannot go stale. The
leaderboard and the HTML report print it above their tables.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

from gradbench.results import fmt
from gradbench.results.record import PATH_NAMES, Record, path_order


def _listed(values: Iterable[object]) -> str:
    found = sorted({str(v) for v in values if v not in (None, "")})
    return ", ".join(found) or "unknown"


def _unique(records: Iterable[Record]) -> list[Record]:
    """One record per run id (a tuned choice at the preset's setting is in two tables)."""
    return list({r.run_id: r for r in records}.values())


def _machines(provenance: Iterable[Any]) -> str:
    """``vm (cpu)``: each host with its CPU model or device."""
    found = sorted({f"{p.hostname or 'unknown host'} ({p.cpu_model or p.hardware or 'unknown device'})"
                    for p in provenance})
    return ", ".join(found) or "unknown"


def _when(records: list[Record]) -> str:
    """``2026-12-01 22:11 to 2026-12-02 02:10 UTC``: the runs' end times."""
    ends = sorted(r.end_utc for r in records if r.end_utc)
    if not ends:
        return "unknown"
    first, last = (e.replace("T", " ")[:16] for e in (ends[0], ends[-1]))
    return f"{first} UTC" if first == last else f"{first} to {last} UTC"


def _version_lines(records: list[Record], versions: Mapping[str, str] | None) -> list[str]:
    """``- estimator versions other than the installed: relax 2 (installed: 3, 90 records)``."""
    if not versions:
        return []
    old = Counter((r.estimator, str(r.estimator_version)) for r in records
                  if r.estimator in versions and r.estimator_version is not None
                  and str(r.estimator_version) != str(versions[r.estimator]))
    if not old:
        return ["- estimator versions: every record's is the installed one's"]
    parts = [f"{name} {v} (installed: {versions[name]}; {n} record{'s' if n != 1 else ''}, rows labelled "
             f"`(v{v})`)" for (name, v), n in sorted(old.items())]
    return [f"- estimator versions other than the installed: {', '.join(parts)}"]


def _statistics_lines(records: list[Record]) -> list[str]:
    """How the gradient statistics of the records were measured, where that changed over time."""
    ends = [r.end for r in records if r.ok and r.end is not None and r.end.reference
            and not r.end.reference.startswith("none")]
    if not ends:
        return []
    raw = sum("cosine_raw" not in c.data for c in ends)
    tested = [c for c in ends if c.stat("bias_p") is not None]
    f32 = sum(c.bias_precision == "float32" for c in tested)
    lines = [f"- gradient statistics against a reference: {len(ends)} records; "
             + (f"{raw} with the raw cosine and uncalibrated bias test of records made before the debiased "
                f"statistics" if raw else "all with the debiased cosine and the calibrated bias test")]
    if tested:
        lines.append(f"- bias tests: {len(tested)}, {f32} of them in float32 (records made before the double-precision "
                     f"bias test), {len(tested) - f32} in float64")
    return lines


def header(records: Iterable[Record], problems: Iterable[str], set_aside: Iterable[Record] = (),
            versions: Mapping[str, str] | None = None) -> str:
    """The provenance header, every figure counted from the records: how many (by status; how many are in
    the tables and how many are tuning runs summarised by a note), their seeds, presets, dates and training
    time, and the code, machines and execution paths behind the numbers."""
    shown, aside = _unique(records), _unique(set_aside)
    every = _unique([*shown, *aside])
    counts = Counter(r.status for r in every)
    detail = ", ".join(f"{counts[st]} {st}" for st in ("ok", "diverged", "failed") if counts[st])
    first = f"Built from {len(every)} run records" + (f" ({detail})" if detail else "")
    if aside:
        first += (f": {len(shown)} in the tables below and {len(aside)} tuning grid runs at settings other than the "
                  f"preset's, which the notes of the [tuned] tables summarise")
    lines = [first + "."]
    ok_records = [r for r in shown if r.ok]
    ok = [r.provenance for r in ok_records]
    if ok:
        paths = sorted({r.accel_path for r in ok_records}, key=path_order)
        hours = sum(r.train_seconds for r in ok_records) / 3600
        lines += [
            "",
            f"Numbers below come from {len(ok_records)} ok runs made with:",
            "",
            f"- seeds: {fmt.seeds_text({r.seed for r in ok_records if isinstance(r.seed, int)}) or 'unknown'}; "
            f"presets: {_listed(r.preset for r in ok_records)}",
            f"- runs ended: {_when(ok_records)}; training time: {hours:.1f} h in all",
            f"- gradbench: {_listed(p.gradbench_version for p in ok)}",
            f"- git: {_listed(p.short_sha for p in ok)}",
            f"- torch: {_listed(p.torch for p in ok)}",
            f"- devices: {_listed(p.hardware for p in ok)}",
            f"- machines: {_machines(ok)}",
            f"- execution path (steps/s): {', '.join(PATH_NAMES.get(p, p) for p in paths)}",
            *_version_lines(ok_records, versions),
            *_statistics_lines(ok_records),
        ]
    problems = list(problems)
    if problems:
        lines += ["", f"Skipped {len(problems)} unreadable record file(s):", ""]
        lines += [f"- `{p}`" for p in problems]
    return "\n".join(lines)
