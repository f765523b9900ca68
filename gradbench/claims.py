"""The claims report of a study (``gradbench study ... --out claims.md``): per claim both sides' means with
95% CIs, the relative gain with its CI, the paired p-value, the budget, the hardware, the verdict with the
rule that gave it and what budget would settle it, and the learning curves of both sides.

A view of the results layer: it renders each claim's ``Verdict`` (``study.judge``); everything printed is
read from the run records; nothing here trains or chooses.
"""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path

from gradbench.budget import budget_words
from gradbench.plots import curves, sides_figure
from gradbench.results import Record, claim_metric, fmt
from gradbench.results.verdicts import (
    CONTRADICTED,
    INCONCLUSIVE,
    MAX_SEEDS,
    NOT_SUPPORTED,
    RULE_TEXT,
    SUPPORTED,
    Side,
    Verdict,
)
from gradbench.study import Claim, Plan


def _ok(side: Side) -> str:
    counts = Counter(side.statuses)
    ok = counts.pop("ok", 0)
    rest = "".join(f", {n} {st}" for st, n in sorted(counts.items()))
    return f"{ok}/{len(side.statuses)} ok{rest}"


def _mean(side: Side) -> str:
    return fmt.short_mean_ci(side.mean, side.ci95, side.n)


def _side_name(side: Side) -> str:
    return f"`{side.estimator}`" + (f" [{fmt.values_text(side.chosen)}]" if side.chosen else "")


def explain(claim: Claim, result: Verdict, study_file: str, profile: str, other: dict[str, str]) -> str:
    """One paragraph: why this verdict, and what would settle the claim."""
    notes = "".join(f" ({n})" for n in result.notes)
    return _explain(claim, result, paper_cmd_of(study_file, other)) + notes


def paper_cmd_of(study_file: str, other: dict[str, str]) -> str:
    return "".join(f" Under the `{p}` profile ({b}): `gradbench study {study_file} --profile {p}`."
                   for p, b in other.items())


def _explain(claim: Claim, result: Verdict, paper_cmd: str) -> str:
    v, pct = result.outcome, fmt.pct
    if v is None and result.no_choice:
        return (f"Not judged: tuning found no eligible setting for {', '.join(result.no_choice)} (every "
                f"setting failed or diverged on some tuning seed; see its selection record).")
    if v is None:
        return "Not judged yet: some runs have no record (run the study again to make them)."
    if claim.level is not None:
        return _explain_level(claim, result, v, paper_cmd)
    g = result.gain
    if g is None or g.n < 2 or not math.isfinite(g.gain):
        return "Too few seeds where both sides finished with a value."
    claimed = claim.statement.claimed
    stated = f"the claimed {100 * claimed:+.0f}%" if claim.gain else "a gain above 0"
    if claim.gain is None and v in (SUPPORTED, CONTRADICTED):
        return (f"The paired t-test finds {'A' if v == SUPPORTED else 'B'} better (p = {fmt.pvalue(g.p)}); the "
                f"relative gain of A is {pct(g.gain)} (interval {pct(g.lo)} to {pct(g.hi)}).")
    if v == SUPPORTED:
        return (f"A is better by {pct(g.gain)} (interval {pct(g.lo)} to {pct(g.hi)}), which does not rule out "
                f"{stated}.")
    if v == CONTRADICTED:
        return f"B is better: the whole interval ({pct(g.lo)} to {pct(g.hi)}) is below 0 at this budget.{paper_cmd}"
    if v == NOT_SUPPORTED:
        upper = f"he interval's upper end {pct(g.hi)} is below {stated} at this budget"
        better = f"A is better, but by less: t{upper}" if g.lo > 0 else f"T{upper}"
        return f"{better}; the paper's budget would settle whether the gap grows with longer training.{paper_cmd}"
    n = result.seeds_to_settle
    more = (f"about {n} seeds at this budget would make the interval narrow enough to decide" if n else
            f"more than {MAX_SEEDS} seeds at this budget would be needed to decide")
    return f"The interval ({pct(g.lo)} to {pct(g.hi)}) holds both no gain and {stated}; {more}.{paper_cmd}"


def _explain_level(claim: Claim, result: Verdict, v: str, paper_cmd: str) -> str:
    a = result.a
    if a.n == 0:
        return "No seed of A finished with a value."
    reach = a.mean + (a.ci95 or 0) if result.higher_is_better else a.mean - (a.ci95 or 0)
    if v == SUPPORTED:
        return f"A's interval reaches {claim.level:g} (its end: {reach:.4g})."
    if v == INCONCLUSIVE:
        return "Fewer than 2 ok seeds give no interval; run more seeds."
    return (f"A's interval ends at {reach:.4g}, short of the stated {claim.level:g} at this budget; the "
            f"paper's budget would settle whether longer training reaches it.{paper_cmd}")


def _trace(claim: Claim) -> tuple[str, str]:
    """(history column, what it is) of the claim's learning curves."""
    return claim_metric(claim.metric).trace


def curve_table(runs_dir: Path, claim: Claim, result: Verdict, points: int = 6) -> str:
    """The learning curves as a small table: both sides' mean over ok seeds at a few evaluation steps."""
    key, what = _trace(claim)
    cols = []
    for side in result.sides:
        ok = [r for r in side.records.values() if r.ok]
        c = curves(runs_dir, ok, key) if ok else None
        cols.append({} if c is None else dict(zip(c[0].tolist(), c[1].tolist(), strict=True)))
    steps = sorted(set().union(*cols))
    if not steps:
        return ""
    pick = sorted({steps[round(i * (len(steps) - 1) / (points - 1))] for i in range(points)})
    body = [[int(x), *(fmt.num(c.get(x)) for c in cols)] for x in pick]
    table = fmt.table(["step", *(f"{s.side}: {_side_name(s)}" for s in result.sides)], body, style="compact",
                      align=["r"] * (len(cols) + 1))
    return f"Learning curves ({what}, mean over ok seeds):\n\n{table}"


def _hardware(results: list[Verdict]) -> tuple[str, list[str], float, int]:
    """(hardware in words, commits that made the records, training seconds of the claims' runs, runs)."""
    recs = {r.run_id: r for res in results for s in res.sides for r in s.records.values()}
    return _described(recs)


def _described(recs: dict[str, Record]) -> tuple[str, list[str], float, int]:
    provs = [r.provenance for r in recs.values()]
    hw = Counter(f"{p.device_name or '?'}, {p.threads or '?'} thread(s)" for p in provs)
    commits = sorted({p.short_sha for p in provs})
    seconds = sum(r.train_seconds for r in recs.values())
    return "; ".join(f"{k} ({n} runs)" for k, n in hw.most_common()), commits, seconds, len(recs)


def render(p: Plan, study_file: str, out: Path | None, argv: list[str], judged: dict[str, Verdict]) -> str:
    """The whole report (markdown) from each claim's ``study.judge`` verdict (``judged``, by claim id); with
    ``out``, the curves' PNGs go beside it, in ``<stem>-figures/``."""
    study, profile = p.study, p.profile
    runs_dir = Path(p.runs)
    results = [(c, judged[c.id]) for c in study.claims]
    hw, commits, seconds, n_runs = _hardware([r for _, r in results])
    grid = _grid_seconds(p)
    grids = f", and the tuning grids' {grid[1]} runs {grid[0] / 60:.1f} min more" if grid[1] else ""
    tuned = any(c.budgets[profile.name].get("tune") for c in study.claims)
    tuning = f", tuning seeds {fmt.seeds_text(profile.tune_seeds)}" if tuned else ""
    lines = [f"# {study.title}", "", study.source, "",
             f"Made by `{' '.join(argv)}` from the records in `{runs_dir}` (profile `{profile.name}`: "
             f"{profile.description or 'no description'}; preset `{profile.preset}`, final seeds "
             f"{fmt.seeds_text(profile.seeds)}{tuning}). The claims' final runs: "
             f"{n_runs}, made by gradbench at commit(s) {', '.join(commits) or '—'} on {hw or '—'}; their "
             f"training took {seconds / 60:.1f} min{grids} (evaluation and start-up not counted). Cells are "
             f"means ± 95% CI over seeds; A is the side the paper champions.", "",
             "## Verdicts", ""]
    rows = []
    for claim, res in results:
        a, b = res.a, res.b
        stated = f"{claim.gain:+g}%" if claim.gain else (f"reaches {claim.level:g}" if claim.level is not None
                                                          else "A better")
        g = res.gain
        if g is not None:
            measured, n, pval = f"{fmt.pct(g.gain)} ({fmt.pct(g.lo)} to {fmt.pct(g.hi)})", str(g.n), fmt.pvalue(g.p)
        else:
            measured, n, pval = _mean(a), str(a.n), "—"
        rows.append([f"[{claim.id}](#{claim.id})", stated, f"{_side_name(a)} {_mean(a)}",
                     "—" if b is None else f"{_side_name(b)} {_mean(b)}", measured, n, pval,
                     f"**{res.outcome or 'not run'}**"])
    lines += [fmt.table(["claim", "the paper", "A", "B", "measured", "n", "paired p", "verdict"], rows,
                        style="compact", align="lllllrrl"), ""]
    lines += ["## How a verdict is reached", "", RULE_TEXT, ""]
    figures = None if out is None else out.parent / f"{out.stem}-figures"
    for claim, res in results:
        other = {name: _claim_budget(claim, name) for name in study.profiles if name != profile.name}
        lines += _claim_section(p, claim, res, study_file, other, runs_dir, figures, out)
    return "\n".join(lines).rstrip() + "\n"


def _grid_seconds(p: Plan) -> tuple[float, int]:
    """(training seconds, runs) of the tuning grids' runs that have records."""
    found = [s.find_record(sp.options.runs) for sp in p.unique.values() if sp.tuning for s in sp.tuning.runs]
    recs = {r.run_id: r for r in found if r is not None}
    return sum(r.train_seconds for r in recs.values()), len(recs)


def _claim_budget(claim: Claim, profile: str) -> str:
    budget = {k: v for k, v in claim.budgets[profile].items() if k != "tune"}
    return budget_words(budget) if budget else "the preset's steps"


def _claim_section(p: Plan, claim: Claim, res: Verdict, study_file: str, other: dict[str, str],
                   runs_dir: Path, figures: Path | None, out: Path | None) -> list[str]:
    direction = "higher" if res.higher_is_better else "lower"
    metric = claim.metric + (f" at the {claim.checkpoint} checkpoint" if claim.on_gradient else "")
    tune = claim.budgets[p.profile.name].get("tune")
    lines = [f"## {claim.id}", "", f"**{claim.title}**", "", f"> {claim.quote}", ""]
    if claim.assumption:
        lines += [f"Assumption: {claim.assumption}", ""]
    hw, _, seconds, n_runs = _hardware([res])
    ran = f" Final runs: {n_runs} on {hw}, {seconds / 60:.1f} min of training." if n_runs else ""
    tuned = (f"; each side's settings tuned on validation over `{tune}` at seeds "
             f"{fmt.seeds_text(p.profile.tune_seeds)}" if tune else "")
    lines += [f"Task `{claim.task}`, preset `{res.preset}`, budget {budget_words(res.budget)}; metric "
              f"`{metric}` ({direction} is better){tuned}.{ran}", ""]
    sides = [[s.side, _side_name(s), _mean(s), _ok(s),
              f"`{Path(s.selection.path).as_posix()}`" if s.selection else "—"] for s in res.sides]
    lines += [fmt.table(["side", "estimator", "mean ± 95% CI", "seeds", "selection record"], sides, style="compact"),
              ""]
    g = res.gain
    if g is not None:
        lines += [f"Gain of A over B: {fmt.pct(g.gain)} (95% CI {fmt.pct(g.lo)} to {fmt.pct(g.hi)}); paired t-test "
                  f"p = {fmt.pvalue(g.p)}; n = {g.n} paired seeds ({', '.join(map(str, res.paired_seeds))}).", ""]
    lines += [f"**Verdict: {res.outcome or 'not run'}.** {explain(claim, res, study_file, p.profile.name, other)}",
              ""]
    table = curve_table(runs_dir, claim, res)
    if table:
        lines += [table, ""]
    if figures is not None and res.sides and any(s.records for s in res.sides):
        key, what = _trace(claim)
        fig = sides_figure(runs_dir, {f"{s.side}: {s.estimator}": list(s.records.values()) for s in res.sides}, key,
                           f"{claim.id}: {claim.task}, {what}\nmean over ok seeds, band min..max", what,
                           figures / f"{claim.id}.png")
        if fig is not None and out is not None:
            lines += [f"![{claim.id} learning curves]({fig.relative_to(out.parent).as_posix()})", ""]
    return lines
