"""Studies: a paper's claims as one TOML file, run under gradbench's protocol and judged by a stated rule.

A study file (``studies/*.toml``, format in docs/studies.md) names its profiles (``cpu``: the whole study
in about an hour on a 2-core machine; ``paper``: the paper's budgets, for a GPU) and its claims. Each claim
names a task setting, side A (the estimator the paper champions) and, for a comparison, side B, the metric,
and what the paper states: a relative gain in % (``gain = 25``), a level (``level = 0.942``), or only a
direction (neither). Per profile a claim gives its budget and, optionally, a tuning grid: each side is
then tuned on validation exactly as ``gradbench tune`` does (same specs, same selection records), and
reported at the profile's seeds.

Everything runs through the sweep machinery (resumable, sharded, local pool or Ray): first every tuning
grid and every untuned side, then, as their records come in, what they ask for (a grid's extension, a
budget check, a re-tuning, the tuned sides' final runs). Claims that share a side share its runs.

Each claim is judged by ``judge``: it reads the sides' final records through the results layer and
returns a ``Verdict`` (``gradbench.results.verdicts``, where the rules and their false-alarm rates are
stated), which the claims report (``gradbench.claims``) renders.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from gradbench.budget import KINDS, budget_words, check_budget
from gradbench.errors import UnsupportedError, UsageError
from gradbench.protocol import VALID_PREFIX
from gradbench.results import CLAIM_GRADIENT, GRADIENT, GRADIENT_PREFIX, Record, Selection, claim_metric
from gradbench.results.fmt import grid_text, values_text
from gradbench.results.verdicts import Side, Statement, Verdict, conclude_all, gain_curve
from gradbench.spec import RunOptions, RunSpec, resolve
from gradbench.sweep import Grid, parse_seeds, todo
from gradbench.training import checkpoint_label
from gradbench.tune import EXTEND_LIMIT, Tuning, count_failed, default_tune_metric, parse_grid, tied, write_selection

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

STUDY_KEYS = {"name", "title", "source", "runs", "profiles", "claims"}
PROFILE_KEYS = {"description", "preset", "seeds", "tune_seeds", "device", "grad_checkpoints", "grad_draws"}
CLAIM_KEYS = {"id", "title", "quote", "assumption", "task", "a", "b", "metric", "gain", "level", "checkpoint", "bound",
              "group", "reading", "task_b", "paper_protocol", "tune_metric", "paper_steps"}
BUDGET_KEYS = {*KINDS, "tune", "extend", "tune_steps", "tune_evals", "seeds", "preset"}
TUNE_BUDGETS = {"tune_steps": "steps", "tune_evals": "evals"}  # a shorter tuning budget, of the final's kind


@dataclass(frozen=True)
class Profile:
    name: str
    description: str
    preset: str
    seeds: list[int]
    tune_seeds: list[int]
    device: str = "auto"
    grad_checkpoints: tuple[float, ...] = (1.0,)
    grad_draws: int | None = None


@dataclass(frozen=True)
class Claim:
    id: str
    title: str
    quote: str  # what the paper says, in its words
    assumption: str  # what we had to assume (e.g. the baseline the paper does not name)
    task: str
    a: str
    b: str | None  # None: a level claim about A alone
    metric: str  # a test metric of the task, or gradient.<field>
    gain: float | None  # the relative gain the paper states, in % (None: only a direction)
    level: float | None  # the level the paper states A reaches, in the metric's units
    checkpoint: str  # which gradient checkpoint a gradient.<field> metric reads
    budgets: dict[str, dict[str, Any]]  # profile -> {steps|evals|seconds: N, tune: grid text}
    bound: float | None = None  # the metric's bound in its better direction (accuracy: 1): can the gain exist?
    group: str = ""  # claims that are readings of one statement of the paper share a group
    reading: str = ""  # which reading of the paper's statement this claim is
    task_b: str | None = None  # side B's task setting, when it differs from A's (a reading on another node)
    paper_protocol: dict[str, str] = field(default_factory=dict)  # the paper's data, image size, batch, steps, lr
    tune_metric: str | None = None  # what a tuned side is chosen on (its validation version); None: the metric's
    paper_steps: int | None = None  # the steps the paper trained for: a budget far below them shows a trend

    @property
    def sides(self) -> list[str]:
        return [self.a] if self.b is None else [self.a, self.b]

    @property
    def side_tasks(self) -> list[str]:
        """Each side's task setting, A first."""
        return [self.task] if self.b is None else [self.task, self.task_b or self.task]

    @property
    def statement(self) -> Statement:
        """What the paper states, as the verdict rules read it."""
        return Statement(self.gain, self.level, self.bound, self.paper_steps)

    @property
    def on_gradient(self) -> bool:
        """Whether the metric is a gradient statistic (``gradient.<statistic>`` at ``checkpoint``)."""
        return self.metric.startswith(GRADIENT_PREFIX)


@dataclass(frozen=True)
class Study:
    path: Path
    name: str
    title: str
    source: str
    runs: str
    profiles: dict[str, Profile]
    claims: list[Claim]


def _bad(where: str, message: str) -> UsageError:
    return UsageError(f"{where}: {message}")


def _check_keys(where: str, table: Any, known: set[str]) -> dict[str, Any]:
    if not isinstance(table, dict):
        raise _bad(where, f"expected a table, got {type(table).__name__}")
    unknown = sorted(set(table) - known)
    if unknown:
        raise _bad(where, f"unknown key {unknown[0]!r} (known: {', '.join(sorted(known))})")
    return table


def _str(where: str, table: dict[str, Any], key: str, default: str | None = None) -> str:
    value = table.get(key, default)
    if not isinstance(value, str) or (default is None and not value.strip()):
        raise _bad(where, f"{key!r} must be a non-empty string" if key in table or default is None
                   else f"{key!r} is required")
    return value


def _number(where: str, table: dict[str, Any], key: str) -> float | None:
    value = table.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise _bad(where, f"{key!r} must be a number, got {value!r}")
    return float(value)


def _profile(where: str, name: str, table: Any) -> Profile:
    t = _check_keys(where, table, PROFILE_KEYS)
    points = t.get("grad_checkpoints", [1.0])
    if not isinstance(points, list) or not points or not all(
            isinstance(p, (int, float)) and not isinstance(p, bool) and 0 <= p <= 1 for p in points):
        raise _bad(where, f"'grad_checkpoints' must be a list of fractions in [0, 1], got {points!r}")
    draws = t.get("grad_draws")
    if draws is not None and (isinstance(draws, bool) or not isinstance(draws, int) or draws < 2):
        raise _bad(where, f"'grad_draws' must be an integer >= 2, got {draws!r}")
    try:
        seeds = parse_seeds(_str(where, t, "seeds"))
        tune_seeds = parse_seeds(_str(where, t, "tune_seeds")) if "tune_seeds" in t else []
    except UsageError as e:
        raise _bad(where, str(e).replace("--seeds", "seeds")) from None
    _disjoint_seeds(where, seeds, tune_seeds, "'seeds' and 'tune_seeds' share")
    return Profile(name, _str(where, t, "description", ""), _str(where, t, "preset"), seeds, tune_seeds,
                   _str(where, t, "device", "auto"), tuple(float(p) for p in points), draws)


def _disjoint_seeds(where: str, seeds: list[int], tune_seeds: list[int], what: str) -> None:
    """Refuse final seeds that are also tuning seeds: a setting's run at a seed it was chosen on reports an
    optimistic test score."""
    shared = sorted(set(seeds) & set(tune_seeds))
    if shared:
        raise _bad(where, f"{what} seed(s) {','.join(map(str, shared))}: the final runs must not be tuning runs; "
                          f"give disjoint seeds (e.g. tune_seeds = \"0-2\", seeds = \"3-10\")")


def _budget(where: str, table: Any, profile: Profile) -> dict[str, Any]:
    t = _check_keys(where, table, BUDGET_KEYS)
    try:
        check_budget(t, name=repr)
    except UsageError as e:
        raise _bad(where, str(e)) from None
    if "tune" in t:
        parse_grid(_str(where, t, "tune"))
    extend = t.get("extend")
    if extend is not None and (isinstance(extend, bool) or not isinstance(extend, int) or extend < 0):
        raise _bad(where, f"'extend' must be an integer >= 0 (grid extensions each way), got {extend!r}")
    if "preset" in t:
        _str(where, t, "preset")
    if "seeds" in t:  # a claim's own final seeds under this profile (fewer, for a costly claim)
        try:
            t = {**t, "seeds": parse_seeds(_str(where, t, "seeds"))}
        except UsageError as e:
            raise _bad(where, str(e).replace("--seeds", "seeds")) from None
        _disjoint_seeds(where, t["seeds"], profile.tune_seeds, "'seeds' and the profile's tune_seeds share")
    _tune_budget(where, t)
    return dict(t)


def _tune_budget(where: str, t: dict[str, Any]) -> None:
    """A shorter tuning budget (``tune_steps`` / ``tune_evals``): positive, of the final budget's kind, no longer."""
    for key, kind in TUNE_BUDGETS.items():
        if key not in t:
            continue
        value = t[key]
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise _bad(where, f"{key!r} must be a positive integer, got {value!r}")
        if "tune" not in t or kind not in t:
            raise _bad(where, f"{key!r} is a shorter tuning budget: it needs 'tune' and a final budget of "
                              f"{kind!r}")
        if value >= t[kind]:
            raise _bad(where, f"{key!r} ({value}) is not shorter than the final budget ({kind} = {t[kind]}); "
                              f"to tune at the final budget, leave {key!r} out")


def _claim(where: str, table: Any, profiles: dict[str, Profile]) -> Claim:
    t = _check_keys(where, table, CLAIM_KEYS | set(profiles))
    cid = _str(where, t, "id")
    if not re.fullmatch(r"[a-z0-9][a-z0-9-]*", cid):
        raise _bad(where, f"'id' must be lowercase letters, digits and dashes, got {cid!r}")
    where = f"{where} ({cid})"
    gain, level = _number(where, t, "gain"), _number(where, t, "level")
    b = t.get("b")
    if b is not None and not (isinstance(b, str) and b.strip()):
        raise _bad(where, f"'b' must be an estimator spec, got {b!r}")
    if level is not None and (gain is not None or b is not None):
        raise _bad(where, "a 'level' claim is about side A alone: give no 'b' and no 'gain'")
    if level is None and b is None:
        raise _bad(where, "give side 'b' to compare with, or a 'level' that side A reaches")
    if gain is not None and gain <= 0:
        raise _bad(where, f"'gain' is the relative gain in % the paper claims for A, > 0; got {gain:g}")
    missing = sorted(set(profiles) - set(t))
    if missing:
        raise _bad(where, f"no budget for profile {missing[0]!r} (a table [claims.{missing[0]}] with steps, "
                          f"evals or seconds, and optionally tune)")
    protocol = t.get("paper_protocol", {})
    if not isinstance(protocol, dict) or not all(isinstance(v, (str, int, float)) for v in protocol.values()):
        raise _bad(where, "'paper_protocol' must be a table of the paper's settings (dataset = \"...\", batch = 1024)")
    paper_steps = t.get("paper_steps")
    if paper_steps is not None and (type(paper_steps) is not int or paper_steps < 1):
        raise _bad(where, f"'paper_steps' is how many steps the paper trained for, a positive integer; "
                          f"got {paper_steps!r}")
    task_b = t.get("task_b")
    if task_b is not None and (b is None or not isinstance(task_b, str) or not task_b.strip()):
        raise _bad(where, "'task_b' is side B's task setting: a string, with a side 'b'")
    return Claim(cid, _str(where, t, "title"), _str(where, t, "quote"), _str(where, t, "assumption", ""),
                 _str(where, t, "task"), _str(where, t, "a"), b, _str(where, t, "metric"), gain, level,
                 _str(where, t, "checkpoint", "end"),
                 {p: _budget(f"{where} [{p}]", t[p], profiles[p]) for p in profiles}, bound=_number(where, t, "bound"),
                 group=_str(where, t, "group", cid), reading=_str(where, t, "reading", ""), task_b=task_b,
                 paper_protocol={str(k): str(v) for k, v in protocol.items()},
                 tune_metric=_str(where, t, "tune_metric") if "tune_metric" in t else None, paper_steps=paper_steps)


def load_study(path: str | Path) -> Study:
    """Read and check a study file; every problem is a one-line UsageError naming the file and the place."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise UsageError(f"no study file {str(path)!r}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"cannot read study file {str(path)!r}: {e}") from None
    except tomllib.TOMLDecodeError as e:
        raise UsageError(f"{path}: not valid TOML: {e}") from None
    _check_keys(str(path), data, STUDY_KEYS)
    profiles_table = _check_keys(f"{path} [profiles]", data.get("profiles", {}), set(data.get("profiles", {})))
    if not profiles_table:
        raise _bad(str(path), "no [profiles.NAME] table (e.g. [profiles.cpu])")
    clash = sorted(set(profiles_table) & CLAIM_KEYS)
    if clash:
        raise _bad(f"{path} [profiles]", f"a profile cannot be named {clash[0]!r} (a claim key)")
    profiles = {name: _profile(f"{path} [profiles.{name}]", name, t) for name, t in profiles_table.items()}
    claims_list = data.get("claims")
    if not isinstance(claims_list, list) or not claims_list:
        raise _bad(str(path), "no claims: add [[claims]] tables")
    claims = [_claim(f"{path} claim {i + 1}", t, profiles) for i, t in enumerate(claims_list)]
    ids = [c.id for c in claims]
    dup = next((i for i in ids if ids.count(i) > 1), None)
    if dup:
        raise _bad(str(path), f"claim id {dup!r} given twice")
    return Study(path, _str(str(path), data, "name"), _str(str(path), data, "title"),
                 _str(str(path), data, "source", ""), _str(str(path), data, "runs", "runs"), profiles, claims)


def only_claims(study: Study, ids: str | None) -> Study:
    """The study with only the claims ``ids`` names (comma-separated; None: all), in the file's order; a
    UsageError names an id the file does not have."""
    if ids is None:
        return study
    wanted = [i.strip() for i in ids.split(",") if i.strip()]
    known = [c.id for c in study.claims]
    unknown = [i for i in wanted if i not in known]
    if unknown or not wanted:
        raise UsageError(f"{study.path}: no claim {unknown[0] if unknown else ids!r} (known: {', '.join(known)})")
    return replace(study, claims=[c for c in study.claims if c.id in wanted])


# ------------------------------------------------------------------------------------------- plan


@dataclass
class SidePlan:
    """One side of a claim under a profile: its fixed runs, or its tuning (and, once chosen, its finals).

    A side tuned at a shorter budget than its final one (``shorter``) reports its choice only once the
    budget check upholds it (``holds``); where the check does not, the side is re-tuned at the final budget
    (``retune``), and the re-tuning's choice is what it reports."""

    task: str
    estimator: str
    options: RunOptions
    fixed: list[RunSpec]  # an untuned side's runs at the profile's seeds (empty for a tuned side)
    tuning: Tuning | None = None
    selection: dict[str, Any] | None = None  # the selection record of the choice reported, once written
    final_seeds: list[int] = field(default_factory=list)  # the seeds the side is reported at
    shorter: bool = False  # tuned at a shorter budget: the choice is re-checked at the final one
    holds: bool | None = None  # the budget check's outcome (``choose_side``); None: not known yet
    retune: Tuning | None = None  # the check failed: the side's tuning at the final budget (``retune``)

    @property
    def check(self) -> list[tuple[int, RunSpec]]:
        """Tuned at a shorter budget and decided: (point index, run) of the chosen point and its neighbours at
        the final budget on the first tuning seed (``Tuning.budget_check``); else empty."""
        if self.tuning is None or not self.shorter or not self.tuning.decided or self.tuning.choice is None:
            return []
        return self.tuning.budget_check(self.options)

    @property
    def reported(self) -> Tuning | None:
        """The tuning whose choice the side reports: the re-tuning where there is one, else the tuning."""
        return self.retune or self.tuning

    @property
    def pending(self) -> bool:
        """A tuned side whose final runs are not known yet: its grid, its budget check or its re-tuning
        has runs without records."""
        t = self.reported
        if t is None:
            return False
        if not t.decided:
            return True
        return t.choice is not None and self.retune is None and self.shorter and self.holds is None

    @property
    def waits_on(self) -> str:
        """What a pending side's final runs wait on, in words ("" when not pending)."""
        if not self.pending:
            return ""
        if self.retune is not None:
            return "its re-tuning at the final budget"
        return "its budget check" if self.tuning is not None and self.tuning.decided else "its tuning grid"

    @property
    def finals(self) -> list[RunSpec]:
        """The runs the claim reads: the fixed ones, or the reported choice's (empty until known, and when no
        setting was eligible)."""
        if self.tuning is None:
            return self.fixed
        return [] if self.pending else self.reported.final

    @property
    def chosen(self) -> dict[str, str] | None:
        """The setting reported: the re-tuning's choice where there is one, else the tuning's (None while the
        side is pending)."""
        return None if self.reported is None or self.pending else self.reported.chosen

    @property
    def runs(self) -> list[RunSpec]:
        """What runs first: the tuning grid, or the fixed runs."""
        return self.tuning.runs if self.tuning is not None else self.fixed

    @property
    def known_runs(self) -> list[RunSpec]:
        """Every run the records so far ask for: the first runs, the budget check's, the re-tuning's, the
        finals."""
        return [*self.runs, *(spec for _, spec in self.check), *(self.retune.runs if self.retune else []),
                *self.finals]

    def records(self) -> dict[int, Record | None]:
        """seed -> the side's final record (None: not run yet)."""
        return {spec.seed: spec.find_record(self.options.runs) for spec in self.finals}


@dataclass
class Plan:
    study: Study
    profile: Profile
    runs: str  # the records folder of every run
    options: dict[str, RunOptions]  # claim id -> its run options (budget, gradient statistics, folder)
    sides: dict[str, list[SidePlan]]  # claim id -> its sides, A first
    unique: dict[tuple[Any, ...], SidePlan] = field(default_factory=dict)  # sides shared by claims
    higher_is_better: dict[str, bool] = field(default_factory=dict)  # claim id -> its metric's direction
    device: str | None = None  # the device asked for (None: the profile's)


def metric_direction(claim: Claim, spec: RunSpec) -> bool:
    """Whether higher is better for the claim's metric, or a UsageError naming what the task has."""
    if claim.on_gradient:
        name = claim.metric.removeprefix(GRADIENT_PREFIX)
        if name not in CLAIM_GRADIENT:
            raise UsageError(f"claim {claim.id!r}: unknown gradient statistic {name!r} "
                             f"(known: {', '.join(CLAIM_GRADIENT)})")
        return bool(GRADIENT[name].higher_is_better)
    metrics = spec.task_cls.metrics
    if claim.metric.startswith(VALID_PREFIX) or claim.metric not in metrics:
        known = [m for m in metrics if not m.startswith(VALID_PREFIX)]
        raise UsageError(f"claim {claim.id!r}: task {spec.task_cls.name!r} has no test metric {claim.metric!r} "
                         f"(known: {', '.join(known)}, or gradient.<statistic>); claims are judged on test metrics")
    return bool(metrics[claim.metric])


def plan(study: Study, profile_name: str, runs: str | None = None, device: str | None = None) -> Plan:
    """Resolve every claim's sides under the profile (one-line UsageError on a bad task, estimator,
    metric, checkpoint or grid). Nothing is read from the records folder yet (``missing`` does that)."""
    if profile_name not in study.profiles:
        raise UsageError(f"{study.path}: no profile {profile_name!r} (known: {', '.join(study.profiles)})")
    profile = study.profiles[profile_name]
    result = Plan(study, profile, runs or study.runs, {}, {}, device=device)
    for claim in study.claims:
        budget = claim.budgets[profile_name]
        opts = RunOptions(steps=budget.get("steps"), evals=budget.get("evals"), seconds=budget.get("seconds"),
                          grad_checkpoints=profile.grad_checkpoints, grad_draws=profile.grad_draws,
                          device=device or profile.device, runs=result.runs, progress=False)
        result.options[claim.id] = opts
        result.sides[claim.id] = []
        for side, task in zip(claim.sides, claim.side_tasks, strict=True):
            try:
                sp = _side(result, claim, task, side, budget.get("tune"), opts)
            except (UsageError, UnsupportedError) as e:
                raise UsageError(f"{study.path}: claim {claim.id!r}, side {side!r}: {e}") from None
            result.sides[claim.id].append(sp)
        result.higher_is_better[claim.id] = metric_direction(claim, result.sides[claim.id][0].runs[0])
        names = [checkpoint_label(f) for f in profile.grad_checkpoints]
        if claim.on_gradient and claim.checkpoint not in names:
            raise UsageError(f"{study.path}: claim {claim.id!r}: checkpoint {claim.checkpoint!r} is not one of "
                             f"profile {profile.name!r}'s gradient checkpoints ({', '.join(names)})")
    return result


def tuned_on(claim: Claim, task: str) -> str | None:
    """The metric a claim's tuned sides are chosen on, as ``Tuning.resolve`` takes it: ``tune_metric``, else
    the validation version of the claim's own metric (``valid_probe_accuracy``) when the task records it,
    else None: the task's main metric (a gradient statistic has no validation version)."""
    if claim.tune_metric is not None:
        return claim.tune_metric
    if claim.on_gradient:
        return None
    return default_tune_metric(task, claim.metric)


def claim_preset(p: Plan, claim: Claim) -> str:
    """The task preset a claim runs at under the plan's profile: its own ``preset``, else the profile's."""
    return str(claim.budgets[p.profile.name].get("preset", p.profile.preset))


def _side(p: Plan, claim: Claim, task: str, estimator: str, grid_text: str | None, opts: RunOptions) -> SidePlan:
    budget = claim.budgets[p.profile.name]
    shorter = {kind: budget[key] for key, kind in TUNE_BUDGETS.items() if key in budget}
    tuned = ((tuned_on(claim, task), budget.get("extend", EXTEND_LIMIT), tuple(shorter.items()))
             if grid_text is not None else None)
    seeds = budget.get("seeds", p.profile.seeds)
    preset = claim_preset(p, claim)
    key = (task, estimator, grid_text, opts, tuned, tuple(seeds), preset)
    if key in p.unique:
        return p.unique[key]
    if grid_text is None:
        sp = SidePlan(task, estimator, opts,
                      [resolve(task, estimator, preset=preset, seed=s, options=opts) for s in seeds], final_seeds=seeds)
    else:
        metric, extend, _ = tuned  # type: ignore[misc]
        grid_opts = replace(opts, **shorter)
        sp = SidePlan(task, estimator, opts, [],
                      Tuning.resolve(task, estimator, parse_grid(grid_text), p.profile.tune_seeds, preset, grid_opts,
                                     metric=metric, extend=extend),
                      final_seeds=seeds, shorter=bool(shorter))
    p.unique[key] = sp
    return sp


def choose_side(p: Plan, sp: SidePlan) -> None:
    """Choose a tuned side's setting from its grid's records, as ``gradbench tune`` does
    (``Tuning.decide``); nothing while some grid run has no record yet. A choice made at a shorter budget is
    then read against its budget check (``sp.holds``); one the check does not uphold is re-tuned at the
    final budget (``retune``), and that tuning is chosen as its records allow."""
    if sp.tuning is None:
        return
    if not sp.tuning.decided:
        sp.tuning.decide(sp.final_seeds, sp.options)
    if not sp.shorter or sp.tuning.choice is None:
        return
    if sp.retune is None:
        check = budget_check(sp)
        sp.holds = None if check is None else check.holds
        if sp.holds is False:
            sp.retune = retune(sp)
    if sp.retune is not None and not sp.retune.decided:
        sp.retune.decide(sp.final_seeds, sp.options)


def retune(sp: SidePlan) -> Tuning:
    """The side tuned again at its final budget, because its budget check showed the choice made at the
    shorter budget is not the best there: over the values of the choice and its neighbours (each key's, so
    the budget check's runs are this grid's runs at the first tuning seed), on every tuning seed, by the same
    rule, extending past an edge choice as any grid does."""
    t = sp.tuning
    assert t is not None and t.choice is not None, "a decided tuning"
    near = [t.points[i] for i in t.neighbours()]
    # a key the grid does not extend keeps every value tried, so an edge there is an edge of the whole grid
    grid = {key: (values if t.extendable(key) is None else [v for v in values if any(p[key] == v for p in near)])
            for key, values in t.tried.items()}
    # its own extension limit: the best rate at the final budget may lie further out than any tried before
    return Tuning.resolve(sp.task, sp.estimator, grid, t.seeds, t.specs[0][0].preset, sp.options, metric=t.metric,
                          extend=t.extend)


def write_side_selection(p: Plan, sp: SidePlan, argv: list[str] | None) -> None:
    """The tuned side's selection record (the leaderboard's [tuned] row); an existing record of the same
    tuning with the same choice and validation figures is left as it is. A side re-tuned at the final budget
    writes two: the first tuning's, which names the re-tuning (``retuned``: its choice is not reported), and
    the re-tuning's (``retune_of``), which is the side's."""
    if sp.tuning is None or not sp.tuning.decided:
        return
    runs = sp.options.runs
    first = sp.tuning.selection(sp.final_seeds, argv, runs)
    if "check" in first:
        first["check"]["holds"] = sp.holds
    again = (sp.retune.selection(sp.final_seeds, argv, runs)
             if sp.retune is not None and sp.retune.decided else None)
    if again is not None:
        first["retuned"] = again["id"]
        again["retune_of"] = first["id"]
    sp.selection = write_selection(first, runs, keep_same=True)
    if again is not None:
        sp.selection = write_selection(again, runs, keep_same=True)


def retune_text(sp: SidePlan) -> str:
    """A sentence on a side re-tuned at the final budget ("" when it was not), for reports."""
    t = sp.retune
    if t is None:
        return ""
    head = (f"re-tuned at {budget_words(t.specs[0][0].budget)} over {grid_text(t.tried)} on tuning seeds "
            f"{', '.join(map(str, t.seeds))} (the budget check's runs are its first seed's)")
    if not t.decided:
        return f"{head}: runs missing, so the side's final runs are not known yet."
    if t.choice is None:
        return f"{head}: no setting finished on every tuning seed, so the side has nothing to report."
    first = sp.tuning.chosen if sp.tuning is not None else None
    same = " (the same setting)" if first == t.chosen else f" (not {values_text(first or {})})"
    return f"{head}: chose {values_text(t.chosen or {})}{same}, reported at its final runs."


@dataclass(frozen=True)
class BudgetCheck:
    """A choice made at a shorter tuning budget, re-checked at the final budget on one tuning seed."""

    seed: int
    tune_budget: dict[str, Any]
    budget: dict[str, Any]
    metric: str
    points: list[tuple[dict[str, str], float | None]]  # the chosen point first, then its neighbours: validation value
    holds: bool | None  # the chosen point is best there (or tied with it); None: runs missing or failed

    def text(self) -> str:
        cells = ", ".join(f"{values_text(v)}: {'—' if x is None else f'{x:.4g}'}{' (chosen)' if i == 0 else ''}"
                          for i, (v, x) in enumerate(self.points))
        why = "it fails there" if self.points and self.points[0][1] is None else "another setting is better there"
        verdict = ("not known yet (runs missing)" if self.holds is None else "the choice holds" if self.holds
                   else f"the choice does NOT hold: {why}, so the side is re-tuned at the final budget")
        return (f"tuned at {budget_words(self.tune_budget)}, reported at {budget_words(self.budget)}; re-checked "
                f"at {budget_words(self.budget)} on tuning seed {self.seed}, validation {self.metric}: {cells}: "
                f"{verdict}.")


def budget_check(sp: SidePlan) -> BudgetCheck | None:
    """The side's check of a choice made at a shorter budget (None: tuned at the final budget, or undecided)."""
    check = sp.check
    if not check or sp.tuning is None or sp.tuning.choice is None:
        return None
    t = sp.tuning
    rows, points, unrun = [], [], False
    for i, spec in check:
        r = spec.find_record(sp.options.runs)
        unrun = unrun or r is None
        value = r.metric(t.metric) if r is not None and r.ok else None
        rows.append({"values": t.points[i], "n_ok": int(value is not None), "n": 1, "n_valued": int(value is not None),
                     "mean": value})
        points.append((t.points[i], value))
    higher = t.task_cls.metrics[t.metric]
    # unknown until every neighbour has run; a failed neighbour cannot beat the choice, and a choice that fails
    # (or diverges) at the final budget does not hold there
    holds = None if unrun else rows[0]["mean"] is not None and 0 in tied(rows, higher, t.resolution)
    return BudgetCheck(t.check_seed, t.specs[0][0].budget, check[0][1].budget, t.metric, points, holds)


# -------------------------------------------------------------------------------------------- run


@dataclass
class Missing:
    """What a study still needs: runs with no finished record, and finals not yet known (grids unfinished)."""

    runs: list[RunSpec]
    unchosen: list[tuple[SidePlan, int]]  # tuned sides whose grid is incomplete, and their final-run count

    @property
    def count(self) -> int:
        return len(self.runs) + sum(n for _, n in self.unchosen)


def _dedupe(specs: list[RunSpec]) -> list[RunSpec]:
    seen: dict[str, RunSpec] = {}
    for s in specs:
        seen.setdefault(s.run_id, s)
    return list(seen.values())


def missing(p: Plan, shard: tuple[int, int] = (0, 1)) -> Missing:
    """The runs a study still needs (in ``shard``), choosing tuned sides as far as their records allow (a
    grid whose choice is at an edge extends itself, a choice made at a shorter budget waits on its budget
    check and may be re-tuned: their new runs are missing)."""
    for sp in p.unique.values():
        choose_side(p, sp)
    pending, _, _ = todo(Grid(_dedupe([s for sp in p.unique.values() for s in sp.known_runs])), p.runs, shard)
    unchosen = [(sp, len(sp.final_seeds)) for sp in p.unique.values() if sp.pending]
    return Missing(pending, unchosen)


def replan(p: Plan) -> None:
    """Forget every side's decisions and resolve them again from the records as they are now (a tuning's
    extensions, choice, check and re-tuning), so that each decision is made on the records of its time."""
    fresh = plan(p.study, p.profile.name, p.runs, p.device)
    p.options, p.sides, p.unique, p.higher_is_better = fresh.options, fresh.sides, fresh.unique, fresh.higher_is_better


def run_study(p: Plan, sweep: Callable[..., Any], argv: list[str] | None = None) -> tuple[int, Missing]:
    """Run what is missing, deciding as the records come in: first every tuning grid and untuned side at once,
    then whatever the records so far ask for (a grid's extension, the budget checks, a re-tuning, the final
    runs), all sides' together, until nothing new is asked; write the selection records. Every decision is
    made afresh from the records, and only from complete ones (a side waits while any run it decides on has no
    record). ``sweep(grid, more=...)`` (it must accept ``more``) runs a grid and asks ``more``, given the run
    ids in flight, for the next runs whenever a worker would sit idle, so no side waits on another's slowest
    run (``run_sweep`` does); a sweep that never asks makes the same decisions in rounds, one call each. A
    failed run a decision would rest on is retried first, and nothing new is decided while it runs, so no
    decision rests on a failure this invocation has not retried. Finals of a choice made at a shorter budget
    wait on its budget check, so a choice that does not hold costs no final runs. Returns (failed or diverged
    runs, what is still missing)."""
    failed, tried, retried = 0, set(), set()

    def next_runs(in_flight: set[str]) -> list[RunSpec]:
        if in_flight & retried:  # a decision now could read the failure being retried
            return []
        replan(p)
        for sp in p.unique.values():
            choose_side(p, sp)
        asked = _dedupe([s for sp in p.unique.values() for s in sp.known_runs])
        pending = [s for s in todo(Grid(asked), p.runs, (0, 1))[0] if s.run_id not in tried]
        retry = [s for s in pending if s.find_record(p.runs) is not None]  # failed: decisions read those
        batch = retry or pending
        tried.update(s.run_id for s in batch)
        retried.update(s.run_id for s in retry)
        return batch

    while batch := next_runs(set()):  # empty: everything asked has a record, or was tried (it left none)
        failed += count_failed(sweep(Grid(batch), more=next_runs))
    for sp in p.unique.values():
        write_side_selection(p, sp, argv)
    return failed, missing(p)


def report_study(p: Plan, argv: list[str] | None = None) -> tuple[int, Missing]:
    """Run nothing: choose the tuned sides whose grids are complete and write their selection records (both
    determined by the grids' records, as ``run_study`` would), for a report on the records there are.
    Returns (0 failed, what is still missing)."""
    todo = missing(p)
    for sp in p.unique.values():
        write_side_selection(p, sp, argv)
    return 0, todo


# ------------------------------------------------------------------------------------------ judge


def judge(p: Plan, claim: Claim) -> Verdict:
    """One claim's figures and verdict (``Verdict.outcome`` None while runs are missing): each side's final
    records read through the results layer, judged by the rule of what the paper states."""
    sides = p.sides[claim.id]
    metric = claim_metric(claim.metric, p.higher_is_better[claim.id])
    checkpoint = claim.checkpoint if claim.on_gradient else None
    found = [Side.of(label, sp.estimator, sp.records(), metric, checkpoint,
                     selection=None if sp.selection is None else Selection(sp.selection), chosen=sp.chosen)
             for label, sp in zip(("A", "B"), sides, strict=False)]
    # the final runs' budget (a tuned side's grid may have run at a shorter one)
    preset = claim_preset(p, claim)
    budget = resolve(sides[0].task, sides[0].estimator, preset=preset, seed=0,
                     options=sides[0].options).budget
    return Verdict(claim.id, claim.statement, p.higher_is_better[claim.id], found, budget,
                   preset, no_choice=[sp.estimator for sp in sides if sp.reported and sp.reported.no_choice])


def judge_all(p: Plan) -> dict[str, Verdict]:
    """Every claim of the study judged together (Holm's correction runs over all their tests), by claim id;
    a claim with runs missing keeps ``outcome`` None. Each claim's learning curve of its metric feeds the
    settledness check (a gradient statistic, measured at one checkpoint, has none)."""
    verdicts = {c.id: judge(p, c) for c in p.study.claims}
    curves = {c.id: gain_curve(verdicts[c.id], p.runs, claim_metric(c.metric).trace[0])
              for c in p.study.claims if not c.on_gradient and verdicts[c.id].complete}
    conclude_all(list(verdicts.values()), curves)
    return verdicts
