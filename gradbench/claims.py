"""The claims report of a study (``gradbench study ... --out claims.md``): per claim both sides' means with
95% CIs, the relative gain with its CI, the paired p-value, the budget, the hardware, the verdict with the
rule that gave it and what budget would settle it, and the learning curves of both sides.

Everything printed is read from the run records; nothing here trains or chooses.
"""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path
from typing import Any

from gradbench.plots import curves, sides_figure
from gradbench.results import Record
from gradbench.study import (
    CONTRADICTED,
    INCONCLUSIVE,
    MAX_SEEDS,
    NOT_SUPPORTED,
    SUPPORTED,
    Claim,
    Plan,
)
from gradbench.tune import find_record

RULE = f"""A claim's verdict comes from the 95% confidence interval [lo, hi] of the relative gain of A over B
(Fieller's interval over the paired seeds: every gain the paired t-test does not reject):

- **{CONTRADICTED}**: hi < 0 (B is better);
- **{NOT_SUPPORTED}**: 0 <= hi < the claimed gain (the gain is smaller than claimed);
- **{SUPPORTED}**: lo > 0 and hi >= the claimed gain (A is better, and a gain as large as claimed is not
  ruled out; the measured gain is printed beside the claim, and may be smaller);
- **{INCONCLUSIVE}**: lo <= 0 and hi >= the claimed gain (the interval holds both no gain and the claim).

A claim that states only a direction is judged by the paired t-test at 5%: {SUPPORTED} when it finds A
better, {CONTRADICTED} when it finds B better, {INCONCLUSIVE} otherwise. A level claim ("reaches 94.2%")
is {SUPPORTED} when the 95% interval of A's mean reaches the level, {NOT_SUPPORTED} otherwise.
Failures count against their side: seeds where a side failed or diverged are not paired, a level is not
reached by a seed that failed, a claim is never {SUPPORTED} while A failed or diverged on some seed nor
{CONTRADICTED} while B did (it is then {INCONCLUSIVE}, and the report says why); fewer than 2 paired seeds
is {INCONCLUSIVE}. False alarms (exact when seed-to-seed variation is normal; checked by simulation in
tests/test_study.py): a true claim is judged {NOT_SUPPORTED} or {CONTRADICTED} with probability at most
2.5%; with no true difference between A and B, {SUPPORTED} with probability at most 2.5%, and
{CONTRADICTED} likewise."""


def _pct(x: float) -> str:
    if math.isnan(x):
        return "—"
    return "unbounded" if not math.isfinite(x) else f"{100 * x:+.1f}%"


def _num(x: float | None) -> str:
    return "—" if x is None or not math.isfinite(x) else f"{x:.4g}"


def _mean(side: dict[str, Any]) -> str:
    if side["n"] == 0:
        return "—"
    return _num(side["mean"]) + ("" if side["ci95"] is None else f" ± {side['ci95']:.2g}")


def _ok(side: dict[str, Any]) -> str:
    counts = Counter(side["statuses"])
    ok = counts.pop("ok", 0)
    rest = "".join(f", {n} {st}" for st, n in sorted(counts.items()))
    return f"{ok}/{len(side['statuses'])} ok{rest}"


def _side_name(side: dict[str, Any]) -> str:
    chosen = side.get("chosen")
    return f"`{side['estimator']}`" + (" [" + ", ".join(f"{k}={v}" for k, v in chosen.items()) + "]"
                                       if chosen else "")


def _budget(budget: dict[str, Any]) -> str:
    return ", ".join(f"{v:g} {k}" if isinstance(v, (int, float)) else f"{k} {v}" for k, v in budget.items())


def explain(claim: Claim, result: dict[str, Any], study_file: str, profile: str, other: dict[str, str]) -> str:
    """One paragraph: why this verdict, and what would settle the claim."""
    v = result["verdict"]
    notes = "".join(f" ({n})" for n in result.get("notes") or [])
    return _explain(claim, result, v, paper_cmd_of(study_file, other)) + notes


def paper_cmd_of(study_file: str, other: dict[str, str]) -> str:
    return "".join(f" Under the `{p}` profile ({b}): `gradbench study {study_file} --profile {p}`."
                   for p, b in other.items())


def _explain(claim: Claim, result: dict[str, Any], v: str | None, paper_cmd: str) -> str:
    if v is None and result.get("no_choice"):
        return (f"Not judged: tuning found no eligible setting for {', '.join(result['no_choice'])} (every "
                f"setting failed or diverged on some tuning seed; see its selection record).")
    if v is None:
        return "Not judged yet: some runs have no record (run the study again to make them)."
    if claim.level is not None:
        return _explain_level(claim, result, v, paper_cmd)
    g = result["gain"]
    if g.n < 2 or not math.isfinite(g.gain):
        return "Too few seeds where both sides finished with a value."
    claimed = (claim.gain or 0.0) / 100
    stated = f"the claimed {100 * claimed:+.0f}%" if claim.gain else "a gain above 0"
    if claim.gain is None and v in (SUPPORTED, CONTRADICTED):
        return (f"The paired t-test finds {'A' if v == SUPPORTED else 'B'} better (p = {g.p:.3g}); the relative "
                f"gain of A is {_pct(g.gain)} (interval {_pct(g.lo)} to {_pct(g.hi)}).")
    if v == SUPPORTED:
        return (f"A is better by {_pct(g.gain)} (interval {_pct(g.lo)} to {_pct(g.hi)}), which does not rule out "
                f"{stated}.")
    if v == CONTRADICTED:
        return (f"B is better: the whole interval ({_pct(g.lo)} to {_pct(g.hi)}) is below 0 at this budget."
                f"{paper_cmd}")
    if v == NOT_SUPPORTED:
        upper = f"he interval's upper end {_pct(g.hi)} is below {stated} at this budget"
        better = f"A is better, but by less: t{upper}" if g.lo > 0 else f"T{upper}"
        return (f"{better}; the paper's budget would settle whether the gap grows with longer training.{paper_cmd}")
    n = result.get("seeds_to_settle")
    more = (f"about {n} seeds at this budget would make the interval narrow enough to decide" if n else
            f"more than {MAX_SEEDS} seeds at this budget would be needed to decide")
    return f"The interval ({_pct(g.lo)} to {_pct(g.hi)}) holds both no gain and {stated}; {more}.{paper_cmd}"


def _explain_level(claim: Claim, result: dict[str, Any], v: str, paper_cmd: str) -> str:
    a = result["sides"][0]
    if a["n"] == 0:
        return "No seed of A finished with a value."
    reach = a["mean"] + (a["ci95"] or 0) if result["higher_is_better"] else a["mean"] - (a["ci95"] or 0)
    if v == SUPPORTED:
        return f"A's interval reaches {claim.level:g} (its end: {reach:.4g})."
    if v == INCONCLUSIVE:
        return "Fewer than 2 ok seeds give no interval; run more seeds."
    return (f"A's interval ends at {reach:.4g}, short of the stated {claim.level:g} at this budget; the "
            f"paper's budget would settle whether longer training reaches it.{paper_cmd}")

def _history_key(claim: Claim) -> tuple[str, str]:
    if claim.metric.startswith("gradient."):
        return "grad/log10_variance", "log10 gradient variance (along training)"
    return f"test/{claim.metric}", f"test {claim.metric}"


def curve_table(runs_dir: Path, claim: Claim, result: dict[str, Any], points: int = 6) -> str:
    """The learning curves as a small table: both sides' mean over ok seeds at a few evaluation steps."""
    key, what = _history_key(claim)
    cols = []
    for side in result["sides"]:
        ok = [r for r in map(Record.of, side["records"].values()) if r.ok]
        c = curves(runs_dir, ok, key) if ok else None
        cols.append({} if c is None else dict(zip(c[0].tolist(), c[1].tolist(), strict=True)))
    steps = sorted(set().union(*cols))
    if not steps:
        return ""
    pick = sorted({steps[round(i * (len(steps) - 1) / (points - 1))] for i in range(points)})
    head = "| step | " + " | ".join(f"{s['side']}: {_side_name(s)}" for s in result["sides"]) + " |"
    rule = "|---:|" + "---:|" * len(cols)
    body = [f"| {int(x)} | " + " | ".join(_num(c.get(x)) for c in cols) + " |" for x in pick]
    return f"Learning curves ({what}, mean over ok seeds):\n\n" + "\n".join([head, rule, *body])


def _hardware(results: list[dict[str, Any]]) -> tuple[str, list[str], float, int]:
    """(hardware in words, commits that made the records, training seconds of the claims' runs, runs)."""
    recs = {r["run_id"]: r for res in results for s in res["sides"] for r in s["records"].values()}
    hw = Counter(f"{(r.get('provenance') or {}).get('device_name', '?')}, "
                 f"{(r.get('provenance') or {}).get('threads', '?')} thread(s)" for r in recs.values())
    commits = sorted({str((r.get("provenance") or {}).get("git_sha"))[:7] for r in recs.values()})
    seconds = sum(float((r.get("cost") or {}).get("train_seconds") or 0.0) for r in recs.values())
    return "; ".join(f"{k} ({n} runs)" for k, n in hw.most_common()), commits, seconds, len(recs)


def render(p: Plan, study_file: str, out: Path | None, argv: list[str], judged: dict[str, dict[str, Any]]) -> str:
    """The whole report (markdown) from each claim's ``study.judge`` result (``judged``, by claim id); with
    ``out``, the curves' PNGs go beside it, in ``<stem>-figures/``."""
    study, profile = p.study, p.profile
    runs_dir = Path(p.runs)
    results = [(c, judged[c.id]) for c in study.claims]
    hw, commits, seconds, n_runs = _hardware([r for _, r in results])
    grid = _grid_seconds(p)
    grids = f", and the tuning grids' {grid[1]} runs {grid[0] / 60:.1f} min more" if grid[1] else ""
    tuned = any(c.budgets[profile.name].get("tune") for c in study.claims)
    tuning = f", tuning seeds {_seeds(profile.tune_seeds)}" if tuned else ""
    lines = [f"# {study.title}", "", study.source, "",
             f"Made by `{' '.join(argv)}` from the records in `{runs_dir}` (profile `{profile.name}`: "
             f"{profile.description or 'no description'}; preset `{profile.preset}`, final seeds "
             f"{_seeds(profile.seeds)}{tuning}). The claims' final runs: "
             f"{n_runs}, made by gradbench at commit(s) {', '.join(commits) or '—'} on {hw or '—'}; their "
             f"training took {seconds / 60:.1f} min{grids} (evaluation and start-up not counted). Cells are "
             f"means ± 95% CI over seeds; A is the side the paper champions.", "",
             "## Verdicts", "",
             "| claim | the paper | A | B | measured | n | paired p | verdict |",
             "|---|---|---|---|---|---:|---:|---|"]
    for claim, res in results:
        a = res["sides"][0]
        b = res["sides"][1] if len(res["sides"]) > 1 else None
        stated = f"{claim.gain:+g}%" if claim.gain else (f"reaches {claim.level:g}" if claim.level is not None
                                                          else "A better")
        if "gain" in res:
            g = res["gain"]
            measured, n, pval = f"{_pct(g.gain)} ({_pct(g.lo)} to {_pct(g.hi)})", str(g.n), f"{g.p:.3g}"
        else:
            measured, n, pval = _mean(a), str(a["n"]), "—"
        lines.append(f"| [{claim.id}](#{claim.id}) | {stated} | {_side_name(a)} {_mean(a)} | "
                     f"{'—' if b is None else _side_name(b) + ' ' + _mean(b)} | {measured} | {n} | {pval} | "
                     f"**{res['verdict'] or 'not run'}** |")
    lines += ["", "## How a verdict is reached", "", RULE, ""]
    figures = None if out is None else out.parent / f"{out.stem}-figures"
    for claim, res in results:
        other = {name: _claim_budget(claim, name) for name in study.profiles if name != profile.name}
        lines += _claim_section(p, claim, res, study_file, other, runs_dir, figures, out)
    return "\n".join(lines).rstrip() + "\n"


def _grid_seconds(p: Plan) -> tuple[float, int]:
    """(training seconds, runs) of the tuning grids' runs that have records."""
    found = [find_record(sp.options.runs, s) for sp in p.unique.values() if sp.tuning
             for specs in sp.tuning.specs for s in specs]
    recs = {r["run_id"]: r for r in found if r is not None}
    return sum(float((r.get("cost") or {}).get("train_seconds") or 0.0) for r in recs.values()), len(recs)


def _claim_budget(claim: Claim, profile: str) -> str:
    budget = {k: v for k, v in claim.budgets[profile].items() if k != "tune"}
    return _budget(budget) if budget else "the preset's steps"


def _seeds(seeds: list[int]) -> str:
    return f"{seeds[0]}-{seeds[-1]}" if seeds == list(range(seeds[0], seeds[-1] + 1)) else ",".join(map(str, seeds))


def _claim_section(p: Plan, claim: Claim, res: dict[str, Any], study_file: str, other: dict[str, str],
                   runs_dir: Path, figures: Path | None, out: Path | None) -> list[str]:
    direction = "higher" if res["higher_is_better"] else "lower"
    metric = claim.metric + (f" at the {claim.checkpoint} checkpoint" if claim.metric.startswith("gradient.") else "")
    tune = claim.budgets[p.profile.name].get("tune")
    lines = [f"## {claim.id}", "", f"**{claim.title}**", "", f"> {claim.quote}", ""]
    if claim.assumption:
        lines += [f"Assumption: {claim.assumption}", ""]
    hw, _, seconds, n_runs = _hardware([res])
    ran = f" Final runs: {n_runs} on {hw}, {seconds / 60:.1f} min of training." if n_runs else ""
    lines += [f"Task `{claim.task}`, preset `{res['preset']}`, budget {_budget(res['budget'])}; metric "
              f"`{metric}` ({direction} is better)"
              + (f"; each side's settings tuned on validation over `{tune}` at seeds {_seeds(p.profile.tune_seeds)}"
                 if tune else "") + "." + ran, "",
              "| side | estimator | mean ± 95% CI | seeds | selection record |", "|---|---|---|---|---|"]
    for s in res["sides"]:
        where = f"`{Path(s['selection']['path']).as_posix()}`" if s.get("selection") else "—"
        lines.append(f"| {s['side']} | {_side_name(s)} | {_mean(s)} | {_ok(s)} | {where} |")
    lines.append("")
    if "gain" in res:
        g = res["gain"]
        lines += [f"Gain of A over B: {_pct(g.gain)} (95% CI {_pct(g.lo)} to {_pct(g.hi)}); paired t-test "
                  f"p = {g.p:.3g}; n = {g.n} paired seeds ({', '.join(map(str, res['paired_seeds']))}).", ""]
    lines += [f"**Verdict: {res['verdict'] or 'not run'}.** {explain(claim, res, study_file, p.profile.name, other)}",
              ""]
    table = curve_table(runs_dir, claim, res)
    if table:
        lines += [table, ""]
    if figures is not None and res["sides"] and any(s["records"] for s in res["sides"]):
        key, what = _history_key(claim)
        fig = sides_figure(runs_dir, {f"{s['side']}: {s['estimator']}": list(map(Record.of, s["records"].values()))
                                      for s in res["sides"]}, key,
                           f"{claim.id}: {claim.task}, {what}\nmean over ok seeds, band min..max", what,
                           figures / f"{claim.id}.png")
        if fig is not None and out is not None:
            lines += [f"![{claim.id} learning curves]({fig.relative_to(out.parent).as_posix()})", ""]
    return lines

