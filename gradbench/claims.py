"""The claims report of a study (``gradbench study ... --out claims.md``): per claim its dataset and budget,
how far the setting is from the paper's protocol, both sides' means with 95% CIs, the relative gain
(paired and unpaired intervals) and the absolute difference, the gain at every logged checkpoint with its
trend, the tests behind the verdict with their Holm-corrected p-values, the verdict and the rule that gave
it, and the learning curves of both sides.

A view of the results layer: it renders each claim's ``Verdict`` (``study.judge_all``); everything printed
is read from the run records; nothing here trains or chooses.
"""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path

from gradbench.budget import KINDS, budget_words
from gradbench.config import parse_spec
from gradbench.plots import curves, sides_figure
from gradbench.registry import get_task_class
from gradbench.results import Record, claim_metric, fmt
from gradbench.results.verdicts import (
    CONTRADICTED,
    INCONCLUSIVE,
    MAX_SEEDS,
    NOT_SETTLED,
    NOT_SUPPORTED,
    NOT_TESTABLE,
    RULE_TEXT,
    SHORT,
    SUPPORTED,
    Side,
    Verdict,
)
from gradbench.rules import ALPHA, budget_fraction
from gradbench.study import TUNE_BUDGETS, Claim, Plan, SidePlan, budget_check, retune_text

# The heading of a multi-profile report's verdict table; docs_tables copies the table under it into the README.
SIDE_BY_SIDE = "Verdicts side by side"
# which outcomes favour the paper most, for naming a group's most favourable reading
FAVOUR = {SUPPORTED: 0, SHORT: 1, INCONCLUSIVE: 2, NOT_SETTLED: 3, NOT_TESTABLE: 4, NOT_SUPPORTED: 5,
          CONTRADICTED: 6, None: 7}


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
    v = result.outcome
    if v is None and result.no_choice:
        return (f"Not judged: tuning found no eligible setting for {', '.join(result.no_choice)} (every "
                f"setting failed or diverged on some tuning seed; see its selection record).")
    if v is None:
        return "Not judged yet: some runs have no record (run the study again to make them)."
    reason = result.reason[:1].upper() + result.reason[1:] + "." if result.reason else ""
    if v == NOT_TESTABLE:
        return f"{reason} A setting where B is further from the bound could test it.{paper_cmd}"
    if v == NOT_SETTLED:
        return (f"Not judged by its numbers: {result.reason}. A verdict here would say more than the evidence; "
                f"a longer budget might settle it.{paper_cmd}")
    if v == INCONCLUSIVE and result.b is not None:
        n = result.seeds_to_settle
        more = (f"about {n} seeds at this budget would narrow the 98% interval enough to decide" if n else
                f"more than {MAX_SEEDS} seeds at this budget would be needed to decide")
        return f"{reason} {more}.{paper_cmd}"
    if v in (NOT_SUPPORTED, CONTRADICTED, INCONCLUSIVE):
        return f"{reason} This holds at this budget.{paper_cmd}"
    return reason


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


def _dataset(claim: Claim, res: Verdict) -> str:
    """The claim's data in words, from A's records, else (none run yet) from the task's config at the
    claim's preset: the task's dataset; a task without one is its name."""
    names = [r.task_config.get("dataset") for r in res.a.records.values()]
    if not names:
        task, values = parse_spec(claim.task)
        names = [getattr(get_task_class(task).make_config(values, res.preset), "dataset", None)]
    name = next((n for n in names if n), None)
    return fmt.dataset_text(str(name)) if name else f"synthetic (`{claim.task}`)"


def _outcome(res: Verdict) -> str:
    """The verdict, or why there is none yet: no final run made, or some still missing (a chunked study)."""
    if res.outcome:
        return res.outcome
    return "runs missing" if any(s.records for s in res.sides) else "not run"


def _setting(claim: Claim, res: Verdict) -> str:
    return f"{_dataset(claim, res)}; {_budget_text(claim, res.budget)}"


def _budget_text(claim: Claim, budget: dict) -> str:
    """The budget in words, marked as a trend when it is far below the steps the paper trained for."""
    words = budget_words(budget)
    ratio = budget_fraction(budget.get("steps") if isinstance(budget, dict) else None, claim.paper_steps)
    if ratio is not None:
        words += f" (1/{ratio:,.0f} of the paper's {claim.paper_steps:,}: a trend)"
    return words


def _measured(res: Verdict) -> tuple[str, str]:
    """(the gain with its 95% interval, the absolute difference A - B with its 95% interval)."""
    g, d = res.gain, res.difference
    if g is None:  # a level claim's figure is A's mean; a comparison not judged yet has no gain to show
        return (fmt.short_mean_ci(res.a.mean, res.a.ci95, res.a.n) if res.b is None else "—"), "—"
    gain = f"{fmt.pct(g.gain)} ({fmt.pct(g.lo)} to {fmt.pct(g.hi)})"
    diff = "—" if d is None or d.ci is None else f"{fmt.num(d.diff)} ± {d.ci:.2g}"
    return gain, diff


def _favoured(group: list[tuple[Claim, Verdict]]) -> tuple[Claim, Verdict]:
    """The reading most favourable to the paper: the best outcome, then the largest gain toward the claim."""
    def key(item: tuple[Claim, Verdict]) -> tuple[int, float]:
        _, res = item
        gain = res.gain.gain if res.gain is not None and math.isfinite(res.gain.gain) else -math.inf
        return FAVOUR.get(res.outcome, 7), -gain
    return min(group, key=key)


def _groups(results: list[tuple[Claim, Verdict]], tag: str = "") -> list[str]:
    """One line per statement of the paper read more than one way: its most favourable reading."""
    groups: dict[str, list[tuple[Claim, Verdict]]] = {}
    for claim, res in results:
        groups.setdefault(claim.group or claim.id, []).append((claim, res))
    lines = []
    for name, members in groups.items():
        if len(members) < 2:
            continue
        claim, res = _favoured(members)
        others = ", ".join(f"[{c.id}](#{c.id}{tag}) {_outcome(r)}" for c, r in members if c is not claim)
        lines.append(f"- **{name}**: read {len(members)} ways; the most favourable to the paper is "
                     f"[{claim.id}](#{claim.id}{tag}) ({claim.reading or 'as stated'}): **{_outcome(res)}** "
                     f"(the others: {others}).")
    return lines


def _tests_count(results: list[tuple[Claim, Verdict]]) -> int:
    return sum(len(res.judgment.tests) for _, res in results if res.judgment is not None)


def render(p: Plan, study_file: str, out: Path | None, argv: list[str], judged: dict[str, Verdict]) -> str:
    """The whole report (markdown) from the study's verdicts (``study.judge_all``, by claim id); with ``out``,
    the curves' PNGs go beside it, in ``<stem>-figures/``."""
    study = p.study
    lines = [f"# {study.title}", "", study.source, ""]
    lines += _profile_lines(p, study_file, out, argv, judged, level=2, tag="")
    return "\n".join(lines).rstrip() + "\n"


def render_many(plans: list[tuple[Plan, dict[str, Verdict]]], study_file: str, out: Path | None,
                argv: list[str]) -> str:
    """One report of a study under several profiles (``--profile cpu,full``): the verdicts side by side, then
    each profile's report in its own section (its claims' anchors and figures suffixed ``-<profile>``)."""
    study = plans[0][0].study
    names = [p.profile.name for p, _ in plans]
    lines = [f"# {study.title}", "", study.source, "",
             f"Made by `{' '.join(argv)}`: the study under {len(plans)} profiles "
             f"({', '.join(f'`{n}`' for n in names)}), each judged on its own (Holm's correction runs within a "
             f"profile). A verdict holds only for the data and budget beside it.", "", f"## {SIDE_BY_SIDE}", ""]
    header = ["claim", "the paper"]
    for name in names:
        header += [f"{name}: data; budget", f"{name}: gain of A (95% CI)", f"{name}: verdict"]
    rows = []
    for claim in study.claims:
        row = [claim.id, _stated(claim)]
        for p, judged in plans:
            res = judged[claim.id]
            row += [_setting(claim, res), _measured(res)[0],
                    f"[**{_outcome(res)}**](#{claim.id}-{p.profile.name})"]
        rows.append(row)
    lines += [fmt.table(header, rows, style="compact"), ""]
    for p, judged in plans:
        lines += [f"## Profile `{p.profile.name}`", ""]
        lines += _profile_lines(p, study_file, out, argv, judged, level=3, tag=f"-{p.profile.name}")
    return "\n".join(lines).rstrip() + "\n"


def _stated(claim: Claim) -> str:
    return (f"{claim.gain:+g}%" if claim.gain else f"reaches {claim.level:g}" if claim.level is not None
            else "A better")


def _profile_lines(p: Plan, study_file: str, out: Path | None, argv: list[str], judged: dict[str, Verdict],
                   level: int, tag: str) -> list[str]:
    """One profile's part of a report: how it was made, its verdict table, and a section per claim (headings
    at ``level``; ``tag``: the suffix of its claims' anchors and figure names, "" for a one-profile report)."""
    study, profile = p.study, p.profile
    h = "#" * level
    runs_dir = Path(p.runs)
    results = [(c, judged[c.id]) for c in study.claims]
    hw, commits, seconds, n_runs = _hardware([r for _, r in results])
    grid = _grid_seconds(p)
    checks = (" and budget checks'" if any(sp.check for sp in p.unique.values()) else "") + (
        " and re-tunings'" if any(sp.retune for sp in p.unique.values()) else "")
    grids = f", and the tuning grids'{checks} {grid[1]} runs {grid[0] / 60:.1f} min more" if grid[1] else ""
    tuned = any(c.budgets[profile.name].get("tune") for c in study.claims)
    tuning = f", tuning seeds {fmt.seeds_text(profile.tune_seeds)}" if tuned else ""
    made = f"Made by `{' '.join(argv)}` from" if not tag else "From"
    lines = [f"{made} the records in `{runs_dir}` (profile `{profile.name}`: "
             f"{profile.description or 'no description'}; preset `{profile.preset}`, final seeds "
             f"{fmt.seeds_text(profile.seeds)}{tuning}). The claims' final runs: "
             f"{n_runs}, made by gradbench at commit(s) {', '.join(commits) or '—'} on {hw or '—'}; their "
             f"training took {seconds / 60:.1f} min{grids} (evaluation and start-up not counted). Cells are "
             f"means ± 95% CI over seeds; A is the side the paper champions; the gain is A's, relative to B "
             f"(positive: A is better), with its paired 95% interval.", "",
             f"{h} Verdicts", ""]
    rows = []
    for claim, res in results:
        a, b = res.a, res.b
        gain, diff = _measured(res)
        rows.append([f"[{claim.id}](#{claim.id}{tag})", _setting(claim, res), _stated(claim),
                     f"{_side_name(a)} {_mean(a)}", "—" if b is None else f"{_side_name(b)} {_mean(b)}", gain, diff,
                     f"**{_outcome(res)}**"])
    lines += [fmt.table(["claim", "data; budget", "the paper", "A", "B", "gain of A (95% CI)", "A − B", "verdict"],
                        rows, style="compact", align="llllllll"), ""]
    n_tests = _tests_count(results)
    n_judged = sum(1 for _, res in results if res.judgment is not None and res.judgment.tests)
    lines += [f"Multiplicity: Holm's correction runs over the {n_tests} one-sided tests of the {n_judged} claims "
              f"judged by their numbers (claims not testable, claims whose curve has not settled, and claims still "
              f"missing runs are outside it; each verdict's tests are listed in its section). Every verdict holds "
              f"only for the data and budget in its row.", ""]
    groups = _groups(results, tag)
    lines += groups + ([""] if groups else [])
    lines += [f"{h} How a verdict is reached", "", RULE_TEXT, ""]
    figures = None if out is None else out.parent / f"{out.stem}-figures"
    for claim, res in results:
        other = {name: _claim_budget(claim, name) for name in study.profiles if name != profile.name}
        lines += _claim_section(p, claim, res, study_file, other, runs_dir, figures, out, h, tag)
    return lines


def _grid_seconds(p: Plan) -> tuple[float, int]:
    """(training seconds, runs) of the tuning grids' runs that have records."""
    found = [s.find_record(sp.options.runs) for sp in p.unique.values() if sp.tuning
             for s in [*sp.tuning.runs, *(spec for _, spec in sp.check), *(sp.retune.runs if sp.retune else [])]]
    recs = {r.run_id: r for r in found if r is not None}
    return sum(r.train_seconds for r in recs.values()), len(recs)


def _claim_budget(claim: Claim, profile: str) -> str:
    budget = {k: v for k, v in claim.budgets[profile].items() if k in KINDS}
    return _budget_text(claim, budget) if budget else "the preset's steps"


def _protocol(claim: Claim, res: Verdict) -> list[str]:
    """What differs from the paper's protocol: the paper's settings (the study file) beside ours."""
    if not claim.paper_protocol:
        return []
    rec = next(iter(res.a.records.values()), None)
    config = rec.task_config if rec is not None else {}
    chosen = res.a.chosen or {}
    ours = {"dataset": _dataset(claim, res), "data": _dataset(claim, res), "batch": config.get("batch_size"),
            "steps": budget_words(res.budget), "lr": chosen.get("lr", config.get("lr"))}
    rows = [[key, "—" if ours.get(key) is None else str(ours[key]), value]
            for key, value in claim.paper_protocol.items()]
    return ["Distance from the paper's protocol:", "",
            fmt.table(["setting", "here (A)", "the paper"], rows, style="compact"), ""]


def _tests(res: Verdict) -> list[str]:
    """The one-sided tests behind the verdict, with the three p-values and Holm's adjusted one."""
    j = res.judgment
    if j is None or not j.tests:
        return []
    level = ALPHA / 2
    rows = [[f"H0: {t.null}", t.shows, fmt.pvalue(t.p_paired), fmt.pvalue(t.p_unpaired), fmt.pvalue(t.p_sign_flip),
             fmt.pvalue(adj), ("yes" if t.shows == res.outcome or res.outcome not in (t.shows, INCONCLUSIVE)
                               else "yes, overruled") if t.rejects(adj, level) else "no"]
            for t, adj in zip(j.tests, j.adjusted, strict=True)]
    return [f"Tests (one-sided, over the paired seeds; rejecting needs the Holm-adjusted p and the sign-flip p "
            f"below {level:.0%}; \"overruled\": a side's failure forbids that outcome):", "",
            fmt.table(["null", "would show", "paired t", "Welch (paired seeds)", "sign-flip", "Holm-adjusted",
                       "rejects"], rows, style="compact", align="llrrrrl"), ""]


def _gain_curve(res: Verdict) -> list[str]:
    if not res.curve:
        return [f"Trend: {res.trend}.", ""] if res.trend else []
    what = "A's mean" if res.b is None else "gain of A"
    show = (lambda x: fmt.num(x)) if res.b is None else fmt.pct
    evals = isinstance(res.budget, dict) and "evals" in res.budget
    where = ("at the evaluation counts where both sides can be read (the side logged less often, the other "
             "interpolated)" if evals else "every logged checkpoint")
    rows = [[pt.step, show(pt.value), f"{show(pt.lo)} to {show(pt.hi)}"] for pt in res.curve]
    return [f"{what[0].upper() + what[1:]} against budget ({where}, 95% CI): {res.trend}.", "",
            fmt.table(["evals" if evals else "step", what, "95% CI"], rows, style="compact", align="rrr"), ""]


def _tuning_words(p: Plan, claim: Claim) -> str:
    """How the claim's sides were tuned and which seeds they report at, for its section's first line."""
    budget = claim.budgets[p.profile.name]
    shorter = {kind: budget[key] for key, kind in TUNE_BUDGETS.items() if key in budget}
    at = f" at {budget_words(shorter)} (shorter than the final budget; checked below)" if shorter else ""
    words = (f"; each side's settings tuned on validation over `{budget['tune']}` at seeds "
             f"{fmt.seeds_text(p.profile.tune_seeds)}{at}" if budget.get("tune") else "")
    if budget.get("seeds") is not None:
        words += f"; reported at seeds {fmt.seeds_text(budget['seeds'])} (this claim's own, not the profile's)"
    return words


def _tuning_notes(s: Side, sp: SidePlan) -> list[str]:
    """What a tuned side's report must say of its tuning: an edge choice, the budget check, a re-tuning."""
    notes = []
    edge = getattr(s.selection, "edge_text", None) if s.selection is not None else None
    if edge:
        notes.append(f"Tuning of {s.side} ({s.estimator}): {edge}")
    check = budget_check(sp)
    if check is not None:
        notes.append(f"Tuning of {s.side} ({s.estimator}): {check.text()}")
    again = retune_text(sp)
    if again:
        notes.append(f"Re-tuning of {s.side} ({s.estimator}): {again}")
    return [line for note in notes for line in (note, "")]


def _claim_section(p: Plan, claim: Claim, res: Verdict, study_file: str, other: dict[str, str],
                   runs_dir: Path, figures: Path | None, out: Path | None, h: str = "##", tag: str = "") -> list[str]:
    direction = "higher" if res.higher_is_better else "lower"
    metric = claim.metric + (f" at the {claim.checkpoint} checkpoint" if claim.on_gradient else "")
    heading = claim.id if not tag else f"{claim.id} ({tag[1:]})"  # GitHub's anchor: <id>-<profile>
    lines = [f"{h} {heading}", "", f"**{claim.title}**", "", f"> {claim.quote}", ""]
    if claim.reading:
        lines += [f"Reading: {claim.reading}.", ""]
    if claim.assumption:
        lines += [f"Assumption: {claim.assumption}", ""]
    hw, _, seconds, n_runs = _hardware([res])
    ran = f" Final runs: {n_runs} on {hw}, {seconds / 60:.1f} min of training." if n_runs else ""
    tuned = _tuning_words(p, claim)
    task_b = f" (B on `{claim.task_b}`)" if claim.task_b else ""
    data = _dataset(claim, res)
    data = "synthetic data" if data.startswith("synthetic") else data
    lines += [f"Task `{claim.task}`{task_b} on {data}, preset `{res.preset}`, budget "
              f"{_budget_text(claim, res.budget)}; metric `{metric}` ({direction} is better)"
              f"{'' if claim.bound is None else f', bound {claim.bound:g}'}{tuned}.{ran}", ""]
    lines += _protocol(claim, res)
    sides = [[s.side, _side_name(s), _mean(s), _ok(s),
              f"`{Path(s.selection.path).as_posix()}`" if s.selection else "—"] for s in res.sides]
    lines += [fmt.table(["side", "estimator", "mean ± 95% CI", "seeds", "selection record"], sides, style="compact"),
              ""]
    for s, sp in zip(res.sides, p.sides[claim.id], strict=False):
        lines += _tuning_notes(s, sp)
    g, u, d = res.gain, res.unpaired, res.difference
    if g is not None:
        unpaired = "" if u is None else (f"; unpaired over all ok seeds {fmt.pct(u.lo)} to {fmt.pct(u.hi)} "
                                         f"(two-sided Welch p = {fmt.pvalue(u.p)})")
        absolute = "" if d is None or d.ci is None else (f"; absolute difference A − B {fmt.num(d.diff)} ± "
                                                         f"{d.ci:.2g}")
        lines += [f"Gain of A over B: {fmt.pct(g.gain)} (paired 95% CI {fmt.pct(g.lo)} to {fmt.pct(g.hi)}, "
                  f"p = {fmt.pvalue(g.p)}{unpaired}){absolute}; n = {g.n} paired seeds "
                  f"({', '.join(map(str, res.paired_seeds))}).", ""]
    lines += _tests(res)
    lines += [f"**Verdict: {_outcome(res)}** ({_setting(claim, res)}). "
              f"{explain(claim, res, study_file, p.profile.name, other)}", ""]
    lines += _gain_curve(res)
    table = curve_table(runs_dir, claim, res)
    if table:
        lines += [table, ""]
    if figures is not None and res.sides and any(s.records for s in res.sides):
        key, what = _trace(claim)
        fig = sides_figure(runs_dir, {f"{s.side}: {s.estimator}": list(s.records.values()) for s in res.sides}, key,
                           f"{claim.id}: {claim.task}, {what}\nmean over ok seeds, band min..max", what,
                           figures / f"{claim.id}{tag}.png")
        if fig is not None and out is not None:
            lines += [f"![{claim.id} learning curves]({fig.relative_to(out.parent).as_posix()})", ""]
    return lines
